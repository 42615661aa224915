//! The connection table as it was before issue 17 (commit 272965d), frozen
//! here so that benches measure the old and the new layout in one process.
//! Export, import and the test-only checks are left out; everything on the
//! packet path is the old code unchanged.
#![allow(dead_code, unreachable_pub, missing_docs, clippy::all)]

use core::time::Duration;
use dpr_packet::tcp::TcpFlags;
use dpr_packet::{FlowHasher, FlowKey, IpProtocol};
use dpr_table::{
    BATCH, ConnEntry, ConnState, ConnTableConfig, Direction, InsertOutcome, IsnSlot, PacketInfo,
    PacketOutcome, PeerId, Result, Route, TableError, TableKey, TableStats, Timestamp, V4Key,
};

const fn duration_nanos(d: Duration) -> u64 {
    let n = d.as_nanos();
    if n > u64::MAX as u128 {
        u64::MAX
    } else {
        n as u64
    }
}

const NIL: u32 = u32::MAX;
const ST_FREE: u8 = 0;
const ST_SYN: u8 = 1;
const ST_EST: u8 = 2;
const ST_CLOSING: u8 = 3;
const ST_CLOSED: u8 = 4;
const ST_MASK: u8 = 0x07;
const FIN_ORIG: u8 = 0x08;
const FIN_REPLY: u8 = 0x10;
/// An RST was seen; the entry is in its grace time (`ST_CLOSED`) and comes
/// back to life if the connection goes on (the endpoint refused the RST).
const RST_SEEN: u8 = 0x20;
/// `isn` holds the opening SYN's sequence number.
const ISN_KNOWN: u8 = 0x40;
const LOCAL: u8 = 0x80;
/// Bit of `Slot::hash` marking an entry on probation. The index position
/// uses at most 31 bits of the hash (the index has at most 2^31 slots).
const PROBATION: u32 = 1 << 31;
/// List numbers: `lists[PROTECTED]`, `lists[PROBATION_LIST]`.
const PROTECTED: usize = 0;
const PROBATION_LIST: usize = 1;

/// One stored entry. For `V4Key` this is 48 bytes: the compiler orders
/// fields by alignment and the 13-byte key fills the tail. For `WideKey`
/// (the engine's) it is 80 bytes, `isn` included (it fills padding).
#[derive(Clone, Copy, Debug)]
struct Slot<K: TableKey> {
    last_seen: u64,
    bytes: u64,
    packets: u32,
    prev: u32,
    next: u32,
    /// Low 31 bits of the flow hash (the home position in the index), and
    /// `PROBATION` in bit 31.
    hash: u32,
    /// The opening SYN's sequence number, when `ISN_KNOWN`.
    isn: K::Isn,
    peer: u16,
    /// `ST_*` in the low bits, plus `FIN_*` and `LOCAL`.
    state: u8,
    key: K,
}

impl<K: TableKey> Slot<K> {
    #[inline]
    fn list(&self) -> usize {
        usize::from(self.hash & PROBATION != 0)
    }

    fn route(&self) -> Route {
        if self.state & LOCAL != 0 {
            Route::Local
        } else {
            Route::Peer(PeerId(self.peer))
        }
    }

    fn conn_state(&self) -> ConnState {
        match self.state & ST_MASK {
            ST_SYN => ConnState::SynSeen,
            ST_CLOSING => ConnState::Closing,
            ST_CLOSED => ConnState::Closed,
            _ => ConnState::Established,
        }
    }

    fn public(&self) -> ConnEntry {
        ConnEntry {
            key: self.key.to_flow(),
            route: self.route(),
            state: self.conn_state(),
            last_seen: Timestamp(self.last_seen),
            packets: self.packets,
            bytes: self.bytes,
            isn: if self.state & ISN_KNOWN != 0 {
                self.isn.load()
            } else {
                None
            },
        }
    }
}

/// One intrusive LRU list: most recent at `head`.
#[derive(Clone, Copy, Debug)]
struct List {
    head: u32,
    tail: u32,
    len: u32,
}

const EMPTY: List = List {
    head: NIL,
    tail: NIL,
    len: 0,
};

/// Timeouts in nanoseconds, indexed by `ST_*`.
#[derive(Clone, Copy, Debug)]
struct Timeouts([u64; 5]);

