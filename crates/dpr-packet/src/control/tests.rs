use super::*;
use crate::error::ErrorKind;
use proptest::prelude::*;
use std::vec;
use std::vec::Vec;

fn header() -> Header {
    Header {
        kind: MessageKind::Report,
        key_id: 7,
        sender: 3,
        incarnation: 0x0102_0304_0506_0708,
        seq: 42,
        sent_at_ns: 1_700_000_000_000_000_000,
    }
}

fn entry(origin: u16) -> LoadEntry {
    LoadEntry {
        origin,
        state: HostState::Active,
        incarnation: 9,
        seq: 42,
        age_ms: 0,
        open_connections: 17,
        cpu_utilisation: 0.25,
        redirected_connections: 3,
        active_sockets: 20,
        capacity_cpu: 1.0,
        capacity_memory: 2.0,
    }
}

fn v4(a: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(198, 18, 1, a))
}

fn report_bytes(entries: &[LoadEntry], addrs: &[IpAddr]) -> Vec<u8> {
    let mut buf = vec![0u8; MAX_MESSAGE_LEN];
    let n = emit_report(&mut buf, &header(), entries, addrs).unwrap();
    buf.truncate(n + TAG_LEN);
    buf[n..].fill(0xAB);
    buf
}

fn malformed(e: Error) -> Malformed {
    match e.kind {
        ErrorKind::Malformed(m) => m,
        ErrorKind::TooShort => panic!("expected malformed, got {e}"),
    }
}

