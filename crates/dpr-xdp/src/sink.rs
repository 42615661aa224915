//! The benchmark's sink: an XDP program that counts and drops the
//! forwarding benchmark's packets at the receiving host's interface, and
//! passes everything else.
//!
//! The forwarding benchmark (`dpr-lab bench`, issue 17) measures how many
//! packets the redirecting host forwards. On veth, one packet's whole path
//! (the generator's transmit, the router, the bridge, the receiver) runs as
//! softirq on the sending CPU, so the receiver's cost is part of every
//! figure. Dropping in the receiver's IP layer (`ip rule … blackhole`) still
//! builds an skb and walks the routing rules per packet; this program ends
//! the packet in the receiver's driver, before any skb exists, for the
//! price of a few loads and one per-CPU counter.
//!
//! | frame (Ethernet without VLAN tag, IPv4) | verdict | counter |
//! |---|---|---|
//! | TCP or UDP, not a later fragment, destination in `plain_prefix`, destination port `port` | drop | [`SinkCounter::Plain`] |
//! | IP-in-IP to `tunnel_dst` whose inner packet is TCP or UDP to `inner_dst`:`port` | drop | [`SinkCounter::Ipip`] |
//! | GRE (version 0, no routing, protocol IPv4, with or without checksum, key and sequence words) to `tunnel_dst`, same inner packet | drop | [`SinkCounter::Gre`] |
//! | anything else: ARP, the daemons' UDP reports, other addresses or ports, options it cannot follow, truncated headers | pass | [`SinkCounter::Passed`] |
//!
//! Registers: r6 = context, r7 = packet start, r8 = packet end, r9 = the
//! IPv4 header being looked at, r5 = the counter of the verdict. Every
//! packet read is preceded by a bounds check against r8. Addresses are
//! compared as zero-extended 32-bit constants (an `imm` operand would be
//! sign-extended).

use crate::asm::{Alu, Asm, AsmError, Cond, Insn, Label, Reg, Size};
use crate::bpf::{BPF_MAP_TYPE_PERCPU_ARRAY, BpfSys, MapSpec, RealBpf};
use crate::loader::{XdpLink, XdpMode, attach_xdp, load_xdp_with, syscall};
use crate::program::{XDP_DROP, XDP_PASS};
use crate::{Error, sys};
use Reg::*;
use std::net::Ipv4Addr;
use std::os::fd::AsFd;

const HELPER_MAP_LOOKUP_ELEM: i32 = 1;
const ETH_P_IPV4_WIRE: i32 = u16::from_ne_bytes(0x0800u16.to_be_bytes()) as i32;
/// The fragment offset (13 bits) as a native-order load of the wire field sees it.
const FRAG_OFFSET_WIRE: i32 = u16::from_ne_bytes(0x1fffu16.to_be_bytes()) as i32;
const PROTO_TCP: i32 = 6;
const PROTO_UDP: i32 = 17;
const PROTO_IPIP: i32 = 4;
const PROTO_GRE: i32 = 47;
const COUNTER_KEY: i16 = -4;

/// The sink's counters, indices into its per-CPU array.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkCounter {
    /// Plain TCP/UDP to the prefix, dropped.
    Plain = 0,
    /// IP-in-IP to the tunnel address, dropped.
    Ipip = 1,
    /// GRE to the tunnel address, dropped.
    Gre = 2,
    /// Everything else, passed to the kernel.
    Passed = 3,
}

impl SinkCounter {
    /// Number of counters.
    pub const COUNT: u32 = 4;
}

/// What the sink drops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SinkConfig {
    /// Plain packets: destination network …
    pub plain_prefix: Ipv4Addr,
    /// … and its prefix length (0..=32).
    pub plain_prefix_len: u8,
    /// Tunnelled packets: the outer destination (this host's tunnel address).
    pub tunnel_dst: Ipv4Addr,
    /// Tunnelled packets: the inner destination (the redirecting host's
    /// service address).
    pub inner_dst: Ipv4Addr,
    /// The destination port, plain and inner.
    pub port: u16,
}

/// Counter values summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SinkCounts {
    /// [`SinkCounter::Plain`].
    pub plain: u64,
    /// [`SinkCounter::Ipip`].
    pub ipip: u64,
    /// [`SinkCounter::Gre`].
    pub gre: u64,
    /// [`SinkCounter::Passed`].
    pub passed: u64,
}

