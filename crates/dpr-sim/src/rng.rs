//! The simulator's random numbers: [`SplitMix64`] from `dpr-policy`,
//! with the few continuous draws a queueing model needs.
//!
//! Every stochastic part of a run (arrivals, flash crowd, policy choices,
//! gossip targets, report phases) draws from its own stream, each seeded
//! from the run's seed, so that the arrival trace is the same whatever the
//! policy does with it.

use dpr_policy::{RandomSource, SplitMix64};

/// A seeded stream of random numbers.
#[derive(Clone, Debug)]
pub struct Rng(SplitMix64);

impl Rng {
    /// Stream number `stream` of the run seeded with `seed`.
    pub fn new(seed: u64, stream: u64) -> Self {
        // Two rounds of mixing so that nearby (seed, stream) pairs do not
        // start on overlapping stretches of the SplitMix64 sequence.
        let mut m = SplitMix64::new(seed ^ stream.wrapping_mul(0xd1b5_4a32_d192_ed03));
        let s = m.next_u64();
        Self(SplitMix64::new(s ^ stream))
    }

    /// A uniform `u64`.
    #[inline]
    pub fn u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in `[0, 1)`, 53 bits.
    #[inline]
    pub fn f64(&mut self) -> f64 {
        (self.u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `(0, 1]`: safe to take the logarithm of.
    #[inline]
    pub fn open01(&mut self) -> f64 {
        ((self.u64() >> 11) + 1) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Exponential with mean `mean`.
    #[inline]
    pub fn exp(&mut self, mean: f64) -> f64 {
        -mean * self.open01().ln()
    }

    /// Uniform integer in `0..n` (`n` > 0), by a 64x64 -> 128 multiply.
    #[inline]
    pub fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.u64()) * n as u128) >> 64) as usize
    }
}

impl RandomSource for Rng {
    #[inline]
    fn next_u64(&mut self) -> u64 {
        self.u64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_differ_and_repeat() {
        let mut a = Rng::new(1, 0);
        let mut b = Rng::new(1, 1);
        let mut c = Rng::new(1, 0);
        let xa: Vec<u64> = (0..8).map(|_| a.u64()).collect();
        let xb: Vec<u64> = (0..8).map(|_| b.u64()).collect();
        let xc: Vec<u64> = (0..8).map(|_| c.u64()).collect();
        assert_ne!(xa, xb);
        assert_eq!(xa, xc);
    }

    #[test]
    fn exponential_mean() {
        let mut r = Rng::new(7, 3);
        let n = 200_000;
        let m: f64 = (0..n).map(|_| r.exp(2.0)).sum::<f64>() / f64::from(n);
        assert!((m - 2.0).abs() < 0.03, "{m}");
        assert!((0..1000).all(|_| r.below(5) < 5));
    }
}