/// A bounded, LRU-evicting map from flow to route and TCP state, whose
/// half-open entries cannot evict established ones beyond a reserve (see
/// the module documentation).
///
/// One table is owned by one data-path worker (`&mut self` everywhere, no
/// locks); see [`crate::shard`] for steering flows to workers.
#[derive(Clone, Debug)]
pub struct OldConnTable<K: TableKey = V4Key> {
    entries: Vec<Slot<K>>,
    index: Vec<u32>,
    index_mask: usize,
    idx_bits: u32,
    idx_mask: u32,
    capacity: u32,
    len: u32,
    /// `[PROTECTED]` and `[PROBATION_LIST]`.
    lists: [List; 2],
    half_open_reserve: u32,
    free: u32,
    sweep_pos: u32,
    sweep_per_call: u32,
    timeouts: Timeouts,
    hasher: FlowHasher,
    stats: TableStats,
}

impl<K: TableKey> OldConnTable<K> {
    /// An empty table. Allocates the slab and the index for the full
    /// capacity now, so memory never grows afterwards.
    pub fn new(config: ConnTableConfig, hasher: FlowHasher) -> Result<Self> {
        config.validate()?;
        let capacity = config.capacity;
        let want = (u64::from(capacity) * 4).div_ceil(3).max(2);
        let index_len = want.next_power_of_two() as usize;
        let idx_bits = 32 - capacity.leading_zeros();
        let mut timeouts = [0u64; 5];
        timeouts[usize::from(ST_SYN)] = duration_nanos(config.half_open_timeout);
        timeouts[usize::from(ST_EST)] = duration_nanos(config.established_timeout);
        timeouts[usize::from(ST_CLOSING)] = duration_nanos(config.closing_timeout);
        timeouts[usize::from(ST_CLOSED)] = duration_nanos(config.fin_grace);
        Ok(Self {
            entries: Vec::with_capacity(capacity as usize),
            index: vec![0; index_len],
            index_mask: index_len - 1,
            idx_bits,
            idx_mask: (1u32 << idx_bits) - 1,
            capacity,
            len: 0,
            lists: [EMPTY; 2],
            half_open_reserve: config.effective_half_open_reserve(),
            free: NIL,
            sweep_pos: 0,
            sweep_per_call: config.sweep_per_call,
            timeouts: Timeouts(timeouts),
            hasher,
            stats: TableStats::default(),
        })
    }

    /// Live entries (some may be idle past their timeout until swept).
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// True when the table holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The configured capacity.
    pub fn capacity(&self) -> usize {
        self.capacity as usize
    }

    /// Lifetime counters.
    pub fn stats(&self) -> TableStats {
        self.stats
    }

    /// Entries on probation (half-open: handshake not seen to complete).
    pub fn half_open_len(&self) -> usize {
        self.lists[PROBATION_LIST].len as usize
    }

    /// The half-open reserve in effect
    /// ([`ConnTableConfig::effective_half_open_reserve`]).
    pub fn half_open_reserve(&self) -> usize {
        self.half_open_reserve as usize
    }

    /// Bytes allocated by the table's slab and index (not the struct).
    pub fn allocated_bytes(&self) -> usize {
        self.entries.capacity() * core::mem::size_of::<Slot<K>>()
            + self.index.capacity() * core::mem::size_of::<u32>()
    }

    /// Size of one stored entry in bytes.
    pub const fn entry_size() -> usize {
        core::mem::size_of::<Slot<K>>()
    }

    #[inline]
    fn tag(&self, h: u64) -> u32 {
        // High half of the hash; the index position uses the low half.
        ((h >> 32) as u32) >> self.idx_bits << self.idx_bits
    }

    #[inline]
    fn find(&self, h: u64, key: &K) -> Option<(usize, u32)> {
        let tag = self.tag(h);
        let mut pos = (h as usize) & self.index_mask;
        loop {
            let s = self.index[pos];
            if s == 0 {
                return None;
            }
            if s & !self.idx_mask == tag {
                let e = (s & self.idx_mask) - 1;
                if self.entries[e as usize].key == *key {
                    return Some((pos, e));
                }
            }
            pos = (pos + 1) & self.index_mask;
        }
    }

    fn index_insert(&mut self, h: u64, e: u32) {
        let v = self.tag(h) | (e + 1);
        let mut pos = (h as usize) & self.index_mask;
        while self.index[pos] != 0 {
            pos = (pos + 1) & self.index_mask;
        }
        self.index[pos] = v;
    }