#[test]
fn header_layout_is_as_documented() {
    let b = report_bytes(&[entry(3)], &[]);
    assert_eq!(&b[0..2], b"DR");
    assert_eq!(b[2], 1);
    assert_eq!(b[3], 1);
    assert_eq!(&b[4..6], &[0, 7]);
    assert_eq!(usize::from(u16::from_be_bytes([b[6], b[7]])), 4 + ENTRY_LEN);
    assert_eq!(&b[8..10], &[0, 3]);
    assert_eq!(&b[10..12], &[0, 0]);
    assert_eq!(&b[12..20], &[1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(&b[20..28], &42u64.to_be_bytes());
    assert_eq!(b.len(), HEADER_LEN + 4 + ENTRY_LEN + TAG_LEN);
    // The entry: origin, state, reserved, incarnation.
    let e = &b[HEADER_LEN + 4..];
    assert_eq!(&e[0..4], &[0, 3, 0, 0]);
    assert_eq!(&e[4..12], &9u64.to_be_bytes());
    assert_eq!(&e[28..32], &0.25f32.to_bits().to_be_bytes());
}

#[test]
fn report_round_trips() {
    let mut relayed = entry(5);
    relayed.state = HostState::Draining;
    relayed.age_ms = 350;
    let v6 = IpAddr::V6("2001:2::10:1".parse().unwrap());
    let b = report_bytes(&[entry(3), relayed], &[v4(1), v6]);
    let m = parse(&b).unwrap();
    assert_eq!(m.header, header());
    assert_eq!(m.signed.len(), b.len() - TAG_LEN);
    assert_eq!(m.tag, &[0xAB; TAG_LEN]);
    let Body::Report(r) = m.body else {
        panic!("not a report")
    };
    assert_eq!(r.entries().len(), 2);
    assert_eq!(r.own(), Some(entry(3)));
    assert_eq!(r.entries().nth(1), Some(relayed));
    assert_eq!(r.service_addrs().collect::<Vec<_>>(), vec![v4(1), v6]);
    assert_eq!(r.service_addr_count(), 2);
}

#[test]
fn recovery_messages_round_trip() {
    let mut buf = vec![0u8; MAX_MESSAGE_LEN];
    let n = emit_recovery_request(&mut buf, &header(), 0xdead_beef).unwrap();
    let m = parse(&buf[..n + TAG_LEN]).unwrap();
    assert_eq!(m.header.kind, MessageKind::RecoveryRequest);
    assert!(matches!(
        m.body,
        Body::RecoveryRequest {
            request_id: 0xdead_beef,
            known_chunks: 0,
            missing,
        } if missing.is_empty()
    ));
    // Version 1's request: the second word reserved, zero: the same bytes.
    assert_eq!(n, HEADER_LEN + REQUEST_LEN);
    assert_eq!(&buf[HEADER_LEN + 4..HEADER_LEN + 8], &[0, 0, 0, 0]);

    let f4 = FlowKey::new(IpProtocol::Tcp, v4(100), 40000, v4(1), 80);
    let f6 = FlowKey::new(
        IpProtocol::Tcp,
        "2001:2::64:1".parse().unwrap(),
        40001,
        "2001:2::10:1".parse().unwrap(),
        443,
    );
    let n = emit_recovery_reply(&mut buf, &header(), 77, 1, 3, &[f4, f6]).unwrap();
    assert_eq!(n, HEADER_LEN + REPLY_PREFIX_LEN + 14 + 38);
    let m = parse(&buf[..n + TAG_LEN]).unwrap();
    let Body::RecoveryReply(r) = m.body else {
        panic!("not a reply")
    };
    assert_eq!((r.request_id, r.chunk, r.chunks), (77, 1, 3));
    assert_eq!(r.flows().collect::<Vec<_>>(), vec![f4, f6]);
    assert_eq!(r.flow_count(), 2);
}

#[test]
fn idle_advert_round_trips_and_its_word_is_reserved() {
    let mut buf = vec![0u8; 256];
    let n = emit_idle_advert(&mut buf, &header()).unwrap();
    assert_eq!(n, HEADER_LEN + IDLE_LEN);
    assert_eq!(buf[3], 5, "kind 5");
    let m = parse(&buf[..n + TAG_LEN]).unwrap();
    assert_eq!(m.header.kind, MessageKind::IdleAdvert);
    assert!(matches!(m.body, Body::IdleAdvert));
    crate::fuzz_checks::control(&buf[..n + TAG_LEN]);
    buf[HEADER_LEN] = 1;
    let e = parse(&buf[..n + TAG_LEN]).unwrap_err();
    assert_eq!(usize::from(e.offset), HEADER_LEN);
    // A longer body: the lengths disagree.
    let mut long = vec![0u8; 256];
    let n = emit_cut_notice(&mut long, &header(), 0, 1, &[]).unwrap();
    long[3] = 5;
    assert!(parse(&long[..n + TAG_LEN]).is_err());
}

#[test]
fn cut_notice_round_trips_and_its_request_id_is_reserved() {
    let mut buf = vec![0u8; 4096];
    let f4 = FlowKey::new(IpProtocol::Tcp, v4(100), 40000, v4(1), 80);
    let n = emit_cut_notice(&mut buf, &header(), 0, 1, &[f4]).unwrap();
    assert_eq!(n, HEADER_LEN + REPLY_PREFIX_LEN + 14);
    assert_eq!(buf[3], 4, "kind 4");
    let m = parse(&buf[..n + TAG_LEN]).unwrap();
    assert_eq!(m.header.kind, MessageKind::CutNotice);
    let Body::CutNotice(r) = m.body else {
        panic!("not a cut notice")
    };
    assert_eq!((r.request_id, r.chunk, r.chunks), (0, 0, 1));
    assert_eq!(r.flows().collect::<Vec<_>>(), vec![f4]);
    crate::fuzz_checks::control(&buf[..n + TAG_LEN]);
    // A request id in a cut notice: malformed, at the field.
    buf[HEADER_LEN + 3] = 1;
    let e = parse(&buf[..n + TAG_LEN]).unwrap_err();
    assert_eq!(usize::from(e.offset), HEADER_LEN);
}

#[test]
fn flow_query_and_claim_round_trip_and_stand_alone() {
    let mut buf = vec![0u8; 4096];
    let f4 = FlowKey::new(IpProtocol::Tcp, v4(100), 40000, v4(1), 80);
    let f6 = FlowKey::new(
        IpProtocol::Tcp,
        "2001:db8::9".parse().unwrap(),
        40001,
        "2001:db8::10".parse().unwrap(),
        443,
    );
    for kind in [MessageKind::FlowQuery, MessageKind::FlowClaim] {
        let n = if kind == MessageKind::FlowQuery {
            emit_flow_query(&mut buf, &header(), 9, &[f4, f6]).unwrap()
        } else {
            emit_flow_claim(&mut buf, &header(), 9, &[f4, f6]).unwrap()
        };
        assert_eq!(n, HEADER_LEN + REPLY_PREFIX_LEN + 14 + 38);
        assert_eq!(buf[3], if kind == MessageKind::FlowQuery { 7 } else { 8 });
        let m = parse(&buf[..n + TAG_LEN]).unwrap();
        assert_eq!(m.header.kind, kind);
        let r = match m.body {
            Body::FlowQuery(r) | Body::FlowClaim(r) => r,
            _ => panic!("not a flow query or claim"),
        };
        assert_eq!((r.request_id, r.chunk, r.chunks), (9, 0, 1));
        assert_eq!(r.flows().collect::<Vec<_>>(), vec![f4, f6]);
        crate::fuzz_checks::control(&buf[..n + TAG_LEN]);
        // A chunk count other than 1: malformed, at the chunk field.
        buf[HEADER_LEN + 7] = 2;
        let e = parse(&buf[..n + TAG_LEN]).unwrap_err();
        assert_eq!(usize::from(e.offset), HEADER_LEN + 4);
        assert_eq!(malformed(e), Malformed::FieldValue);
    }
    // The documented capacity: that many IPv4 flows fit one message.
    let many = vec![f4; MAX_FLOWS_PER_QUERY];
    assert!(emit_flow_query(&mut buf, &header(), 1, &many).is_ok());
    let too_many = vec![f4; MAX_FLOWS_PER_QUERY + 1];
    assert!(emit_flow_query(&mut buf, &header(), 1, &too_many).is_err());
}

#[test]
fn emit_refuses_what_parse_would_reject() {
    let mut buf = vec![0u8; 4096];
    let h = header();
    assert!(emit_report(&mut buf, &h, &[], &[]).is_err());
    let mut e = entry(1);
    e.cpu_utilisation = f32::NAN;
    assert!(emit_report(&mut buf, &h, &[e], &[]).is_err());
    let too_many = vec![entry(1); MAX_ENTRIES + 1];
    assert!(emit_report(&mut buf, &h, &too_many, &[]).is_err());
    assert!(emit_report(&mut buf, &h, &vec![entry(1); MAX_ENTRIES], &[]).is_ok());
    let udp = FlowKey::new(IpProtocol::Udp, v4(100), 1, v4(1), 2);
    assert!(emit_recovery_reply(&mut buf, &h, 1, 0, 1, &[udp]).is_err());
    assert!(emit_recovery_reply(&mut buf, &h, 1, 1, 1, &[]).is_err());
    let mixed = FlowKey::new(IpProtocol::Tcp, v4(100), 1, "2001:2::1".parse().unwrap(), 2);
    assert!(emit_recovery_reply(&mut buf, &h, 1, 0, 1, &[mixed]).is_err());
    // A buffer too small is an error, never a panic.
    assert!(emit_report(&mut [0u8; 40], &h, &[entry(1)], &[]).is_err());
    // Flows fill at most one message.
    let f = FlowKey::new(IpProtocol::Tcp, v4(100), 1, v4(1), 80);
    assert!(emit_recovery_reply(&mut buf, &h, 1, 0, 1, &vec![f; 100]).is_err());
}

#[test]
fn every_truncation_is_too_short_or_a_length_error() {
    let b = report_bytes(&[entry(3)], &[v4(1)]);
    for cut in 0..b.len() {
        let e = parse(&b[..cut]).unwrap_err();
        assert_eq!(e.layer, Layer::Control);
        assert!(
            e.is_too_short() || malformed(e) == Malformed::TotalLength,
            "cut {cut}: {e}"
        );
    }
}

#[test]
fn lying_fields_are_rejected() {
    let good = report_bytes(&[entry(3)], &[v4(1)]);
    let check = |at: usize, v: u8, want: Malformed| {
        let mut b = good.clone();
        b[at] = v;
        let e = parse(&b).unwrap_err();
        assert_eq!(malformed(e), want, "byte {at} = {v}: {e}");
    };
    check(0, b'X', Malformed::Magic);
    check(2, 2, Malformed::Version);
    check(7, good[7] + 1, Malformed::TotalLength);
    check(7, good[7] - 1, Malformed::TotalLength);
    check(11, 1, Malformed::FieldValue);
    let body = HEADER_LEN;
    check(body, 0, Malformed::FieldValue); // no entries
    check(body, 2, Malformed::TotalLength); // more entries than bytes
    check(body + 1, 2, Malformed::TotalLength); // more addresses than bytes
    check(body + 3, 1, Malformed::FieldValue); // reserved
    let e = body + 4;
    check(e + 2, 3, Malformed::FieldValue); // state
    check(e + 3, 1, Malformed::FieldValue); // reserved
    check(e + 28, 0xff, Malformed::FieldValue); // cpu: NaN
    check(e + 40, 0x80, Malformed::FieldValue); // capacity: negative
    check(e + ENTRY_LEN, 5, Malformed::AddressFamily);
    // Trailing bytes the counts do not explain.
    let mut b = report_bytes(&[entry(3)], &[v4(1), v4(2)]);
    b[body + 1] = 1;
    assert_eq!(malformed(parse(&b).unwrap_err()), Malformed::TotalLength);
}

#[test]
fn bad_replies_are_rejected() {
    let mut buf = vec![0u8; MAX_MESSAGE_LEN];
    let f = FlowKey::new(IpProtocol::Tcp, v4(100), 40000, v4(1), 80);
    let n = emit_recovery_reply(&mut buf, &header(), 1, 0, 2, &[f]).unwrap();
    let good = buf[..n + TAG_LEN].to_vec();
    assert!(parse(&good).is_ok());
    let body = HEADER_LEN;
    for (at, v, want) in [
        (body + 5, 2, Malformed::FieldValue),  // chunk == chunks
        (body + 7, 0, Malformed::FieldValue),  // no chunks
        (body + 11, 1, Malformed::FieldValue), // reserved
        (body + 9, 2, Malformed::TotalLength), // more flows than bytes
        (body + 9, 0, Malformed::TotalLength), // fewer
        (body + REPLY_PREFIX_LEN, 9, Malformed::AddressFamily),
        (body + REPLY_PREFIX_LEN + 1, 17, Malformed::Protocol),
    ] {
        let mut b = good.clone();
        b[at] = v;
        assert_eq!(malformed(parse(&b).unwrap_err()), want, "byte {at}");
    }
    let n = emit_recovery_request(&mut buf, &header(), 1).unwrap();
    let mut b = buf[..n + TAG_LEN].to_vec();
    b[HEADER_LEN + 7] = 1;
    assert_eq!(malformed(parse(&b).unwrap_err()), Malformed::FieldValue);
}

#[test]
fn unknown_kinds_are_data() {
    let mut b = report_bytes(&[entry(3)], &[]);
    b[3] = 200;
    let m = parse(&b).unwrap();
    assert_eq!(m.header.kind, MessageKind::Unknown(200));
    assert!(matches!(m.body, Body::Unknown(x) if x.len() == 4 + ENTRY_LEN));
}

#[test]
fn sizes() {
    // The figures docs/cluster-protocol.md quotes.
    assert_eq!(HEADER_LEN + TAG_LEN, 68);
    assert_eq!(MAX_ENTRIES, 27);
    assert_eq!(report_bytes(&[entry(1)], &[v4(1)]).len(), 125);
}

fn any_entry() -> impl Strategy<Value = LoadEntry> {
    (
        any::<(u16, u8, u64, u64, u32)>(),
        any::<(u32, u32, u32)>(),
        (0.0f32..1e6, 0.0f32..1e6, 0.0f32..1e6),
    )
        .prop_map(
            |((origin, st, inc, seq, age), (o, r, a), (cpu, cc, cm))| LoadEntry {
                origin,
                state: [HostState::Active, HostState::Draining, HostState::Leaving]
                    [usize::from(st % 3)],
                incarnation: inc,
                seq,
                age_ms: age,
                open_connections: o,
                cpu_utilisation: cpu,
                redirected_connections: r,
                active_sockets: a,
                capacity_cpu: cc,
                capacity_memory: cm,
            },
        )
}

fn any_addr() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|a| IpAddr::V4(a.into())),
        any::<[u8; 16]>().prop_map(|a| IpAddr::V6(a.into())),
    ]
}

