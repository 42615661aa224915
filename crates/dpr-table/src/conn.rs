//! The bounded connection routing table.
//!
//! Layout (see `docs/architecture.md` in NOTES): an entry slab of
//! `capacity` 48-byte entries, allocated once (pages touched as entries
//! are used), with an intrusive doubly linked LRU list of `u32` indices
//! threaded through it, and an open-addressing index (linear probing,
//! backward-shift deletion, load at most 3/4) of `u32` slots. Each slot
//! holds the entry number in its low bits, the slot's distance from its
//! home position (4 bits, saturating) and, in the remaining high bits, a
//! tag taken from the flow hash, so a probe rarely touches an entry whose
//! key does not match and a deletion moves slots without reading entries.
//! An entry keeps a flow whose addresses are IPv4 in a 13-byte key; with
//! [`WideKey`](crate::WideKey), other flows keep theirs in a wide-key slab
//! beside the entries (allocated for the capacity on the first such flow).
//! Entries do not store their hash: eviction and the sweep recompute it.
//!
//! The LRU order is kept in two segments (a 2Q-like split): entries whose
//! handshake has not been seen to complete (`SynSeen`, on *probation*) and
//! all others (*protected*). At capacity the victim is probation's least
//! recently used entry once probation holds at least
//! [`ConnTableConfig::half_open_reserve`] entries (or protected is empty),
//! otherwise protected's: a flood of SYNs takes at most the reserve from
//! established connections and then only evicts its own entries, while a
//! table full of established connections still gives new ones the reserve
//! to complete their handshakes in. An entry is promoted when it leaves
//! `SynSeen` (ACK from the client, SYN-ACK from the server, FIN,
//! [`ConnTable::confirm_open`], a packet after an RST).
//!
//! Expiry follows the `now` passed in: a lookup that finds an idle entry
//! removes it, and every mutating call advances a sweep cursor over a
//! bounded number of entries (`sweep_per_call`).

use crate::error::{Result, TableError};
use crate::key::{IsnSlot, TableKey, V4Key};
use crate::load::PeerId;
use crate::time::{Timestamp, duration_nanos};
use core::time::Duration;
use dpr_packet::tcp::TcpFlags;
use dpr_packet::{FlowHasher, FlowKey, IpProtocol};

/// Where a connection's packets go.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Route {
    /// Served by this host.
    Local,
    /// Redirected to a peer over IP-in-IP.
    Peer(PeerId),
}

/// TCP progress of a connection, as far as the router can see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConnState {
    /// The SYN was seen and routed; the handshake is not complete.
    SynSeen,
    /// The handshake completed (or the flow is not TCP).
    Established,
    /// A FIN was seen in one direction.
    Closing,
    /// FINs were seen in both directions; the entry lives out its grace time.
    Closed,
}

/// The direction of a packet relative to the connection's opening SYN.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Client to server: the direction of the SYN, and of the table key.
    Original,
    /// Server to client: the caller looked up with the key reversed.
    Reply,
}

/// Configuration of a [`ConnTable`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnTableConfig {
    /// Maximum number of entries (1 ..= 2^30). At capacity an insert evicts
    /// the least recently used entry of one segment (see `half_open_reserve`).
    pub capacity: u32,
    /// Idle timeout of a connection whose handshake has not completed.
    pub half_open_timeout: Duration,
    /// Idle timeout of an established connection.
    pub established_timeout: Duration,
    /// Idle timeout after a FIN in one direction only.
    pub closing_timeout: Duration,
    /// Grace time after FINs in both directions, counted from the second FIN.
    pub fin_grace: Duration,
    /// Entries the incremental sweep examines per mutating call (0: only
    /// explicit [`ConnTable::sweep`] calls and lazy expiry remove entries).
    pub sweep_per_call: u32,
    /// Entries that half-open connections (on probation) may take from
    /// established ones at capacity; beyond it a new entry evicts the least
    /// recently used half-open one, never an established one. 0 (the
    /// default) means a quarter of `capacity`, rounded up; otherwise at
    /// most `capacity`.
    pub half_open_reserve: u32,
}

impl Default for ConnTableConfig {
    fn default() -> Self {
        Self {
            capacity: 1 << 20,
            half_open_timeout: Duration::from_secs(10),
            established_timeout: Duration::from_secs(600),
            closing_timeout: Duration::from_secs(60),
            fin_grace: Duration::from_secs(4),
            sweep_per_call: 4,
            half_open_reserve: 0,
        }
    }
}

/// Largest supported capacity.
pub const MAX_CAPACITY: u32 = 1 << 30;

impl ConnTableConfig {
    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<()> {
        let bad = |field, reason| Err(TableError::InvalidConfig { field, reason });
        if self.capacity == 0 {
            return bad("capacity", "must be at least 1");
        }
        if self.capacity > MAX_CAPACITY {
            return bad("capacity", "must be at most 2^30");
        }
        if self.half_open_reserve > self.capacity {
            return bad("half_open_reserve", "must be at most `capacity`");
        }
        for (field, d) in [
            ("half_open_timeout", self.half_open_timeout),
            ("established_timeout", self.established_timeout),
            ("closing_timeout", self.closing_timeout),
            ("fin_grace", self.fin_grace),
        ] {
            if d.is_zero() {
                return bad(field, "must be greater than zero");
            }
        }
        Ok(())
    }