impl SinkCounts {
    /// Every packet dropped (the benchmark's count).
    pub fn dropped(&self) -> u64 {
        self.plain + self.ipip + self.gre
    }
}

/// The 32-bit word a native-order load of `a`'s wire bytes gives.
fn wire32(a: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(a.octets())
}

/// `dst = v`, zero-extended (`mov` sign-extends its immediate).
fn mov_u32(a: &mut Asm, dst: Reg, v: u32) {
    a.mov_imm(dst, v as i32);
    a.alu_imm(Alu::Lsh, dst, 32).alu_imm(Alu::Rsh, dst, 32);
}

/// The IPv4 header at r9: version 4 and a whole header of IHL words within
/// the frame, else `pass`. Leaves r2 = header length, r4 = protocol.
fn ipv4_header(a: &mut Asm, pass: Label) {
    a.mov_reg(R3, R9).alu_imm(Alu::Add, R3, 20);
    a.jmp_reg(Cond::Gt, R3, R8, pass);
    a.load(Size::B, R2, R9, 0);
    a.mov_reg(R3, R2).alu_imm(Alu::Rsh, R3, 4);
    a.jmp_imm(Cond::Ne, R3, 4, pass);
    a.alu_imm(Alu::And, R2, 0x0f);
    a.jmp_imm(Cond::Lt, R2, 5, pass);
    a.alu_imm(Alu::Lsh, R2, 2);
    a.mov_reg(R3, R9).alu_reg(Alu::Add, R3, R2);
    a.jmp_reg(Cond::Gt, R3, R8, pass);
    a.load(Size::B, R4, R9, 9);
}

/// The IPv4 destination at r9 equals `addr` (else `pass`); clobbers r0, r1.
fn dst_is(a: &mut Asm, addr: Ipv4Addr, pass: Label) {
    a.load(Size::W, R0, R9, 16);
    mov_u32(a, R1, wire32(addr));
    a.jmp_reg(Cond::Ne, R0, R1, pass);
}

/// TCP or UDP (protocol in r4, header length in r2) to `port`, not a later
/// fragment: else `pass`. Clobbers r0, r3.
fn l4_to_port(a: &mut Asm, port: u16, pass: Label) {
    let l4 = a.label();
    a.jmp_imm(Cond::Eq, R4, PROTO_TCP, l4);
    a.jmp_imm(Cond::Ne, R4, PROTO_UDP, pass);
    a.bind(l4);
    a.load(Size::H, R0, R9, 6);
    a.jmp_imm(Cond::Set, R0, FRAG_OFFSET_WIRE, pass);
    a.mov_reg(R3, R9).alu_reg(Alu::Add, R3, R2);
    a.mov_reg(R0, R3).alu_imm(Alu::Add, R0, 4);
    a.jmp_reg(Cond::Gt, R0, R8, pass);
    a.load(Size::H, R0, R3, 2);
    a.jmp_imm(
        Cond::Ne,
        R0,
        i32::from(u16::from_ne_bytes(port.to_be_bytes())),
        pass,
    );
}

