//! Resident memory per tracked flow at 1,000,000 flows, old layout (the
//! table before issue 17, frozen in `baseline/conn_v1.rs`) against the
//! current one, in one run. Each case runs in a child process of this
//! binary, so that one case's freed memory (kept by the allocator) does not
//! hide the next one's growth.
//!
//! Run: `cargo bench -p dpr-table --bench table_memory`
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "baseline/conn_v1.rs"]
mod conn_v1;

use conn_v1::OldConnTable;
use core::net::{IpAddr, Ipv4Addr};
use dpr_packet::{FlowHasher, FlowKey, IpProtocol};
use dpr_table::{ConnTable, ConnTableConfig, PeerId, Route, TableKey, Timestamp, V4Key, WideKey};
use std::process::Command;

const FLOWS: u32 = 1_000_000;

/// Distinct IPv4 clients to one service address, as in the lab's flood.
fn flow(n: u32) -> FlowKey {
    FlowKey::new(
        IpProtocol::Tcp,
        IpAddr::V4(Ipv4Addr::from_bits(0xc612_0000 | (n >> 15))),
        (n & 0x7fff) as u16 + 1024,
        Ipv4Addr::new(198, 19, 255, 1).into(),
        80,
    )
}

/// The same clients with IPv6 addresses, to an IPv6 service address.
fn flow6(n: u32) -> FlowKey {
    FlowKey::new(
        IpProtocol::Tcp,
        IpAddr::V6(core::net::Ipv6Addr::from_bits(
            0x2001_0db8 << 96 | u128::from(n),
        )),
        1024,
        core::net::Ipv6Addr::LOCALHOST.into(),
        80,
    )
}

/// Resident bytes of this process (`/proc/self/statm`, second field).
fn rss() -> u64 {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = s.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

fn config(capacity: u32) -> ConnTableConfig {
    ConnTableConfig {
        capacity,
        sweep_per_call: 0,
        ..ConnTableConfig::default()
    }
}

/// What a table of either layout offers this bench.
trait Table {
    fn insert(&mut self, f: &FlowKey);
    fn allocated(&self) -> usize;
    fn entry(&self) -> usize;
}

impl<K: TableKey> Table for ConnTable<K> {
    fn insert(&mut self, f: &FlowKey) {
        self.insert_syn(f, Route::Peer(PeerId(1)), 7, Timestamp(1))
            .unwrap();
    }
    fn allocated(&self) -> usize {
        self.allocated_bytes()
    }
    fn entry(&self) -> usize {
        ConnTable::<K>::entry_size()
    }
}

impl<K: TableKey> Table for OldConnTable<K> {
    fn insert(&mut self, f: &FlowKey) {
        self.insert_syn(f, Route::Peer(PeerId(1)), 7, Timestamp(1))
            .unwrap();
    }
    fn allocated(&self) -> usize {
        self.allocated_bytes()
    }
    fn entry(&self) -> usize {
        OldConnTable::<K>::entry_size()
    }
}

fn make(layout: &str, key: &str, capacity: u32) -> Box<dyn Table> {
    let h = FlowHasher::new(0x5eed);
    let c = config(capacity);
    match (layout, key) {
        ("old", "v4") => Box::new(OldConnTable::<V4Key>::new(c, h).unwrap()),
        ("old", "wide") => Box::new(OldConnTable::<WideKey>::new(c, h).unwrap()),
        ("new", "v4") => Box::new(ConnTable::<V4Key>::new(c, h).unwrap()),
        ("new", "wide") => Box::new(ConnTable::<WideKey>::new(c, h).unwrap()),
        _ => panic!("unknown case"),
    }
}

/// One case, in this (child) process: `tables` tables of `capacity`, the
/// first filled with `FLOWS` flows (the engine's pair: `routes` filled,
/// `served` empty). Prints one line of figures.
fn child(layout: &str, key: &str, capacity: u32, tables: usize) {
    let v6 = key == "wide6";
    let key = if v6 { "wide" } else { key };
    let r0 = rss();
    let mut ts: Vec<Box<dyn Table>> = (0..tables).map(|_| make(layout, key, capacity)).collect();
    let r1 = rss();
    for n in 0..FLOWS {
        ts[0].insert(&if v6 { flow6(n) } else { flow(n) });
    }
    let r2 = rss();
    let alloc: usize = ts.iter().map(|t| t.allocated()).sum();
    println!(
        "{layout:>3} {key:>4} {} cap {capacity:>9} x{tables}  entry {:>2} B  allocated {:>6.1} MiB  \
         RSS empty +{:>5.1} MiB  filled +{:>6.1} MiB  = {:>5.1} B/flow",
        if v6 { "IPv6" } else { "IPv4" },
        ts[0].entry(),
        alloc as f64 / 1048576.0,
        (r1 - r0) as f64 / 1048576.0,
        (r2 - r0) as f64 / 1048576.0,
        (r2 - r0) as f64 / f64::from(FLOWS),
    );
    std::hint::black_box(&ts);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--case") {
        let cap: u32 = args[i + 3].parse().unwrap();
        let tables: usize = args[i + 4].parse().unwrap();
        child(&args[i + 1], &args[i + 2], cap, tables);
        return;
    }
    if args.iter().any(|a| a == "--list") {
        return;
    }
    println!("RSS per tracked flow, {FLOWS} flows inserted (SYNs), one process per case:");
    let exe = std::env::current_exe().unwrap();
    for (cap, tables) in [(FLOWS, 1usize), (1_100_000, 1), (1_100_000, 2)] {
        for key in ["v4", "wide", "wide6"] {
            for layout in ["old", "new"] {
                let out = Command::new(&exe)
                    .args(["--case", layout, key, &cap.to_string(), &tables.to_string()])
                    .output()
                    .unwrap();
                print!("{}", String::from_utf8_lossy(&out.stdout));
                eprint!("{}", String::from_utf8_lossy(&out.stderr));
            }
        }
    }
}