proptest! {
    #[test]
    fn any_report_round_trips(
        h in any::<(u16, u16, u64, u64, u64)>(),
        entries in proptest::collection::vec(any_entry(), 1..=12),
        addrs in proptest::collection::vec(any_addr(), 0..8),
    ) {
        let header = Header { kind: MessageKind::Report, key_id: h.0, sender: h.1, incarnation: h.2, seq: h.3, sent_at_ns: h.4 };
        let mut buf = vec![0u8; MAX_MESSAGE_LEN];
        let n = emit_report(&mut buf, &header, &entries, &addrs).unwrap();
        let m = parse(&buf[..n + TAG_LEN]).unwrap();
        prop_assert_eq!(m.header, header);
        let Body::Report(r) = m.body else { panic!() };
        prop_assert_eq!(r.entries().collect::<Vec<_>>(), entries);
        prop_assert_eq!(r.service_addrs().collect::<Vec<_>>(), addrs);
    }

    #[test]
    fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..600)) {
        if let Ok(m) = parse(&b) {
            match m.body {
                Body::Report(r) => { let _ = r.entries().count() + r.service_addrs().count(); }
                Body::RecoveryReply(r) => { let _ = r.flows().count(); }
                _ => {}
            }
        }
    }
}

/// The fuzz corpus's seeds of the newer kinds parse as those kinds, so
/// the fuzzer starts from valid messages of each.
#[test]
fn corpus_seeds_of_the_newer_kinds_parse() {
    let idle = include_bytes!("../../../../fuzz/corpus/control/seed-idle-advert");
    assert!(matches!(parse(idle).unwrap().body, Body::IdleAdvert));
    let cut = include_bytes!("../../../../fuzz/corpus/control/seed-cut-notice");
    let Body::CutNotice(r) = parse(cut).unwrap().body else {
        panic!("not a cut notice")
    };
    assert_eq!(r.flow_count(), 1);
    let q = include_bytes!("../../../../fuzz/corpus/control/flow_query_raw");
    let Body::FlowQuery(r) = parse(&q[1..]).unwrap().body else {
        panic!("not a flow query")
    };
    assert_eq!(r.flow_count(), 2);
    let c = include_bytes!("../../../../fuzz/corpus/control/flow_claim_raw");
    assert!(matches!(parse(&c[1..]).unwrap().body, Body::FlowClaim(_)));
}