    /// The reserve in effect: [`half_open_reserve`](Self::half_open_reserve),
    /// or a quarter of the capacity (rounded up) when it is 0.
    pub fn effective_half_open_reserve(&self) -> u32 {
        if self.half_open_reserve == 0 {
            self.capacity.div_ceil(4)
        } else {
            self.half_open_reserve
        }
    }
}

/// A public copy of one table entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnEntry {
    /// The connection, in its original (client to server) direction.
    pub key: FlowKey,
    /// Where its packets go.
    pub route: Route,
    /// TCP progress.
    pub state: ConnState,
    /// The last packet (or, once `Closed`, the second FIN).
    pub last_seen: Timestamp,
    /// Packets counted (saturating).
    pub packets: u32,
    /// Bytes counted (saturating at 2^62 - 1, 4.6 EB: the entry keeps two
    /// flags in the top bits).
    pub bytes: u64,
    /// The initial sequence number of the SYN that opened it, where the
    /// caller recorded one ([`ConnTable::insert_syn`]): a later SYN with
    /// another one is a new incarnation of the 4-tuple, not a retransmission.
    pub isn: Option<u32>,
}

/// What [`ConnTable::insert`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InsertOutcome {
    /// A new entry; `evicted` is the entry removed to make room (the least
    /// recently used of its segment, see [`ConnTable::lru`]).
    Inserted {
        /// The flow evicted at capacity, if any.
        evicted: Option<FlowKey>,
    },
    /// A live entry for the flow existed (a retransmitted SYN); it keeps
    /// its route, returned here, and was not changed.
    Existing(Route),
}

/// A hint to the CPU that the memory at an address will be read soon (a
/// prefetch instruction, which neither faults nor waits): the I/O layer
/// provides one (`dpr_io::sys::prefetch`), since this crate has no
/// `unsafe`. It must not read or write through the pointer.
pub type PrefetchHook = fn(*const u8);

/// Advice to the operating system about one of a table's large
/// allocations (its start and length in bytes), e.g. that it should be
/// backed by huge pages: the I/O layer provides one
/// (`dpr_io::sys::advise_huge_pages`), since this crate has no `unsafe`
/// and no system calls. It must not read or write through the pointer.
pub type MemoryHook = fn(*const u8, usize);

/// Packets [`ConnTable::on_packet_batch`] warms together.
pub const BATCH: usize = 32;

/// One packet for [`ConnTable::on_packet_batch`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacketInfo {
    /// The flow in its original direction.
    pub flow: FlowKey,
    /// Which way the packet travels.
    pub dir: Direction,
    /// TCP flags (empty for other protocols).
    pub flags: TcpFlags,
    /// Length counted in the entry's bytes.
    pub len: u32,
}

/// What [`ConnTable::on_packet`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PacketOutcome {
    /// No live entry: a new connection (route it and insert) or a stray.
    Unknown,
    /// Forward along this route; the entry was updated.
    Forward(Route),
    /// An RST: forward along this route. The entry is not removed at once:
    /// it lives out the FIN grace time and comes back if the connection goes
    /// on, so a blind RST (which the endpoint ignores, RFC 5961) cannot cut
    /// the route of a connection that survives it.
    Reset(Route),
}

/// Counters of a table's life.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableStats {
    /// Entries created.
    pub inserted: u64,
    /// Entries evicted at capacity (`evicted_half_open + evicted_established`).
    pub evicted: u64,
    /// Of `evicted`: entries on probation (handshake not seen to complete).
    pub evicted_half_open: u64,
    /// Of `evicted`: entries past their handshake (established, closing,
    /// closed): lost to a genuine overload, never to a flood of SYNs beyond
    /// the half-open reserve.
    pub evicted_established: u64,
    /// Entries removed because idle or past their FIN grace.
    pub expired: u64,
    /// RSTs seen for a live entry (each starts its grace time).
    pub reset: u64,
    /// Entries removed by [`ConnTable::remove`].
    pub removed: u64,
}

const NIL: u32 = u32::MAX;
/// `Slot::bytes` keeps the byte count in its low 62 bits (saturating
/// there: 4.6 EB) and two flags above. Not in the LRU links: a neighbour's
/// link is written blind when an entry moves, and a flag there would make
/// that write wait for a read of the neighbour's cache line.
const BYTES: u64 = (1 << 62) - 1;
/// On probation.
const PROB_BIT: u64 = 1 << 63;
/// The key is in the wide-key slab.
const WIDE_BIT: u64 = 1 << 62;
/// Bits of an index slot for the distance from home (fewer in tests, so
/// that they exercise the saturated case).
const DIST_BITS: u32 = if cfg!(test) { 2 } else { 4 };
/// How far ahead of its cursor the sweep loads entries (in entries:
/// 48 lines of 64 bytes, a dozen calls of 4 entries).
const SWEEP_AHEAD: usize = 64;
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
/// List numbers: `lists[PROTECTED]`, `lists[PROBATION_LIST]`.
const PROTECTED: usize = 0;
const PROBATION_LIST: usize = 1;

