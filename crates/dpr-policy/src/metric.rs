//! Load metrics: what "load" means when strategies compare hosts.
//!
//! The figures and the metric live in `dpr-table` (the load table keeps
//! every host's normalised load current in its indices, so a decision over
//! 1,000 peers does not recompute 1,000 loads); this module re-exports them
//! as the policy-facing vocabulary.
//!
//! * [`LoadMetric::OpenConnections`]: open connections (the seed found this
//!   best; the default).
//! * [`LoadMetric::CpuUtilisation`], [`LoadMetric::RedirectedConnections`],
//!   [`LoadMetric::ActiveSockets`].
//! * [`LoadMetric::Weighted`]: a configured weighted sum of all four
//!   ([`MetricWeights`], each finite and non-negative).
//!
//! Every load is normalised by capacity: `raw / (cpu_w * cpu + mem_w * memory)`
//! with [`CapacityWeights`], so a host twice the reference size at 200
//! connections is as loaded as a reference host at 100. Optimistic
//! accounting adds each pending redirect as one connection (one socket, or
//! `cpu_per_connection` of CPU) until the peer's next report.

pub use dpr_table::{
    Capacity, CapacityWeights, LoadFigures, LoadMetric, LoadTableConfig, MetricWeights,
};

/// The normalised load `config` assigns to `figures` on a host of
/// `capacity`, with `pending` optimistic redirects (pure).
pub fn normalised_load(
    config: &LoadTableConfig,
    figures: &LoadFigures,
    pending: u32,
    capacity: &Capacity,
) -> f64 {
    config.normalised_load(figures, pending, capacity)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_metric_and_normalisation() {
        let f = LoadFigures {
            open_connections: 100,
            cpu_utilisation: 0.5,
            redirected_connections: 7,
            active_sockets: 40,
        };
        let cap = Capacity {
            cpu: 2.0,
            memory: 4.0,
        };
        let base = LoadTableConfig::default();
        let with = |metric| LoadTableConfig { metric, ..base };
        assert_eq!(
            normalised_load(&with(LoadMetric::OpenConnections), &f, 0, &cap),
            50.0
        );
        assert_eq!(
            normalised_load(&with(LoadMetric::OpenConnections), &f, 10, &cap),
            55.0
        );
        assert_eq!(
            normalised_load(&with(LoadMetric::CpuUtilisation), &f, 0, &cap),
            0.25
        );
        assert_eq!(
            normalised_load(&with(LoadMetric::RedirectedConnections), &f, 3, &cap),
            3.5
        );
        assert_eq!(
            normalised_load(&with(LoadMetric::ActiveSockets), &f, 0, &cap),
            20.0
        );
        let w = MetricWeights {
            open_connections: 1.0,
            cpu_utilisation: 100.0,
            redirected_connections: 0.0,
            active_sockets: 0.5,
        };
        assert_eq!(
            normalised_load(&with(LoadMetric::Weighted(w)), &f, 0, &cap),
            85.0
        );
        let mem = LoadTableConfig {
            capacity_weights: CapacityWeights {
                cpu: 0.5,
                memory: 0.5,
            },
            ..base
        };
        assert_eq!(normalised_load(&mem, &f, 0, &cap), 100.0 / 3.0);
    }
}