#[test]
fn a_request_names_the_chunks_the_asker_lacks() {
    let mut buf = vec![0u8; MAX_MESSAGE_LEN];
    let ranges = [(0u16, 0u16), (5, 9), (11, 11)];
    let n = emit_recovery_request_missing(&mut buf, &header(), 7, 12, &ranges).unwrap();
    assert_eq!(n, HEADER_LEN + REQUEST_LEN + 3 * RANGE_LEN);
    let m = parse(&buf[..n + TAG_LEN]).unwrap();
    let Body::RecoveryRequest {
        request_id,
        known_chunks,
        missing,
    } = m.body
    else {
        panic!("not a request")
    };
    assert_eq!((request_id, known_chunks), (7, 12));
    assert_eq!(missing.iter().collect::<Vec<_>>(), ranges.to_vec());
    crate::fuzz_checks::control(&buf[..n + TAG_LEN]);
    // The most ranges fit one message; one more does not.
    let many: Vec<(u16, u16)> = (0..MAX_REQUEST_RANGES as u16)
        .map(|i| (2 * i, 2 * i))
        .collect();
    let n = emit_recovery_request_missing(&mut buf, &header(), 7, u16::MAX, &many).unwrap();
    assert!(n + TAG_LEN <= MAX_MESSAGE_LEN);
    crate::fuzz_checks::control(&buf[..n + TAG_LEN]);
    let mut more = many.clone();
    more.push((60_000, 60_000));
    assert!(emit_recovery_request_missing(&mut buf, &header(), 7, u16::MAX, &more).is_err());
    // Refused on emit: ranges without a count, out of order, overlapping,
    // reversed, beyond the count.
    for (known, bad) in [
        (0u16, vec![(0u16, 0u16)]),
        (10, vec![(5, 6), (1, 2)]),
        (10, vec![(1, 5), (5, 6)]),
        (10, vec![(6, 5)]),
        (10, vec![(9, 10)]),
    ] {
        assert!(
            emit_recovery_request_missing(&mut buf, &header(), 7, known, &bad).is_err(),
            "{known} {bad:?}"
        );
    }
    // And on parse.
    let n = emit_recovery_request_missing(&mut buf, &header(), 7, 12, &ranges).unwrap();
    let good = buf[..n + TAG_LEN].to_vec();
    let r0 = HEADER_LEN + REQUEST_LEN;
    for (at, v, want) in [
        (HEADER_LEN + 5, 9, Malformed::FieldValue), // known 9: (5, 9) and (11, 11) beyond it
        (r0 + 5, 10, Malformed::FieldValue),        // (10, 9): reversed
        (r0 + 9, 9, Malformed::FieldValue),         // (9, 11): overlaps (5, 9)
        (HEADER_LEN + 7, 4, Malformed::TotalLength), // more ranges than bytes
        (HEADER_LEN + 7, 2, Malformed::TotalLength), // fewer
    ] {
        let mut b = good.clone();
        b[at] = v;
        assert_eq!(malformed(parse(&b).unwrap_err()), want, "byte {at} = {v}");
    }
    let mut b = good.clone();
    b[HEADER_LEN + 4] = 0;
    b[HEADER_LEN + 5] = 0;
    assert_eq!(
        malformed(parse(&b).unwrap_err()),
        Malformed::FieldValue,
        "ranges without a count"
    );
}

#[test]
fn probe_round_trips_and_its_word_is_reserved() {
    let mut buf = vec![0u8; 256];
    let n = emit_probe(&mut buf, &header()).unwrap();
    assert_eq!(n, HEADER_LEN + PROBE_LEN);
    assert_eq!(buf[3], 6, "kind 6");
    let m = parse(&buf[..n + TAG_LEN]).unwrap();
    assert_eq!(m.header.kind, MessageKind::Probe);
    assert!(matches!(m.body, Body::Probe));
    crate::fuzz_checks::control(&buf[..n + TAG_LEN]);
    buf[HEADER_LEN + 3] = 1;
    let e = parse(&buf[..n + TAG_LEN]).unwrap_err();
    assert_eq!(usize::from(e.offset), HEADER_LEN);
}
