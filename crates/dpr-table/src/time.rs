//! Caller-supplied monotonic time.
//!
//! Nothing in dpr-table reads a clock: every operation that ages state takes
//! a [`Timestamp`] from its caller. The unit is the nanosecond, the origin is
//! whatever the caller chose (boot, process start); only differences matter.

use core::time::Duration;

/// A point on the caller's monotonic clock, in nanoseconds since an
/// arbitrary origin. `u64` nanoseconds cover 584 years.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// The origin.
    pub const ZERO: Self = Self(0);

    /// A timestamp `ns` nanoseconds after the origin.
    pub const fn from_nanos(ns: u64) -> Self {
        Self(ns)
    }

    /// A timestamp `ms` milliseconds after the origin (saturating).
    pub const fn from_millis(ms: u64) -> Self {
        Self(ms.saturating_mul(1_000_000))
    }

    /// A timestamp `s` seconds after the origin (saturating).
    pub const fn from_secs(s: u64) -> Self {
        Self(s.saturating_mul(1_000_000_000))
    }

    /// Nanoseconds since the origin.
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// `self + d`, saturating at the end of time.
    #[must_use]
    pub const fn saturating_add(self, d: Duration) -> Self {
        Self(self.0.saturating_add(duration_nanos(d)))
    }

    /// Time elapsed from `earlier` to `self`; zero when `earlier` is later
    /// (a caller whose clock stepped back never ages state by it).
    pub const fn saturating_since(self, earlier: Self) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

/// A [`Duration`] as whole nanoseconds, saturating at `u64::MAX`.
pub(crate) const fn duration_nanos(d: Duration) -> u64 {
    let n = d.as_nanos();
    if n > u64::MAX as u128 {
        u64::MAX
    } else {
        n as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_and_saturation() {
        assert_eq!(Timestamp::from_millis(3).as_nanos(), 3_000_000);
        assert_eq!(Timestamp::from_secs(2), Timestamp::from_millis(2000));
        assert_eq!(
            Timestamp(u64::MAX).saturating_add(Duration::from_secs(1)),
            Timestamp(u64::MAX)
        );
        assert_eq!(Timestamp(5).saturating_since(Timestamp(9)), Duration::ZERO);
        assert_eq!(
            Timestamp(9).saturating_since(Timestamp(5)),
            Duration::from_nanos(4)
        );
        assert_eq!(duration_nanos(Duration::MAX), u64::MAX);
    }
}
