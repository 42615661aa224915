//! The compact error every parser in this crate returns.
//!
//! An [`Error`] is four bytes: the [`Layer`] that failed, the byte offset (from
//! the start of the buffer the caller passed) where it failed, and an
//! [`ErrorKind`] that separates "the buffer ended too early" from "the bytes
//! are there but say something invalid". Routers turn it into a drop-reason
//! counter, so every variant is cheap to copy and compare.

use core::fmt;

/// The protocol layer at which parsing stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Layer {
    /// Ethernet II header.
    Ethernet,
    /// An 802.1Q / 802.1ad tag.
    Vlan,
    /// IPv4 header, including options.
    Ipv4,
    /// IPv6 fixed header.
    Ipv6,
    /// An IPv6 extension header.
    Ipv6Ext,
    /// TCP header.
    Tcp,
    /// A TCP option.
    TcpOption,
    /// UDP header.
    Udp,
    /// ICMPv4 header.
    Icmpv4,
    /// ICMPv6 header.
    Icmpv6,
    /// The original packet quoted inside an ICMP error.
    IcmpQuote,
    /// IP-in-IP encapsulation or decapsulation.
    Tunnel,
    /// The GRE header of the keyed tunnel (RFC 2784, RFC 2890).
    Gre,
    /// A cluster control message (load report, recovery).
    Control,
    /// The virtio-net header of a TUN device with offloads, or the
    /// super-packet it describes.
    Virtio,
}

/// Why the bytes at the failing offset are invalid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Malformed {
    /// The IP version nibble does not match the header being parsed.
    Version,
    /// A header length field (IHL, TCP data offset, extension length) is out of range.
    HeaderLength,
    /// A total / payload length field disagrees with the header or the buffer.
    TotalLength,
    /// An option's length byte is 0, 1, or runs past the options area.
    OptionLength,
    /// An option of a known kind has the wrong length (for example MSS not 4).
    OptionValue,
    /// More VLAN tags than the two (802.1ad + 802.1Q) this crate accepts.
    TooManyVlanTags,
    /// An IPv6 extension header chain longer than [`crate::ipv6::MAX_EXT_HEADERS`].
    ExtChainTooLong,
    /// An IPv6 jumbogram (payload length 0 with a hop-by-hop header); unsupported.
    Jumbogram,
    /// The packet is a fragment where a whole packet is required.
    Fragment,
    /// The protocol is not the one the operation needs (for example not IP-in-IP).
    Protocol,
    /// The EtherType is not IPv4 or IPv6 where an IP packet is required.
    EtherType,
    /// The ICMP message is not one of the error types this crate parses.
    NotIcmpError,
    /// A checksum does not verify.
    Checksum,
    /// Encapsulation would exceed the maximum IP packet size.
    Oversize,
    /// Not enough headroom before the inner packet for the outer header.
    Headroom,
    /// The tunnel endpoints are not both IPv4 or both IPv6.
    AddressFamily,
    /// RFC 6040: outer CE on a Not-ECT inner packet, which must be dropped.
    CeOnNotEct,
    /// A control message does not start with the control magic.
    Magic,
    /// A field holds a value this version does not define (a reserved
    /// field that is not zero, an unknown state, a count out of range, a
    /// figure that is not a finite number).
    FieldValue,
}

/// What went wrong: too short, or bad content.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The buffer ended before the header (or the length it declares) did.
    TooShort,
    /// The bytes are present but invalid.
    Malformed(Malformed),
}

/// A parse or rewrite failure: layer, offset and kind, in four bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Error {
    /// The layer that failed.
    pub layer: Layer,
    /// Byte offset of the failure from the start of the caller's buffer.
    pub offset: u16,
    /// Too short or malformed.
    pub kind: ErrorKind,
}

impl Error {
    /// A "buffer too short" error at `offset`.
    pub const fn too_short(layer: Layer, offset: usize) -> Self {
        Self {
            layer,
            offset: clamp_offset(offset),
            kind: ErrorKind::TooShort,
        }
    }

    /// A "bad content" error at `offset`.
    pub const fn malformed(layer: Layer, offset: usize, why: Malformed) -> Self {
        Self {
            layer,
            offset: clamp_offset(offset),
            kind: ErrorKind::Malformed(why),
        }
    }

    /// The same error with its offset moved by `base` bytes, for a parser
    /// that ran on a sub-slice starting at `base`.
    #[must_use]
    pub const fn shifted(self, base: usize) -> Self {
        Self {
            offset: clamp_offset(self.offset as usize + base),
            ..self
        }
    }

    /// True when the buffer was too short (as opposed to malformed).
    pub const fn is_too_short(&self) -> bool {
        matches!(self.kind, ErrorKind::TooShort)
    }
}

const fn clamp_offset(offset: usize) -> u16 {
    if offset > u16::MAX as usize {
        u16::MAX
    } else {
        offset as u16
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            ErrorKind::TooShort => {
                write!(
                    f,
                    "{:?}: buffer too short at offset {}",
                    self.layer, self.offset
                )
            }
            ErrorKind::Malformed(why) => {
                write!(
                    f,
                    "{:?}: malformed ({why:?}) at offset {}",
                    self.layer, self.offset
                )
            }
        }
    }
}

impl core::error::Error for Error {}

/// Shorthand for results of this crate.
pub type Result<T> = core::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_is_compact() {
        assert!(core::mem::size_of::<Error>() <= 4);
    }

    #[test]
    fn shifted_saturates() {
        let e = Error::too_short(Layer::Tcp, 10).shifted(usize::MAX / 2);
        assert_eq!(e.offset, u16::MAX);
        assert!(e.is_too_short());
    }

    #[test]
    fn display_names_layer_offset_and_kind() {
        let e = Error::malformed(Layer::Ipv4, 14, Malformed::HeaderLength);
        let mut s = std::string::String::new();
        core::fmt::write(&mut s, format_args!("{e}")).unwrap();
        assert_eq!(s, "Ipv4: malformed (HeaderLength) at offset 14");
    }
}