/// Builds the sink program over its per-CPU `counters` map.
pub fn sink_program(cfg: &SinkConfig, counters: i32) -> Result<Vec<Insn>, AsmError> {
    let mut a = Asm::new();
    let pass = a.label();
    let drop = a.label();
    let ipip = a.label();
    let gre = a.label();
    let inner = a.label();

    a.mov_reg(R6, R1);
    a.load(Size::W, R7, R6, 0); // xdp_md.data
    a.load(Size::W, R8, R6, 4); // xdp_md.data_end
    a.mov_reg(R9, R7).alu_imm(Alu::Add, R9, 14);
    a.jmp_reg(Cond::Gt, R9, R8, pass);
    a.load(Size::H, R2, R7, 12);
    a.jmp_imm(Cond::Ne, R2, ETH_P_IPV4_WIRE, pass);
    ipv4_header(&mut a, pass);
    a.jmp_imm(Cond::Eq, R4, PROTO_IPIP, ipip);
    a.jmp_imm(Cond::Eq, R4, PROTO_GRE, gre);

    // Plain: destination in the prefix.
    let len = u32::from(cfg.plain_prefix_len.min(32));
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    a.load(Size::W, R0, R9, 16);
    a.alu_imm(Alu::Lsh, R0, 32).alu_imm(Alu::Rsh, R0, 32);
    mov_u32(&mut a, R1, u32::from_ne_bytes(mask.to_be_bytes()));
    a.alu_reg(Alu::And, R0, R1);
    mov_u32(
        &mut a,
        R1,
        wire32(cfg.plain_prefix) & u32::from_ne_bytes(mask.to_be_bytes()),
    );
    a.jmp_reg(Cond::Ne, R0, R1, pass);
    l4_to_port(&mut a, cfg.port, pass);
    a.mov_imm(R5, SinkCounter::Plain as i32).ja(drop);

    // IP-in-IP: the inner header follows the outer one.
    a.bind(ipip);
    dst_is(&mut a, cfg.tunnel_dst, pass);
    a.alu_reg(Alu::Add, R9, R2);
    a.mov_imm(R5, SinkCounter::Ipip as i32).ja(inner);

    // GRE: 4 bytes, then a word each for C, K and S; no routing, version 0,
    // protocol IPv4.
    a.bind(gre);
    dst_is(&mut a, cfg.tunnel_dst, pass);
    a.alu_reg(Alu::Add, R9, R2);
    a.mov_reg(R3, R9).alu_imm(Alu::Add, R3, 4);
    a.jmp_reg(Cond::Gt, R3, R8, pass);
    a.load(Size::H, R0, R9, 2);
    a.jmp_imm(Cond::Ne, R0, ETH_P_IPV4_WIRE, pass);
    a.load(Size::B, R0, R9, 1);
    a.jmp_imm(Cond::Set, R0, 0x07, pass); // version
    a.load(Size::B, R0, R9, 0);
    a.jmp_imm(Cond::Set, R0, 0x40, pass); // routing present
    a.alu_imm(Alu::Add, R9, 4);
    for bit in [0x80, 0x20, 0x10] {
        let absent = a.label();
        a.mov_reg(R1, R0).alu_imm(Alu::And, R1, bit);
        a.jmp_imm(Cond::Eq, R1, 0, absent);
        a.alu_imm(Alu::Add, R9, 4);
        a.bind(absent);
    }
    a.mov_imm(R5, SinkCounter::Gre as i32);

    // The inner packet at r9: TCP or UDP to inner_dst:port.
    a.bind(inner);
    ipv4_header(&mut a, pass);
    dst_is(&mut a, cfg.inner_dst, pass);
    l4_to_port(&mut a, cfg.port, pass);

    a.bind(drop);
    count(&mut a, counters);
    a.mov_imm(R0, XDP_DROP as i32);
    a.exit();

    a.bind(pass);
    a.mov_imm(R5, SinkCounter::Passed as i32);
    count(&mut a, counters);
    a.mov_imm(R0, XDP_PASS as i32);
    a.exit();
    a.finish()
}

/// Adds one to the per-CPU counter whose index is in r5. Clobbers r0–r5.
fn count(a: &mut Asm, counters: i32) {
    a.store(Size::W, R10, COUNTER_KEY, R5);
    a.load_map_fd(R1, counters);
    a.mov_reg(R2, R10)
        .alu_imm(Alu::Add, R2, i32::from(COUNTER_KEY));
    a.call(HELPER_MAP_LOOKUP_ELEM);
    let skip = a.label();
    a.jmp_imm(Cond::Eq, R0, 0, skip);
    // Per-CPU slot: no other writer.
    a.load(Size::DW, R1, R0, 0);
    a.alu_imm(Alu::Add, R1, 1);
    a.store(Size::DW, R0, 0, R1);
    a.bind(skip);
}

/// The loaded sink and its counters, over the `bpf(2)` of `B`.
#[derive(Debug)]
pub struct SinkProgram<B: BpfSys = RealBpf> {
    bpf: B,
    prog: B::Prog,
    counters: B::Map,
    ncpus: usize,
}

impl SinkProgram {
    /// Creates the counters and loads the program (root).
    pub fn load(cfg: &SinkConfig) -> Result<Self, Error> {
        Self::load_with(RealBpf, cfg)
    }

    /// Runs the program once on `frame` (`BPF_PROG_TEST_RUN`); its verdict.
    pub fn test_run(&self, frame: &[u8]) -> Result<u32, Error> {
        let out = sys::prog_test_run(self.prog.as_fd(), frame, 1)
            .map_err(syscall("BPF_PROG_TEST_RUN"))?;
        Ok(out.retval)
    }
}

