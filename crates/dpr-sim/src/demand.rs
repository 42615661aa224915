//! Service demand of a connection: how many seconds of a reference host
//! (capacity 1.0) serving it alone would take.
//!
//! Web response sizes are heavy tailed; a connection's demand is taken
//! proportional to its response size plus a fixed per-connection overhead
//! and then scaled so that the mean demand is exactly the configured mean.
//! That keeps "load" (arrival rate x mean demand / capacity) a parameter
//! of the scenario, whatever the shape.

use crate::rng::Rng;

/// The distribution of service demand.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Demand {
    /// Exponential (the M/M/1 reference).
    Exponential {
        /// Mean demand, seconds.
        mean: f64,
    },
    /// Every connection the same.
    Deterministic {
        /// Demand, seconds.
        mean: f64,
    },
    /// Bounded Pareto over response sizes `lo ..= hi` bytes with shape
    /// `alpha`, scaled to mean `mean` seconds (web file sizes: alpha 1.1
    /// to 1.5, 1 KB to 10 MB).
    BoundedPareto {
        /// Shape (> 0, != 1).
        alpha: f64,
        /// Smallest size, bytes.
        lo: f64,
        /// Largest size, bytes.
        hi: f64,
        /// Mean demand, seconds.
        mean: f64,
    },
    /// The SPECweb99 static file-size mix: four classes of nine files
    /// (0.1-0.9 KB 35 %, 1-9 KB 50 %, 10-90 KB 14 %, 100-900 KB 1 %), the
    /// file within a class uniform (SPECweb99 weights them by a Zipf law;
    /// uniform is a simplification), plus 2 KB of per-connection overhead,
    /// scaled to mean `mean` seconds.
    SpecWeb99 {
        /// Mean demand, seconds.
        mean: f64,
    },
}

/// Per-connection overhead of the SPECweb99 mix, as bytes of transfer.
const SPECWEB_OVERHEAD_BYTES: f64 = 2048.0;
const SPECWEB_CLASS_P: [f64; 4] = [0.35, 0.50, 0.14, 0.01];
const SPECWEB_CLASS_UNIT: [f64; 4] = [102.4, 1024.0, 10240.0, 102_400.0];

impl Demand {
    /// The mean demand, seconds.
    pub fn mean(&self) -> f64 {
        match *self {
            Demand::Exponential { mean }
            | Demand::Deterministic { mean }
            | Demand::BoundedPareto { mean, .. }
            | Demand::SpecWeb99 { mean } => mean,
        }
    }

    /// The squared coefficient of variation (variance / mean^2).
    pub fn scv(&self) -> f64 {
        match *self {
            Demand::Exponential { .. } => 1.0,
            Demand::Deterministic { .. } => 0.0,
            Demand::BoundedPareto { alpha, lo, hi, .. } => {
                let m1 = bounded_pareto_moment(alpha, lo, hi, 1.0);
                let m2 = bounded_pareto_moment(alpha, lo, hi, 2.0);
                m2 / (m1 * m1) - 1.0
            }
            Demand::SpecWeb99 { .. } => {
                let (m1, m2) = specweb_moments();
                m2 / (m1 * m1) - 1.0
            }
        }
    }

    /// One draw, seconds.
    pub fn sample(&self, rng: &mut Rng) -> f64 {
        match *self {
            Demand::Exponential { mean } => rng.exp(mean),
            Demand::Deterministic { mean } => mean,
            Demand::BoundedPareto {
                alpha,
                lo,
                hi,
                mean,
            } => {
                // Inverse transform of the bounded Pareto CDF.
                let u = rng.f64();
                let r = (lo / hi).powf(alpha);
                let x = lo / (1.0 - u * (1.0 - r)).powf(1.0 / alpha);
                x.min(hi) * mean / bounded_pareto_moment(alpha, lo, hi, 1.0)
            }
            Demand::SpecWeb99 { mean } => {
                let u = rng.f64();
                let mut class = 3;
                let mut acc = 0.0;
                for (c, p) in SPECWEB_CLASS_P.iter().enumerate() {
                    acc += p;
                    if u < acc {
                        class = c;
                        break;
                    }
                }
                let file = 1 + rng.below(9);
                let bytes = SPECWEB_CLASS_UNIT[class] * file as f64 + SPECWEB_OVERHEAD_BYTES;
                bytes * mean / specweb_moments().0
            }
        }
    }
}

/// `E[X^k]` of a bounded Pareto(alpha, lo, hi) (`alpha != k`).
pub fn bounded_pareto_moment(alpha: f64, lo: f64, hi: f64, k: f64) -> f64 {
    let c = alpha * lo.powf(alpha) / (1.0 - (lo / hi).powf(alpha));
    if (alpha - k).abs() < 1e-12 {
        c * (hi / lo).ln()
    } else {
        c * (hi.powf(k - alpha) - lo.powf(k - alpha)) / (k - alpha)
    }
}

fn specweb_moments() -> (f64, f64) {
    let mut m1 = 0.0;
    let mut m2 = 0.0;
    for (c, p) in SPECWEB_CLASS_P.iter().enumerate() {
        for file in 1..=9 {
            let b = SPECWEB_CLASS_UNIT[c] * f64::from(file) + SPECWEB_OVERHEAD_BYTES;
            m1 += p / 9.0 * b;
            m2 += p / 9.0 * b * b;
        }
    }
    (m1, m2)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_mean(d: Demand, n: u32) -> f64 {
        let mut r = Rng::new(11, 0);
        (0..n).map(|_| d.sample(&mut r)).sum::<f64>() / f64::from(n)
    }

    #[test]
    fn means_are_the_configured_mean() {
        let bp = Demand::BoundedPareto {
            alpha: 1.5,
            lo: 1e3,
            hi: 1e6,
            mean: 0.01,
        };
        assert!((sample_mean(bp, 400_000) / 0.01 - 1.0).abs() < 0.03);
        let sw = Demand::SpecWeb99 { mean: 0.01 };
        assert!((sample_mean(sw, 200_000) / 0.01 - 1.0).abs() < 0.02);
        assert!(bp.scv() > 5.0, "{}", bp.scv());
        assert!(sw.scv() > 1.0, "{}", sw.scv());
    }

    #[test]
    fn bounded_pareto_stays_in_bounds() {
        let d = Demand::BoundedPareto {
            alpha: 1.1,
            lo: 1.0,
            hi: 100.0,
            mean: 1.0,
        };
        let scale = bounded_pareto_moment(1.1, 1.0, 100.0, 1.0);
        let mut r = Rng::new(3, 0);
        for _ in 0..10_000 {
            let x = d.sample(&mut r) * scale;
            assert!((1.0..=100.0 + 1e-9).contains(&x), "{x}");
        }
    }
}