/// One stored entry: 48 bytes whatever the key form (the compiler orders
/// fields by alignment and the 13-byte key fills the tail). A flow with an
/// IPv6 address keeps its key in the table's wide-key slab and the slab
/// position in `key` (`bytes` has `WIDE_BIT` set).
#[derive(Clone, Copy, Debug)]
struct Slot {
    last_seen: u64,
    /// Bytes counted (`BYTES`), `PROB_BIT` and `WIDE_BIT`.
    bytes: u64,
    packets: u32,
    /// The more recent neighbour in the LRU list.
    prev: u32,
    /// The less recent neighbour (or the next free slot).
    next: u32,
    /// The opening SYN's sequence number, when `ISN_KNOWN`.
    isn: u32,
    peer: u16,
    /// `ST_*` in the low bits, plus `FIN_*` and `LOCAL`.
    state: u8,
    key: V4Key,
}

impl Slot {
    #[inline]
    fn list(&self) -> usize {
        usize::from(self.bytes & PROB_BIT != 0)
    }

    #[inline]
    fn wide(&self) -> bool {
        self.bytes & WIDE_BIT != 0
    }

    #[inline]
    fn prev(&self) -> u32 {
        self.prev
    }

    #[inline]
    fn next(&self) -> u32 {
        self.next
    }

    #[inline]
    fn set_prev(&mut self, e: u32) {
        self.prev = e;
    }

    #[inline]
    fn set_next(&mut self, e: u32) {
        self.next = e;
    }