    /// Backward-shift deletion: no tombstones, probe sequences stay short.
    fn index_remove(&mut self, hole: usize) {
        let mask = self.index_mask;
        let mut i = hole;
        let mut j = hole;
        loop {
            j = (j + 1) & mask;
            let s = self.index[j];
            if s == 0 {
                break;
            }
            let e = (s & self.idx_mask) - 1;
            let home = self.entries[e as usize].hash as usize & mask;
            let stays = if i <= j {
                i < home && home <= j
            } else {
                i < home || home <= j
            };
            if !stays {
                self.index[i] = s;
                i = j;
            }
        }
        self.index[i] = 0;
    }

    fn lru_unlink(&mut self, e: u32) {
        let (prev, next, l) = {
            let s = &self.entries[e as usize];
            (s.prev, s.next, s.list())
        };
        let list = &mut self.lists[l];
        list.len -= 1;
        if prev == NIL {
            list.head = next
        } else {
            self.entries[prev as usize].next = next
        }
        if next == NIL {
            list.tail = prev
        } else {
            self.entries[next as usize].prev = prev
        }
    }

    /// Puts `e` at the front of the list its `PROBATION` bit names.
    fn lru_push_front(&mut self, e: u32) {
        let l = self.entries[e as usize].list();
        let old = self.lists[l].head;
        {
            let s = &mut self.entries[e as usize];
            s.prev = NIL;
            s.next = old;
        }
        let list = &mut self.lists[l];
        list.len += 1;
        if old == NIL {
            list.tail = e
        } else {
            self.entries[old as usize].prev = e
        }
        self.lists[l].head = e;
    }

    #[inline]
    fn touch(&mut self, e: u32) {
        if self.lists[self.entries[e as usize].list()].head != e {
            self.lru_unlink(e);
            self.lru_push_front(e);
        }
    }

    /// Moves `e` from probation to the front of the protected list (its
    /// handshake completed); an entry already protected is only touched.
    #[inline]
    fn promote(&mut self, e: u32) {
        if self.entries[e as usize].hash & PROBATION == 0 {
            self.touch(e);
            return;
        }
        self.lru_unlink(e);
        self.entries[e as usize].hash &= !PROBATION;
        self.lru_push_front(e);
    }

    /// The entry the next eviction removes: probation's least recently used
    /// once probation holds the reserve (or protected is empty), otherwise
    /// protected's.
    #[inline]
    fn victim(&self) -> u32 {
        let prob = &self.lists[PROBATION_LIST];
        if prob.len >= self.half_open_reserve || self.lists[PROTECTED].len == 0 {
            prob.tail
        } else {
            self.lists[PROTECTED].tail
        }
    }

    #[inline]
    fn is_expired(&self, e: u32, now: u64) -> bool {
        let s = &self.entries[e as usize];
        now.saturating_sub(s.last_seen) >= self.timeouts.0[usize::from(s.state & ST_MASK)]
    }

    /// Removes entry `e` found at index position `pos`.
    fn remove_at(&mut self, pos: usize, e: u32) -> Slot<K> {
        self.index_remove(pos);
        self.lru_unlink(e);
        let slot = self.entries[e as usize];
        let s = &mut self.entries[e as usize];
        s.state = ST_FREE;
        s.next = self.free;
        self.free = e;
        self.len -= 1;
        slot
    }

    /// Removes entry `e` by its stored hash (locates its index slot).
    fn remove_entry(&mut self, e: u32) -> Slot<K> {
        let mask = self.index_mask;
        let mut pos = self.entries[e as usize].hash as usize & mask;
        while self.index[pos] & self.idx_mask != e + 1 {
            pos = (pos + 1) & mask;
        }
        self.remove_at(pos, e)
    }

    /// Examines up to `budget` entries from the sweep cursor and removes
    /// the expired ones; returns how many were removed.
    pub fn sweep(&mut self, now: Timestamp, budget: usize) -> usize {
        let n = self.entries.len() as u32;
        if n == 0 {
            return 0;
        }
        let mut removed = 0;
        for _ in 0..budget.min(n as usize) {
            let e = if self.sweep_pos >= n {
                0
            } else {
                self.sweep_pos
            };
            self.sweep_pos = e + 1;
            if self.entries[e as usize].state != ST_FREE && self.is_expired(e, now.0) {
                self.remove_entry(e);
                self.stats.expired += 1;
                removed += 1;
            }
        }
        removed
    }

    /// The live entry for `flow` (the key as stored: original direction),
    /// removing it instead if it is idle past its timeout. Does not count
    /// as activity: LRU order and `last_seen` are unchanged.
    pub fn lookup(&mut self, flow: &FlowKey, now: Timestamp) -> Option<ConnEntry> {
        let e = self.live_entry(flow, now)?;
        Some(self.entries[e as usize].public())
    }

