//! Per-worker shards: the concurrency design of the connection table.
//!
//! Each data-path worker owns one [`ConnTable`] outright (`&mut`, no lock,
//! no atomic). The NIC (RSS) or the dispatcher steers every packet of a flow
//! to the same worker with [`worker_for`], which uses the top bits of the
//! same [`FlowHasher`] hash whose low bits place the flow in the shard's
//! index. The measured alternative, one shared concurrent map, is compared
//! in `benches/conn_table.rs` and in NOTES.md.

use crate::conn::{ConnTable, ConnTableConfig, check_records, parse_export, write_export_header};
use crate::error::{Result, TableError};
use crate::key::{TableKey, V4Key};
use crate::time::Timestamp;
use dpr_packet::{FlowHasher, FlowKey};

/// The worker (shard) that owns `flow` among `workers` (must be > 0):
/// multiply-shift of the hash's high 32 bits, so it is uniform for any
/// worker count and independent of the index position inside a shard.
#[inline]
pub fn worker_for(hasher: &FlowHasher, flow: &FlowKey, workers: usize) -> usize {
    shard_of_hash(hasher.hash(flow), workers)
}

/// [`worker_for`] on a hash already computed.
#[inline]
pub fn shard_of_hash(hash: u64, workers: usize) -> usize {
    (((hash >> 32) * workers as u64) >> 32) as usize
}

/// A set of per-worker tables sharing one hasher and splitting one total
/// capacity. Build it, then hand each shard to its worker with
/// [`into_shards`](Self::into_shards), or keep it whole for a status dump.
#[derive(Clone, Debug)]
pub struct ShardedConnTable<K: TableKey = V4Key> {
    shards: Vec<ConnTable<K>>,
    hasher: FlowHasher,
}

impl<K: TableKey> ShardedConnTable<K> {
    /// `workers` shards; `config.capacity` is the total, split evenly
    /// (rounded up) so the bound holds per shard.
    pub fn new(config: ConnTableConfig, workers: usize, hasher: FlowHasher) -> Result<Self> {
        if workers == 0 {
            return Err(TableError::InvalidConfig {
                field: "workers",
                reason: "must be at least 1",
            });
        }
        config.validate()?;
        let per = config
            .capacity
            .div_ceil(u32::try_from(workers).unwrap_or(u32::MAX))
            .max(1);
        let workers32 = u32::try_from(workers).unwrap_or(u32::MAX);
        let shard_config = ConnTableConfig {
            capacity: per,
            // 0 stays "a quarter of the shard"; an explicit reserve is split
            // like the capacity.
            half_open_reserve: config.half_open_reserve.div_ceil(workers32).min(per),
            ..config
        };
        let shards = (0..workers)
            .map(|_| ConnTable::new(shard_config, hasher))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { shards, hasher })
    }

    /// The shard index that owns `flow`.
    pub fn shard_for(&self, flow: &FlowKey) -> usize {
        worker_for(&self.hasher, flow, self.shards.len())
    }

    /// The shard that owns `flow`.
    pub fn shard_mut_for(&mut self, flow: &FlowKey) -> &mut ConnTable<K> {
        let i = self.shard_for(flow);
        &mut self.shards[i]
    }

    /// All shards, for a worker pool to split (`iter_mut`, `split_at_mut`).
    pub fn shards_mut(&mut self) -> &mut [ConnTable<K>] {
        &mut self.shards
    }

    /// All shards, read-only (status output).
    pub fn shards(&self) -> &[ConnTable<K>] {
        &self.shards
    }

    /// The shards, one per worker, to move into worker threads.
    pub fn into_shards(self) -> Vec<ConnTable<K>> {
        self.shards
    }

    /// Total live entries.
    pub fn len(&self) -> usize {
        self.shards.iter().map(ConnTable::len).sum()
    }

    /// One export blob (the [`ConnTable::export`] format) of every shard's
    /// entries, shard by shard, each oldest first.
    pub fn export(&self, now: Timestamp, out: &mut Vec<u8>) {
        let total: usize = self.len();
        write_export_header(u32::try_from(total).unwrap_or(u32::MAX), out);
        for s in &self.shards {
            s.export_records(now, out);
        }
    }

    /// Imports a blob from [`export`](Self::export) or
    /// [`ConnTable::export`], steering each entry to the shard that owns
    /// it now, so a restart may change the worker count. Checked completely
    /// before anything is inserted; returns the number imported.
    pub fn import(&mut self, bytes: &[u8], now: Timestamp) -> Result<usize> {
        let records = parse_export(bytes)?;
        check_records::<K>(&records)?;
        for r in &records {
            let i = self.shard_for(&r.flow);
            self.shards[i].import_record(r, now);
        }
        Ok(records.len())
    }

    /// True when no shard holds an entry.
    pub fn is_empty(&self) -> bool {
        self.shards.iter().all(ConnTable::is_empty)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::Route;
    use core::net::Ipv4Addr;
    use dpr_packet::IpProtocol;

    #[test]
    fn flows_land_in_their_shard_and_spread() {
        let cfg = ConnTableConfig {
            capacity: 4000,
            ..ConnTableConfig::default()
        };
        let mut t = ShardedConnTable::<V4Key>::new(cfg, 3, FlowHasher::new(5)).unwrap();
        for p in 0..3000u16 {
            let f = FlowKey::new(
                IpProtocol::Tcp,
                Ipv4Addr::new(198, 18, 0, 1).into(),
                p,
                Ipv4Addr::new(198, 18, 0, 2).into(),
                80,
            );
            t.shard_mut_for(&f)
                .insert(&f, Route::Local, Timestamp(1))
                .unwrap();
            let i = t.shard_for(&f);
            assert!(t.shards()[i].get(&f).is_some());
        }
        assert_eq!(t.len(), 3000);
        for s in t.shards() {
            assert!((800..1200).contains(&s.len()), "{}", s.len());
        }
        assert!(ShardedConnTable::<V4Key>::new(cfg, 0, FlowHasher::new(5)).is_err());
        // Restart with a different worker count: every entry lands in its new shard.
        let mut blob = Vec::new();
        t.export(Timestamp(10), &mut blob);
        let mut u = ShardedConnTable::<V4Key>::new(cfg, 5, FlowHasher::new(5)).unwrap();
        assert_eq!(u.import(&blob, Timestamp(10)).unwrap(), 3000);
        assert_eq!(u.len(), 3000);
        for s in t.shards() {
            for e in s.iter() {
                let i = u.shard_for(&e.key);
                assert_eq!(u.shards()[i].get(&e.key), Some(e));
            }
        }
        assert_eq!(t.into_shards().len(), 3);
    }
}