impl<B: BpfSys> SinkProgram<B> {
    /// [`SinkProgram::load`] over `bpf`. A prefix length above 32 is an
    /// error naming it.
    pub fn load_with(bpf: B, cfg: &SinkConfig) -> Result<Self, Error> {
        if cfg.plain_prefix_len > 32 {
            return Err(Error::Config(format!(
                "sink: plain_prefix_len {} is above 32",
                cfg.plain_prefix_len
            )));
        }
        let ncpus = bpf
            .possible_cpus()
            .map_err(syscall("read /sys/devices/system/cpu/possible"))?;
        let counters = bpf
            .map_create(&MapSpec {
                map_type: BPF_MAP_TYPE_PERCPU_ARRAY,
                key_size: 4,
                value_size: 8,
                max_entries: SinkCounter::COUNT,
                lookup_size: 8 * ncpus,
                name: "dpr_sink_cnt",
            })
            .map_err(syscall("BPF_MAP_CREATE"))?;
        let insns = sink_program(cfg, bpf.map_fd(&counters))?;
        let prog = load_xdp_with(&bpf, &crate::asm::encode(&insns), "dpr_sink")?;
        Ok(Self {
            bpf,
            prog,
            counters,
            ncpus,
        })
    }

    /// The counters, summed over CPUs.
    pub fn counts(&self) -> Result<SinkCounts, Error> {
        let mut v = [0u64; SinkCounter::COUNT as usize];
        let mut buf = vec![0u8; 8 * self.ncpus];
        for (i, slot) in v.iter_mut().enumerate() {
            let key = (i as u32).to_ne_bytes();
            if self
                .bpf
                .map_lookup(&self.counters, &key, &mut buf)
                .map_err(syscall("BPF_MAP_LOOKUP_ELEM"))?
            {
                *slot = buf
                    .chunks_exact(8)
                    .map(|b| u64::from_ne_bytes(b.try_into().unwrap_or([0; 8])))
                    .sum();
            }
        }
        Ok(SinkCounts {
            plain: v[0],
            ipip: v[1],
            gre: v[2],
            passed: v[3],
        })
    }

    /// Attaches the sink to `ifindex` (of the calling thread's namespace);
    /// detached when the link is dropped.
    pub fn attach(&self, ifindex: u32, mode: XdpMode) -> Result<XdpLink<B>, Error> {
        attach_xdp(&self.bpf, &self.prog, ifindex, mode)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FakeBpf;

    fn cfg() -> SinkConfig {
        SinkConfig {
            plain_prefix: Ipv4Addr::new(198, 19, 1, 0),
            plain_prefix_len: 24,
            tunnel_dst: Ipv4Addr::new(198, 19, 0, 2),
            inner_dst: Ipv4Addr::new(198, 18, 0, 1),
            port: 80,
        }
    }

    #[test]
    fn counts_sum_the_cpus_slots() {
        let fake = FakeBpf::new(); // 2 CPUs
        let sink = SinkProgram::load_with(fake.clone(), &cfg()).unwrap();
        assert_eq!(sink.counts().unwrap(), SinkCounts::default());
        let slot = |a: u64, b: u64| [a.to_ne_bytes(), b.to_ne_bytes()].concat();
        fake.with(|s| {
            let m = s.maps.get_mut("dpr_sink_cnt").unwrap();
            m.insert(0u32.to_ne_bytes().to_vec(), slot(3, 4));
            m.insert(2u32.to_ne_bytes().to_vec(), slot(10, 0));
            m.insert(3u32.to_ne_bytes().to_vec(), slot(1, 1));
        });
        let c = sink.counts().unwrap();
        assert_eq!(
            c,
            SinkCounts {
                plain: 7,
                ipip: 0,
                gre: 10,
                passed: 2
            }
        );
        assert_eq!(c.dropped(), 17);
    }

    #[test]
    fn a_prefix_above_32_is_refused_by_name() {
        let bad = SinkConfig {
            plain_prefix_len: 33,
            ..cfg()
        };
        let e = SinkProgram::load_with(FakeBpf::new(), &bad).unwrap_err();
        assert!(e.to_string().contains("plain_prefix_len 33"), "{e}");
    }

    /// The constants the program compares with are the wire words a
    /// native-order load sees, zero-extended.
    #[test]
    fn address_words_are_wire_order() {
        let w = wire32(Ipv4Addr::new(198, 19, 1, 200));
        assert_eq!(w.to_ne_bytes(), [198, 19, 1, 200]);
        let mut a = Asm::new();
        mov_u32(&mut a, R1, 0xc813_01c6);
        let insns = a.finish().unwrap();
        assert_eq!(insns.len(), 3, "mov, lsh 32, rsh 32");
    }
}