    /// The route of the live entry for `flow`: [`lookup`](Self::lookup)
    /// without building a [`ConnEntry`] (the data-path form).
    #[inline]
    pub fn lookup_route(&mut self, flow: &FlowKey, now: Timestamp) -> Option<Route> {
        let e = self.live_entry(flow, now)?;
        Some(self.entries[e as usize].route())
    }

    /// The slab index of the live entry for `flow`; an entry idle past its
    /// timeout is removed (and counted) instead.
    #[inline]
    fn live_entry(&mut self, flow: &FlowKey, now: Timestamp) -> Option<u32> {
        let key = K::from_flow(flow)?;
        let h = self.hasher.hash(flow);
        let (pos, e) = self.find(h, &key)?;
        if self.is_expired(e, now.0) {
            self.remove_at(pos, e);
            self.stats.expired += 1;
            return None;
        }
        Some(e)
    }

    /// Someone who can see the connection itself (the kernel's socket
    /// table, where the packets this table does not see end up) says it is
    /// open: a `SynSeen` entry becomes `Established`, and an `Established`
    /// one counts as active now (its idle time restarts, LRU order too).
    /// A closing or reset entry is left as it is, and nothing is created.
    /// Returns whether a live entry was found.
    pub fn confirm_open(&mut self, flow: &FlowKey, now: Timestamp) -> bool {
        let Some(e) = self.live_entry(flow, now) else {
            return false;
        };
        let s = &mut self.entries[e as usize];
        if s.state & RST_SEEN != 0 {
            return true;
        }
        match s.state & ST_MASK {
            ST_SYN | ST_EST => {
                s.state = (s.state & !ST_MASK) | ST_EST;
                s.last_seen = now.0;
                self.promote(e);
            }
            _ => {}
        }
        true
    }

    /// A copy of the entry for `flow` without expiry or any change.
    pub fn get(&self, flow: &FlowKey) -> Option<ConnEntry> {
        let key = K::from_flow(flow)?;
        let (_, e) = self.find(self.hasher.hash(flow), &key)?;
        Some(self.entries[e as usize].public())
    }

    /// The data-path call for every packet of a known connection. `flow` is
    /// the key in the original direction (the caller reverses reply
    /// packets and says so in `dir`); `flags` are the TCP flags (empty for
    /// other protocols), `len` the packet length counted in `bytes`.
    pub fn on_packet(
        &mut self,
        flow: &FlowKey,
        dir: Direction,
        flags: TcpFlags,
        len: u32,
        now: Timestamp,
    ) -> PacketOutcome {
        self.sweep_some(now);
        let Some(key) = K::from_flow(flow) else {
            return PacketOutcome::Unknown;
        };
        let h = self.hasher.hash(flow);
        let Some((pos, e)) = self.find(h, &key) else {
            return PacketOutcome::Unknown;
        };
        if self.is_expired(e, now.0) {
            self.remove_at(pos, e);
            self.stats.expired += 1;
            return PacketOutcome::Unknown;
        }
        let s = &mut self.entries[e as usize];
        s.packets = s.packets.saturating_add(1);
        s.bytes = s.bytes.saturating_add(u64::from(len));
        if flags.contains(TcpFlags::RST) {
            // Not removed at once: a router cannot check the RST's sequence
            // number, and an endpoint ignores one outside its window (RFC
            // 5961). The route lives out the grace time so the connection's
            // next packets still reach their server; a later packet revives it.
            s.state = (s.state & !ST_MASK) | RST_SEEN | ST_CLOSED;
            s.last_seen = now.0;
            let route = s.route();
            self.stats.reset += 1;
            self.touch(e);
            return PacketOutcome::Reset(route);
        }
        if s.state & RST_SEEN != 0 {
            // The connection went on after an RST: the endpoint refused it.
            let fins = s.state & (FIN_ORIG | FIN_REPLY);
            let st = match fins {
                0 => ST_EST,
                f if f == FIN_ORIG | FIN_REPLY => ST_CLOSED,
                _ => ST_CLOSING,
            };
            s.state = (s.state & !(ST_MASK | RST_SEEN)) | st;
            s.last_seen = now.0;
        }
        let mut st = s.state & ST_MASK;
        if st == ST_SYN
            && ((dir == Direction::Original && flags.contains(TcpFlags::ACK))
                || (dir == Direction::Reply && flags.is_syn_ack()))
        {
            st = ST_EST;
        }
        if flags.contains(TcpFlags::FIN) {
            s.state |= if dir == Direction::Original {
                FIN_ORIG
            } else {
                FIN_REPLY
            };
            if st != ST_CLOSED {
                st = if s.state & (FIN_ORIG | FIN_REPLY) == FIN_ORIG | FIN_REPLY {
                    ST_CLOSED
                } else {
                    ST_CLOSING
                };
                // The grace time counts from the second FIN.
                s.last_seen = now.0;
            }
        } else if st != ST_CLOSED {
            s.last_seen = now.0;
        }
        s.state = (s.state & !ST_MASK) | st;
        let route = s.route();
        if st == ST_SYN {
            self.touch(e);
        } else {
            // Past the handshake (or revived after an RST): protected.
            self.promote(e);
        }
        PacketOutcome::Forward(route)
    }

