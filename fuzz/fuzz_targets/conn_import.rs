//! Fuzz target `conn_import`: `ConnTable::import` of arbitrary bytes (the
//! export format a table is saved and restored in). It either refuses the
//! blob and leaves the table exactly as it was, or imports it; an imported
//! table exports again to a blob that imports to the same entries, within
//! the table's capacity. Both key forms (IPv4-only and wide).
#![no_main]
use dpr_packet::FlowHasher;
use dpr_table::{ConnTable, ConnTableConfig, TableKey, Timestamp, V4Key, WideKey};
use std::net::{IpAddr, Ipv4Addr};

fn check<K: TableKey>(data: &[u8]) {
    let cfg = ConnTableConfig {
        capacity: 64,
        ..ConnTableConfig::default()
    };
    let now = Timestamp(1_000_000_000_000);
    let mut t: ConnTable<K> = match ConnTable::new(cfg, FlowHasher::new(7)) {
        Ok(t) => t,
        Err(_) => return,
    };
    // One entry that a refused import must leave alone.
    let flow = dpr_packet::FlowKey::new(
        dpr_packet::IpProtocol::Tcp,
        IpAddr::V4(Ipv4Addr::new(198, 18, 100, 1)),
        40_000,
        IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1)),
        80,
    );
    let _ = t.insert(&flow, dpr_table::Route::Local, now);
    let before: Vec<_> = t.iter().collect();
    match t.import(data, now) {
        Err(_) => assert_eq!(t.iter().collect::<Vec<_>>(), before, "a refused import changed the table"),
        Ok(_) => {
            assert!(t.len() <= t.capacity());
            let mut blob = Vec::new();
            t.export(now, &mut blob);
            let mut u: ConnTable<K> = match ConnTable::new(cfg, FlowHasher::new(7)) {
                Ok(u) => u,
                Err(_) => return,
            };
            let n = u.import(&blob, now).expect("an export imports");
            assert_eq!(n, t.len());
            let key = |e: &dpr_table::ConnEntry| (e.key, e.route, e.state);
            let a: Vec<_> = t.iter().map(|e| key(&e)).collect();
            let b: Vec<_> = u.iter().map(|e| key(&e)).collect();
            assert_eq!(a, b, "export then import changed the entries");
        }
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    check::<V4Key>(data);
    check::<WideKey>(data);
});
