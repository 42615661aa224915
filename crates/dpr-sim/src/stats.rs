//! What a run measures, and the log-binned histogram behind percentiles.

/// Response times from 1 us to 10^5 s in bins 1 % wide.
#[derive(Clone, Debug, PartialEq)]
pub struct Histogram {
    bins: Vec<u64>,
    count: u64,
    sum: f64,
}

const HIST_MIN: f64 = 1e-6;
const HIST_GROWTH: f64 = 1.01;
const HIST_BINS: usize = 2600;

impl Default for Histogram {
    fn default() -> Self {
        Self {
            bins: vec![0; HIST_BINS],
            count: 0,
            sum: 0.0,
        }
    }
}

impl Histogram {
    /// Records one value (seconds).
    pub fn record(&mut self, x: f64) {
        let i = if x <= HIST_MIN {
            0
        } else {
            ((x / HIST_MIN).ln() / HIST_GROWTH.ln()) as usize + 1
        };
        self.bins[i.min(HIST_BINS - 1)] += 1;
        self.count += 1;
        self.sum += x;
    }

    /// Number of values.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Exact mean of the values (0 if none).
    pub fn mean(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum / self.count as f64
        }
    }

    /// The `q` quantile (0..=1), to within the 1 % bin width.
    pub fn quantile(&self, q: f64) -> f64 {
        if self.count == 0 {
            return 0.0;
        }
        let want = (q * self.count as f64).ceil().max(1.0) as u64;
        let mut acc = 0;
        for (i, &b) in self.bins.iter().enumerate() {
            acc += b;
            if acc >= want {
                return Self::bin_mid(i);
            }
        }
        Self::bin_mid(HIST_BINS - 1)
    }

    fn bin_mid(i: usize) -> f64 {
        if i == 0 {
            HIST_MIN
        } else {
            HIST_MIN * HIST_GROWTH.powf(i as f64 - 0.5)
        }
    }

    /// (value, fraction of values at or below it) at every non-empty bin.
    pub fn cdf(&self) -> Vec<(f64, f64)> {
        let mut acc = 0;
        let mut out = Vec::new();
        for (i, &b) in self.bins.iter().enumerate() {
            if b > 0 {
                acc += b;
                out.push((
                    HIST_MIN * HIST_GROWTH.powi(i as i32),
                    acc as f64 / self.count as f64,
                ));
            }
        }
        out
    }
}

/// One bucket of a run's time series.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SeriesPoint {
    /// Bucket start, seconds.
    pub t: f64,
    /// Mean response time of connections that arrived in the bucket and
    /// completed, seconds.
    pub mean_response: f64,
    /// Connections that arrived in the bucket.
    pub arrivals: u64,
    /// Connections that arrived in the bucket and were lost.
    pub errors: u64,
    /// Mean over the bucket's samples of max / mean normalised load.
    pub imbalance: f64,
}

/// Everything one run measured.
#[derive(Clone, Debug, PartialEq)]
pub struct RunReport {
    /// Policy label.
    pub policy: String,
    /// Report mode label ("-" for policies that read no reports).
    pub mode: String,
    /// Hosts.
    pub hosts: usize,
    /// Measured arrivals (in `warmup .. duration`).
    pub arrivals: u64,
    /// Of those, completed.
    pub completed: u64,
    /// Of those, lost: reached a down host, redirected to one, or on a host
    /// when it failed.
    pub errors: u64,
    /// Of those, still running when the run stopped (overload).
    pub unfinished: u64,
    /// Response times of the completed ones.
    pub response: Histogram,
    /// Time average of max / mean normalised open connections over hosts
    /// that are up (samples where the mean is 0 are skipped).
    pub imbalance: f64,
    /// Fraction of measured arrivals redirected to a peer.
    pub redirect_fraction: f64,
    /// Load-report messages sent per host per second.
    pub msgs_per_host_s: f64,
    /// Load-report bytes sent per host per second.
    pub bytes_per_host_s: f64,
    /// Mean age of the load figures a host holds about its live peers,
    /// seconds (sampled at up to 8 observer hosts; 0 without reports).
    pub knowledge_age: f64,
    /// Fraction of (observer, live peer) pairs in which the observer did
    /// not see the peer as `Alive` (sampled like `knowledge_age`).
    pub not_alive_fraction: f64,
    /// Time series over the whole run.
    pub series: Vec<SeriesPoint>,
    /// Events processed (a cost figure).
    pub events: u64,
}

impl RunReport {
    /// Mean response time, seconds.
    pub fn mean_response(&self) -> f64 {
        self.response.mean()
    }

    /// 99th percentile response time, seconds.
    pub fn p99_response(&self) -> f64 {
        self.response.quantile(0.99)
    }

    /// Lost connections as a fraction of measured arrivals.
    pub fn error_fraction(&self) -> f64 {
        if self.arrivals == 0 {
            0.0
        } else {
            self.errors as f64 / self.arrivals as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_within_a_bin() {
        let mut h = Histogram::default();
        for i in 1..=10_000 {
            h.record(f64::from(i) * 1e-4);
        }
        assert!((h.quantile(0.5) / 0.5 - 1.0).abs() < 0.011);
        assert!((h.quantile(0.99) / 0.99 - 1.0).abs() < 0.011);
        assert!((h.mean() - 0.50005).abs() < 1e-9);
        assert_eq!(h.count(), 10_000);
        let cdf = h.cdf();
        assert!((cdf.last().map_or(0.0, |c| c.1) - 1.0).abs() < 1e-12);
    }
}