    /// [`on_packet`](Self::on_packet) for a burst of packets, in order,
    /// with the same results, appended to `out`. Before processing each
    /// group of [`BATCH`] packets it loads the index slot, the entry and the
    /// entry's LRU neighbours of every packet in the group, independently of
    /// one another, so their cache misses overlap instead of queueing: on a
    /// table much larger than the cache this is where the time goes.
    pub fn on_packet_batch(
        &mut self,
        packets: &[PacketInfo],
        now: Timestamp,
        out: &mut Vec<PacketOutcome>,
    ) {
        for group in packets.chunks(BATCH) {
            self.warm(group.iter().map(|p| &p.flow));
            for p in group {
                out.push(self.on_packet(&p.flow, p.dir, p.flags, p.len, now));
            }
        }
    }

    /// Touches the memory that lookups of `flows` (at most [`BATCH`] are
    /// used) will read, in three rounds of independent loads.
    pub fn warm<'a>(&self, flows: impl Iterator<Item = &'a FlowKey>) {
        let mut slot = [NIL; BATCH];
        let mut n = 0;
        for f in flows.take(BATCH) {
            let h = self.hasher.hash(f);
            let s = self.index[(h as usize) & self.index_mask];
            slot[n] = if s == 0 { NIL } else { (s & self.idx_mask) - 1 };
            n += 1;
        }
        let mut prev = [NIL; BATCH];
        let mut next = [NIL; BATCH];
        let mut acc = 0u64;
        for i in 0..n {
            if let Some(e) = self.entries.get(slot[i] as usize) {
                prev[i] = e.prev;
                next[i] = e.next;
                acc ^= e.last_seen;
            }
        }
        for i in 0..n {
            if let Some(e) = self.entries.get(prev[i] as usize) {
                acc ^= u64::from(e.next);
            }
            if let Some(e) = self.entries.get(next[i] as usize) {
                acc ^= u64::from(e.prev);
            }
        }
        core::hint::black_box(acc);
    }

    fn sweep_some(&mut self, now: Timestamp) {
        if self.sweep_per_call > 0 {
            self.sweep(now, self.sweep_per_call as usize);
        }
    }

    /// Records the routing decision for a new connection (on its SYN).
    /// TCP entries start in `SynSeen` (on probation), other protocols in
    /// `Established`. At capacity the entry [`lru`](Self::lru) names is
    /// evicted first.
    pub fn insert(
        &mut self,
        flow: &FlowKey,
        route: Route,
        now: Timestamp,
    ) -> Result<InsertOutcome> {
        let state = if flow.protocol == IpProtocol::Tcp {
            ST_SYN
        } else {
            ST_EST
        };
        // A new connection may reuse the tuple of a closed one.
        self.insert_with_isn(flow, route, state, 0, now)
    }

    /// [`insert`](Self::insert) for a TCP SYN, recording its sequence
    /// number (`isn`) where the key form has room for it ([`WideKey`](crate::WideKey)),
    /// so that a later SYN can be told apart: the same number is a
    /// retransmission, another one a new connection.
    pub fn insert_syn(
        &mut self,
        flow: &FlowKey,
        route: Route,
        isn: u32,
        now: Timestamp,
    ) -> Result<InsertOutcome> {
        let state = if K::Isn::store(isn).load().is_some() {
            ST_SYN | ISN_KNOWN
        } else {
            ST_SYN
        };
        self.insert_with_isn(flow, route, state, isn, now)
    }

    /// Records a connection already past its handshake, learnt from
    /// elsewhere (restart recovery): it starts `Established`, so it gets
    /// the established timeout. An entry already present is kept as is.
    pub fn insert_established(
        &mut self,
        flow: &FlowKey,
        route: Route,
        now: Timestamp,
    ) -> Result<InsertOutcome> {
        self.insert_in_state(flow, route, ST_EST, false, 0, now)
    }

    /// A new connection's entry (a closed one with its tuple counts as
    /// gone), with `isn` stored where `state` says it is known.
    fn insert_with_isn(
        &mut self,
        flow: &FlowKey,
        route: Route,
        state: u8,
        isn: u32,
        now: Timestamp,
    ) -> Result<InsertOutcome> {
        self.insert_in_state(flow, route, state, true, isn, now)
    }

    /// Inserts in `state` unless a live entry exists (a closed one counts
    /// as gone when `replace_closed`); expired entries are replaced.
    fn insert_in_state(
        &mut self,
        flow: &FlowKey,
        route: Route,
        state: u8,
        replace_closed: bool,
        isn: u32,
        now: Timestamp,
    ) -> Result<InsertOutcome> {
        self.sweep_some(now);
        let key = K::from_flow(flow).ok_or(TableError::UnsupportedKey)?;
        let h = self.hasher.hash(flow);
        if let Some((pos, e)) = self.find(h, &key) {
            let closed = self.entries[e as usize].state & ST_MASK == ST_CLOSED;
            let gone = self.is_expired(e, now.0) || (replace_closed && closed);
            if !gone {
                self.touch(e);
                return Ok(InsertOutcome::Existing(self.entries[e as usize].route()));
            }
            self.remove_at(pos, e);
            self.stats.expired += 1;
        }
        let evicted = self.insert_new(h, key, route, state, now.0, 0, 0, K::Isn::store(isn));
        Ok(InsertOutcome::Inserted { evicted })
    }

    #[allow(clippy::too_many_arguments)]
    fn insert_new(
        &mut self,
        h: u64,
        key: K,
        route: Route,
        state: u8,
        last_seen: u64,
        packets: u32,
        bytes: u64,
        isn: K::Isn,
    ) -> Option<FlowKey> {
        let mut evicted = None;
        if self.len == self.capacity {
            let victim = self.victim();
            if self.entries[victim as usize].hash & PROBATION != 0 {
                self.stats.evicted_half_open += 1;
            } else {
                self.stats.evicted_established += 1;
            }
            evicted = Some(self.remove_entry(victim).key.to_flow());
            self.stats.evicted += 1;
        }
        let probation = if state & ST_MASK == ST_SYN {
            PROBATION
        } else {
            0
        };
        let (peer, local) = match route {
            Route::Local => (0, LOCAL),
            Route::Peer(PeerId(p)) => (p, 0),
        };
        let slot = Slot {
            last_seen,
            bytes,
            packets,
            prev: NIL,
            next: NIL,
            hash: (h as u32 & !PROBATION) | probation,
            isn,
            peer,
            state: state | local,
            key,
        };
        let e = if self.free != NIL {
            let e = self.free;
            self.free = self.entries[e as usize].next;
            self.entries[e as usize] = slot;
            e
        } else {
            self.entries.push(slot);
            (self.entries.len() - 1) as u32
        };
        self.index_insert(h, e);
        self.lru_push_front(e);
        self.len += 1;
        self.stats.inserted += 1;
        evicted
    }

    /// Removes the entry for `flow`, returning it.
    pub fn remove(&mut self, flow: &FlowKey) -> Option<ConnEntry> {
        let key = K::from_flow(flow)?;
        let (pos, e) = self.find(self.hasher.hash(flow), &key)?;
        self.stats.removed += 1;
        Some(self.remove_at(pos, e).public())
    }

    /// Entries from most to least recently used: the protected ones, then
    /// those on probation.
    pub fn iter(&self) -> impl Iterator<Item = ConnEntry> + '_ {
        let mut list = PROTECTED;
        let mut e = self.lists[PROTECTED].head;
        core::iter::from_fn(move || {
            while e == NIL {
                if list == PROBATION_LIST {
                    return None;
                }
                list = PROBATION_LIST;
                e = self.lists[PROBATION_LIST].head;
            }
            let s = &self.entries[e as usize];
            e = s.next;
            Some(s.public())
        })
    }

    /// The flow that the next eviction would remove.
    pub fn lru(&self) -> Option<FlowKey> {
        let v = self.victim();
        (v != NIL).then(|| self.entries[v as usize].key.to_flow())
    }
}