    #[inline]
    fn add_bytes(&mut self, len: u32) {
        let b = (self.bytes & BYTES)
            .saturating_add(u64::from(len))
            .min(BYTES);
        self.bytes = (self.bytes & !BYTES) | b;
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

    fn public(&self, key: FlowKey) -> ConnEntry {
        ConnEntry {
            key,
            route: self.route(),
            state: self.conn_state(),
            last_seen: Timestamp(self.last_seen),
            packets: self.packets,
            bytes: self.bytes & BYTES,
            isn: if self.state & ISN_KNOWN != 0 {
                Some(self.isn)
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

/// A flow's key as the table stores it: IPv4 flows in the entry, others
/// in the wide-key slab.
#[derive(Clone, Copy, Debug)]
enum Stored<K> {
    Narrow(V4Key),
    Wide(K),
}

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
pub struct ConnTable<K: TableKey = V4Key> {
    entries: Vec<Slot>,
    /// Keys of flows with an IPv6 address, allocated for the capacity on
    /// the first such flow.
    side: Vec<K>,
    /// Free positions of `side`.
    side_free: Vec<u32>,
    index: Vec<u32>,
    index_mask: usize,
    /// Index slot: entry number + 1 in the low `idx_bits` bits...
    idx_bits: u32,
    idx_mask: u32,
    /// ...then the distance from home, `dist_max` meaning "that or more"...
    dist_max: u32,
    /// ...then the tag, from bit `tag_shift` (32: no tag).
    tag_shift: u32,
    capacity: u32,
    len: u32,
    /// `[PROTECTED]` and `[PROBATION_LIST]`.
    lists: [List; 2],
    half_open_reserve: u32,
    free: u32,
    sweep_pos: u32,
    sweep_per_call: u32,
    /// A hint that memory is about to be read ([`PrefetchHook`]).
    prefetch: Option<PrefetchHook>,
    timeouts: Timeouts,
    hasher: FlowHasher,
    stats: TableStats,
}

impl<K: TableKey> ConnTable<K> {
    /// An empty table. Allocates the slab and the index for the full
    /// capacity now, so memory never grows afterwards.
    pub fn new(config: ConnTableConfig, hasher: FlowHasher) -> Result<Self> {
        config.validate()?;
        let capacity = config.capacity;
        let want = (u64::from(capacity) * 4).div_ceil(3).max(2);
        let index_len = want.next_power_of_two() as usize;
        let idx_bits = 32 - capacity.leading_zeros();
        let dist_bits = DIST_BITS.min(32 - idx_bits);
        let mut timeouts = [0u64; 5];
        timeouts[usize::from(ST_SYN)] = duration_nanos(config.half_open_timeout);
        timeouts[usize::from(ST_EST)] = duration_nanos(config.established_timeout);
        timeouts[usize::from(ST_CLOSING)] = duration_nanos(config.closing_timeout);
        timeouts[usize::from(ST_CLOSED)] = duration_nanos(config.fin_grace);
        Ok(Self {
            entries: Vec::with_capacity(capacity as usize),
            side: Vec::new(),
            side_free: Vec::new(),
            index: vec![0; index_len],
            index_mask: index_len - 1,
            idx_bits,
            idx_mask: (1u32 << idx_bits) - 1,
            dist_max: (1u32 << dist_bits) - 1,
            tag_shift: idx_bits + dist_bits,
            capacity,
            len: 0,
            lists: [EMPTY; 2],
            half_open_reserve: config.effective_half_open_reserve(),
            free: NIL,
            sweep_pos: 0,
            sweep_per_call: config.sweep_per_call,
            prefetch: None,
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

    /// Passes the slab's and the index's allocations (their whole
    /// capacity, reserved at construction) to `hook`. Called on an empty
    /// table, advice such as huge pages applies from the first entry (the
    /// pages are not touched yet); the table's contents and behaviour do
    /// not depend on it.
    pub fn advise_memory(&self, hook: MemoryHook) {
        hook(
            self.entries.as_ptr().cast(),
            self.entries.capacity() * core::mem::size_of::<Slot>(),
        );
        hook(
            self.index.as_ptr().cast(),
            self.index.capacity() * core::mem::size_of::<u32>(),
        );
    }

    /// Sets (or clears) the prefetch hint the sweep uses to load the
    /// entries it will examine a few calls ahead (see [`PrefetchHook`]).
    /// Without one it reads them when it gets there.
    pub fn set_prefetch(&mut self, hook: Option<PrefetchHook>) {
        self.prefetch = hook;
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

    /// Bytes allocated by the table's slab and index (not the struct), and
    /// by the wide-key slab once a flow with an IPv6 address needed it.
    /// Pages are touched as entries are used: resident memory follows the
    /// entries in use (and the index, which hashing touches everywhere).
    pub fn allocated_bytes(&self) -> usize {
        self.entries.capacity() * core::mem::size_of::<Slot>()
            + self.index.capacity() * core::mem::size_of::<u32>()
            + self.side.capacity() * core::mem::size_of::<K>()
            + self.side_free.capacity() * core::mem::size_of::<u32>()
    }

    /// Size of one stored entry in bytes (48); a flow with an IPv6 address
    /// takes [`wide_key_size`](Self::wide_key_size) more in the wide-key slab.
    pub const fn entry_size() -> usize {
        core::mem::size_of::<Slot>()
    }

    /// Bytes a flow with an IPv6 address takes in the wide-key slab.
    pub const fn wide_key_size() -> usize {
        core::mem::size_of::<K>()
    }

    /// The stored form of `flow`'s key, or `None` if `K` cannot hold it.
    #[inline]
    fn stored(flow: &FlowKey) -> Option<Stored<K>> {
        match V4Key::from_flow(flow) {
            Some(k) => Some(Stored::Narrow(k)),
            None => K::from_flow(flow).map(Stored::Wide),
        }
    }

    /// The flow of entry `e`.
    #[inline]
    fn flow_of(&self, e: u32) -> FlowKey {
        let s = &self.entries[e as usize];
        if s.wide() {
            self.side[s.key.side() as usize].to_flow()
        } else {
            s.key.to_flow()
        }
    }

    /// The public copy of entry `e`.
    fn public(&self, e: u32) -> ConnEntry {
        self.entries[e as usize].public(self.flow_of(e))
    }

    /// Entry `e`'s home position in the index (its hash, recomputed: the
    /// entry does not store it).
    #[inline]
    fn home(&self, e: u32) -> usize {
        (self.hasher.hash(&self.flow_of(e)) as usize) & self.index_mask
    }

    #[inline]
    fn tag(&self, h: u64) -> u32 {
        // High half of the hash; the index position uses the low half.
        ((h >> 32) >> self.tag_shift << self.tag_shift) as u32
    }

    /// The bits of an index slot that hold the tag.
    #[inline]
    fn tag_bits(&self, s: u32) -> u32 {
        (u64::from(s) >> self.tag_shift << self.tag_shift) as u32
    }

    /// An index slot for entry `e` at `dist` from its home.
    #[inline]
    fn index_slot(&self, tag: u32, dist: usize, e: u32) -> u32 {
        let d = (dist as u32).min(self.dist_max);
        tag | d << self.idx_bits | (e + 1)
    }

    /// Home position of the slot `s` found at `pos`: from its distance, or
    /// from the entry's hash when the distance saturated.
    #[inline]
    fn slot_home(&self, s: u32, pos: usize) -> usize {
        let d = (s >> self.idx_bits) & self.dist_max;
        if d < self.dist_max {
            pos.wrapping_sub(d as usize) & self.index_mask
        } else {
            self.home((s & self.idx_mask) - 1)
        }
    }

    /// The index position and entry number of `key`'s entry.
    #[inline]
    fn find(&self, h: u64, key: &Stored<K>) -> Option<(usize, u32)> {
        // One probe loop per key form, chosen once.
        match key {
            Stored::Narrow(k) => self.probe(h, |s| !s.wide() && s.key == *k),
            Stored::Wide(k) => {
                self.probe(h, |s| s.wide() && self.side[s.key.side() as usize] == *k)
            }
        }
    }

    #[inline(always)]
    fn probe(&self, h: u64, is_key: impl Fn(&Slot) -> bool) -> Option<(usize, u32)> {
        let tag = self.tag(h);
        let mut pos = (h as usize) & self.index_mask;
        loop {
            let s = self.index[pos];
            if s == 0 {
                return None;
            }
            if self.tag_bits(s) == tag {
                let e = (s & self.idx_mask) - 1;
                if is_key(&self.entries[e as usize]) {
                    return Some((pos, e));
                }
            }
            pos = (pos + 1) & self.index_mask;
        }
    }

    fn index_insert(&mut self, h: u64, e: u32) {
        let home = (h as usize) & self.index_mask;
        let mut pos = home;
        while self.index[pos] != 0 {
            pos = (pos + 1) & self.index_mask;
        }
        let dist = pos.wrapping_sub(home) & self.index_mask;
        self.index[pos] = self.index_slot(self.tag(h), dist, e);
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
            let home = self.slot_home(s, j);
            let stays = if i <= j {
                i < home && home <= j
            } else {
                i < home || home <= j
            };
            if !stays {
                let dist = i.wrapping_sub(home) & mask;
                self.index[i] = self.index_slot(self.tag_bits(s), dist, (s & self.idx_mask) - 1);
                i = j;
            }
        }
        self.index[i] = 0;
    }

    fn lru_unlink(&mut self, e: u32) {
        let (prev, next, l) = {
            let s = &self.entries[e as usize];
            (s.prev(), s.next(), s.list())
        };
        let list = &mut self.lists[l];
        list.len -= 1;
        if prev == NIL {
            list.head = next
        } else {
            self.entries[prev as usize].set_next(next)
        }
        if next == NIL {
            list.tail = prev
        } else {
            self.entries[next as usize].set_prev(prev)
        }
    }

    /// Puts `e` at the front of the list its probation flag names.
    fn lru_push_front(&mut self, e: u32) {
        let l = self.entries[e as usize].list();
        let old = self.lists[l].head;
        {
            let s = &mut self.entries[e as usize];
            s.set_prev(NIL);
            s.set_next(old);
        }
        let list = &mut self.lists[l];
        list.len += 1;
        if old == NIL {
            list.tail = e
        } else {
            self.entries[old as usize].set_prev(e)
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
        if self.entries[e as usize].bytes & PROB_BIT == 0 {
            self.touch(e);
            return;
        }
        self.lru_unlink(e);
        self.entries[e as usize].bytes &= !PROB_BIT;
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
    fn remove_at(&mut self, pos: usize, e: u32) {
        self.index_remove(pos);
        self.lru_unlink(e);
        let s = &mut self.entries[e as usize];
        if s.wide() {
            self.side_free.push(s.key.side());
        }
        s.state = ST_FREE;
        s.bytes = 0;
        s.next = self.free;
        self.free = e;
        self.len -= 1;
    }

    /// Removes entry `e` by its hash (locates its index slot).
    fn remove_entry(&mut self, e: u32) {
        self.remove_entry_from(e, self.home(e));
    }

    /// Removes entry `e` whose home position is `home`.
    fn remove_entry_from(&mut self, e: u32, home: usize) {
        let mask = self.index_mask;
        let mut pos = home;
        while self.index[pos] & self.idx_mask != e + 1 {
            pos = (pos + 1) & mask;
        }
        self.remove_at(pos, e)
    }

    /// A position in the wide-key slab for `key` (the slab is allocated
    /// for the whole capacity on first use; it holds at most one key per
    /// entry, so it never grows after that).
    fn side_alloc(&mut self, key: K) -> u32 {
        if let Some(i) = self.side_free.pop() {
            self.side[i as usize] = key;
            return i;
        }
        let cap = self.capacity as usize;
        if self.side.capacity() < cap {
            // First use (or a clone, which keeps only what is in use).
            self.side.reserve_exact(cap - self.side.len());
            self.side_free.reserve_exact(cap - self.side_free.len());
        }
        self.side.push(key);
        (self.side.len() - 1) as u32
    }

    /// Examines up to `budget` entries from the sweep cursor and removes
    /// the expired ones; returns how many were removed.
    pub fn sweep(&mut self, now: Timestamp, budget: usize) -> usize {
        let n = self.entries.len() as u32;
        if n == 0 {
            return 0;
        }
        let mut removed = 0;
        if let Some(prefetch) = self.prefetch {
            // The entries SWEEP_AHEAD on, one call's worth: by the time
            // the cursor reaches them (a dozen calls of 4 later) they are
            // in cache. A walk of 4 entries a packet is too slow for the
            // hardware prefetcher to run ahead of, and each new line
            // stalled the packet (the largest cost of an established
            // packet in cache: see docs/benchmarks.md, issue 17).
            let n = n as usize;
            let from = self.sweep_pos as usize + SWEEP_AHEAD;
            let from = if from >= n { from - n } else { from };
            let to = (from + budget.min(16)).min(n);
            for s in self.entries.get(from..to).unwrap_or_default() {
                prefetch((s as *const Slot).cast());
            }
        }
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
        Some(self.public(e))
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
        let key = Self::stored(flow)?;
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
        let key = Self::stored(flow)?;
        let (_, e) = self.find(self.hasher.hash(flow), &key)?;
        Some(self.public(e))
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
        let h = self.hasher.hash(flow);
        self.on_packet_hashed(flow, h, dir, flags, len, now)
    }

    /// [`on_packet`](Self::on_packet) with the flow's hash already
    /// computed by the caller (`hash` must be [`FlowHasher::hash`] of `flow`
    /// under this table's hasher, e.g. the hash that steered the packet to
    /// this worker): the data path hashes a packet once.
    #[inline]
    pub fn on_packet_hashed(
        &mut self,
        flow: &FlowKey,
        h: u64,
        dir: Direction,
        flags: TcpFlags,
        len: u32,
        now: Timestamp,
    ) -> PacketOutcome {
        self.sweep_some(now);
        let Some(key) = Self::stored(flow) else {
            return PacketOutcome::Unknown;
        };
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
        s.add_bytes(len);
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
        let mut hashes = [0u64; BATCH];
        for group in packets.chunks(BATCH) {
            for (h, p) in hashes.iter_mut().zip(group) {
                *h = self.hasher.hash(&p.flow);
            }
            self.warm_hashes(&hashes[..group.len()]);
            for (p, &h) in group.iter().zip(&hashes) {
                out.push(self.on_packet_hashed(&p.flow, h, p.dir, p.flags, p.len, now));
            }
        }
    }

    /// Touches the memory that lookups of `flows` (at most [`BATCH`] are
    /// used) will read, in three rounds of independent loads: index slots;
    /// entries; their LRU neighbours and wide keys.
    pub fn warm<'a>(&self, flows: impl Iterator<Item = &'a FlowKey>) {
        let mut hashes = [0u64; BATCH];
        let mut n = 0;
        for (h, f) in hashes.iter_mut().zip(flows) {
            *h = self.hasher.hash(f);
            n += 1;
        }
        self.warm_hashes(&hashes[..n]);
    }

    /// [`warm`](Self::warm) for flows whose hashes are computed (at most
    /// [`BATCH`] are used; each must be [`FlowHasher::hash`] of its flow
    /// under this table's hasher, or the wrong lines are warmed: harmless,
    /// only slower).
    pub fn warm_hashes(&self, hashes: &[u64]) {
        let mut slot = [NIL; BATCH];
        let mut n = 0;
        for &h in hashes.iter().take(BATCH) {
            let s = self.index[(h as usize) & self.index_mask];
            slot[n] = if s == 0 { NIL } else { (s & self.idx_mask) - 1 };
            n += 1;
        }
        let mut prev = [NIL; BATCH];
        let mut next = [NIL; BATCH];
        let mut side = [NIL; BATCH];
        let mut acc = 0u64;
        for i in 0..n {
            if let Some(e) = self.entries.get(slot[i] as usize) {
                prev[i] = e.prev();
                next[i] = e.next();
                if e.wide() {
                    side[i] = e.key.side();
                }
                // Both ends: a 48-byte entry spans two cache lines in half
                // the positions, and the key is at its tail.
                acc ^= e.last_seen ^ u64::from(e.key.side());
            }
        }
        for i in 0..n {
            if let Some(e) = self.entries.get(prev[i] as usize) {
                acc ^= u64::from(e.next);
            }
            if let Some(e) = self.entries.get(next[i] as usize) {
                acc ^= u64::from(e.prev);
            }
            if let Some(k) = self.side.get(side[i] as usize) {
                acc ^= u64::from(*k == self.side[0]);
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
        let key = Self::stored(flow).ok_or(TableError::UnsupportedKey)?;
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
        let evicted = self.insert_new(h, key, route, state, now.0, 0, 0, isn);
        Ok(InsertOutcome::Inserted { evicted })
    }

    #[allow(clippy::too_many_arguments)]
    fn insert_new(
        &mut self,
        h: u64,
        key: Stored<K>,
        route: Route,
        state: u8,
        last_seen: u64,
        packets: u32,
        bytes: u64,
        isn: u32,
    ) -> Option<FlowKey> {
        let mut evicted = None;
        if self.len == self.capacity {
            let victim = self.victim();
            if self.entries[victim as usize].bytes & PROB_BIT != 0 {
                self.stats.evicted_half_open += 1;
            } else {
                self.stats.evicted_established += 1;
            }
            let flow = self.flow_of(victim);
            let home = (self.hasher.hash(&flow) as usize) & self.index_mask;
            self.remove_entry_from(victim, home);
            evicted = Some(flow);
            self.stats.evicted += 1;
        }
        let probation = if state & ST_MASK == ST_SYN {
            PROB_BIT
        } else {
            0
        };
        let (key, wide) = match key {
            Stored::Narrow(k) => (k, 0),
            Stored::Wide(k) => (V4Key::from_side(self.side_alloc(k)), WIDE_BIT),
        };
        let (peer, local) = match route {
            Route::Local => (0, LOCAL),
            Route::Peer(PeerId(p)) => (p, 0),
        };
        let slot = Slot {
            last_seen,
            bytes: bytes.min(BYTES) | probation | wide,
            packets,
            prev: NIL,
            next: NIL,
            isn,
            peer,
            state: state | local,
            key,
        };
        let e = if self.free != NIL {
            let e = self.free;
            self.free = self.entries[e as usize].next();
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
        let key = Self::stored(flow)?;
        let (pos, e) = self.find(self.hasher.hash(flow), &key)?;
        self.stats.removed += 1;
        let entry = self.public(e);
        self.remove_at(pos, e);
        Some(entry)
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
            let entry = self.public(e);
            e = self.entries[e as usize].next();
            Some(entry)
        })
    }

    /// The flow that the next eviction would remove.
    pub fn lru(&self) -> Option<FlowKey> {
        let v = self.victim();
        (v != NIL).then(|| self.flow_of(v))
    }

    /// Appends the compact export of every entry to `out`, oldest first
    /// (protected entries, then those on probation; an import puts each
    /// back in the segment its state names, in the same order).
    /// Times are stored as ages relative to `now`, so an import on a host
    /// whose clock restarted keeps the idle times. Format: `b"DPRC"`,
    /// version 1, entry count (u32 LE), then per entry: family byte
    /// (bit 0 source IPv6, bit 1 destination IPv6), protocol, source and
    /// destination address (4 or 16 bytes each), ports (u16 BE each), state
    /// byte, peer (u16 LE), age in ns (u64 LE), packets (u32 LE), bytes
    /// (u64 LE): 37 bytes for an IPv4 entry.
    pub fn export(&self, now: Timestamp, out: &mut Vec<u8>) {
        write_export_header(self.len, out);
        self.export_records(now, out);
    }

    /// The records of [`export`](Self::export) without the header.
    pub(crate) fn export_records(&self, now: Timestamp, out: &mut Vec<u8>) {
        for list in [PROTECTED, PROBATION_LIST] {
            self.export_list(list, now, out);
        }
    }

    fn export_list(&self, list: usize, now: Timestamp, out: &mut Vec<u8>) {
        let mut e = self.lists[list].tail;
        while e != NIL {
            let s = &self.entries[e as usize];
            let flow = self.flow_of(e);
            let fam = u8::from(!matches!(flow.src, core::net::IpAddr::V4(_)))
                | u8::from(!matches!(flow.dst, core::net::IpAddr::V4(_))) << 1;
            out.push(fam);
            out.push(u8::from(flow.protocol));
            for a in [flow.src, flow.dst] {
                match a {
                    core::net::IpAddr::V4(v) => out.extend_from_slice(&v.octets()),
                    core::net::IpAddr::V6(v) => out.extend_from_slice(&v.octets()),
                }
            }
            out.extend_from_slice(&flow.src_port.to_be_bytes());
            out.extend_from_slice(&flow.dst_port.to_be_bytes());
            // The format has no ISN field: an imported entry has none.
            out.push(s.state & !ISN_KNOWN);
            out.extend_from_slice(&s.peer.to_le_bytes());
            out.extend_from_slice(&now.0.saturating_sub(s.last_seen).to_le_bytes());
            out.extend_from_slice(&s.packets.to_le_bytes());
            out.extend_from_slice(&(s.bytes & BYTES).to_le_bytes());
            e = s.prev();
        }
    }

    /// Inserts every entry of an [`export`](Self::export) blob, oldest
    /// first, so LRU order is kept; `last_seen` becomes `now - age`.
    /// Existing entries for the same flows are replaced; at capacity the
    /// usual LRU eviction applies. The blob is checked completely before
    /// anything is inserted. Returns the number of entries imported.
    pub fn import(&mut self, bytes: &[u8], now: Timestamp) -> Result<usize> {
        let records = parse_export(bytes)?;
        check_records::<K>(&records)?;
        for r in &records {
            self.import_record(r, now);
        }
        Ok(records.len())
    }

    /// Inserts one checked record (replacing any entry of the same flow).
    pub(crate) fn import_record(&mut self, r: &Record, now: Timestamp) {
        if let Some(key) = Self::stored(&r.flow) {
            let h = self.hasher.hash(&r.flow);
            if let Some((pos, e)) = self.find(h, &key) {
                self.remove_at(pos, e);
            }
            let route = if r.state & LOCAL != 0 {
                Route::Local
            } else {
                Route::Peer(PeerId(r.peer))
            };
            let state = r.state & !LOCAL;
            let last_seen = now.0.saturating_sub(r.age);
            self.insert_new(h, key, route, state, last_seen, r.packets, r.bytes, 0);
        }
    }

    /// Index slots whose distance from home saturated (tests only).
    #[cfg(test)]
    pub(crate) fn saturated_slots(&self) -> usize {
        self.index
            .iter()
            .filter(|&&s| s != 0 && (s >> self.idx_bits) & self.dist_max == self.dist_max)
            .count()
    }

    /// Checks the internal invariants (tests only): index and both LRU
    /// lists agree with the entry counts, every index slot finds its
    /// entry, every entry is in the list its probation flag names, only
    /// `SynSeen` entries (or ones reset while on probation) are on
    /// probation, and the wide-key slab holds exactly the wide entries' keys.
    #[cfg(test)]
    pub(crate) fn check_invariants(&self) {
        let mut n = 0u32;
        let mut side_used = vec![false; self.side.len()];
        for l in [PROTECTED, PROBATION_LIST] {
            let mut m = 0u32;
            let mut prev = NIL;
            let mut e = self.lists[l].head;
            while e != NIL {
                let s = &self.entries[e as usize];
                assert_ne!(s.state & ST_MASK, ST_FREE);
                assert_eq!(s.prev(), prev);
                assert_eq!(s.list(), l);
                if l == PROBATION_LIST {
                    assert!(s.state & ST_MASK == ST_SYN || s.state & RST_SEEN != 0);
                } else {
                    assert!(s.state & ST_MASK != ST_SYN);
                }
                let flow = self.flow_of(e);
                let key = Self::stored(&flow);
                assert!(matches!(key, Some(Stored::Wide(_))) == s.wide());
                if s.wide() {
                    let i = s.key.side() as usize;
                    assert!(!side_used[i]);
                    side_used[i] = true;
                }
                assert_eq!(
                    key.and_then(|k| self.find(self.hasher.hash(&flow), &k))
                        .map(|x| x.1),
                    Some(e)
                );
                prev = e;
                e = s.next();
                m += 1;
            }
            assert_eq!(prev, self.lists[l].tail);
            assert_eq!(m, self.lists[l].len);
            n += m;
        }
        assert_eq!(n, self.len);
        assert!(self.len <= self.capacity);
        assert_eq!(
            self.index.iter().filter(|&&s| s != 0).count(),
            self.len as usize
        );
        for (pos, &s) in self.index.iter().enumerate() {
            if s != 0 {
                let home = self.home((s & self.idx_mask) - 1);
                let d = (pos.wrapping_sub(home) & self.index_mask) as u32;
                assert_eq!((s >> self.idx_bits) & self.dist_max, d.min(self.dist_max));
            }
        }
        for &i in &self.side_free {
            assert!(!side_used[i as usize]);
        }
        assert_eq!(
            side_used.iter().filter(|&&u| u).count() + self.side_free.len(),
            self.side.len()
        );
    }
}

const EXPORT_MAGIC: &[u8; 4] = b"DPRC";
const EXPORT_VERSION: u8 = 1;

/// Writes the export header for `count` records.
pub(crate) fn write_export_header(count: u32, out: &mut Vec<u8>) {
    out.extend_from_slice(EXPORT_MAGIC);
    out.push(EXPORT_VERSION);
    out.extend_from_slice(&count.to_le_bytes());
}

/// Fails unless every record's flow fits the key form `K`.
pub(crate) fn check_records<K: TableKey>(records: &[Record]) -> Result<()> {
    if records.iter().all(|r| K::from_flow(&r.flow).is_some()) {
        Ok(())
    } else {
        Err(TableError::UnsupportedKey)
    }
}

/// One parsed export record.
pub(crate) struct Record {
    pub(crate) flow: FlowKey,
    state: u8,
    peer: u16,
    age: u64,
    packets: u32,
    bytes: u64,
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N]> {
        let end = self.pos.checked_add(N).filter(|&e| e <= self.buf.len());
        let Some(end) = end else {
            return Err(TableError::MalformedExport { offset: self.pos });
        };
        let mut a = [0u8; N];
        a.copy_from_slice(&self.buf[self.pos..end]);
        self.pos = end;
        Ok(a)
    }

    fn addr(&mut self, v6: bool) -> Result<core::net::IpAddr> {
        Ok(if v6 {
            core::net::Ipv6Addr::from(self.take::<16>()?).into()
        } else {
            core::net::Ipv4Addr::from(self.take::<4>()?).into()
        })
    }
}

pub(crate) fn parse_export(bytes: &[u8]) -> Result<Vec<Record>> {
    let mut r = Reader { buf: bytes, pos: 0 };
    if &r.take::<4>()? != EXPORT_MAGIC {
        return Err(TableError::MalformedExport { offset: 0 });
    }
    if r.take::<1>()?[0] != EXPORT_VERSION {
        return Err(TableError::MalformedExport { offset: 4 });
    }
    let count = u32::from_le_bytes(r.take::<4>()?) as usize;
    // Every record is at least 37 bytes: reject absurd counts before allocating.
    if count > bytes.len() / 37 {
        return Err(TableError::MalformedExport { offset: 5 });
    }
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let start = r.pos;
        let [fam] = r.take::<1>()?;
        if fam > 3 {
            return Err(TableError::MalformedExport { offset: start });
        }
        let [proto] = r.take::<1>()?;
        let src = r.addr(fam & 1 != 0)?;
        let dst = r.addr(fam & 2 != 0)?;
        let sp = u16::from_be_bytes(r.take()?);
        let dp = u16::from_be_bytes(r.take()?);
        let state_pos = r.pos;
        let [state] = r.take::<1>()?;
        let st = state & ST_MASK;
        if !(ST_SYN..=ST_CLOSED).contains(&st) || state & 0x40 != 0 {
            return Err(TableError::MalformedExport { offset: state_pos });
        }
        out.push(Record {
            flow: FlowKey::new(IpProtocol::from(proto), src, sp, dst, dp),
            state,
            peer: u16::from_le_bytes(r.take()?),
            age: u64::from_le_bytes(r.take()?),
            packets: u32::from_le_bytes(r.take()?),
            bytes: u64::from_le_bytes(r.take()?),
        });
    }
    if r.pos != bytes.len() {
        return Err(TableError::MalformedExport { offset: r.pos });
    }
    Ok(out)
}
