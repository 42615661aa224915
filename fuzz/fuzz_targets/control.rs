//! Fuzz target `control`: the cluster protocol's message decoder
//! (`dpr_packet::fuzz_checks::control`: parse, re-emit, compare) and the
//! protocol node behind it (`dpr_router::fuzz_checks::control_datagram`:
//! authentication, replay, and no table change on refusal). The first byte
//! steers the node check; the decoder sees the message bytes after it.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Some((_, msg)) = data.split_first() {
        dpr_packet::fuzz_checks::control(msg);
    }
    let _ = dpr_router::fuzz_checks::control_datagram(data);
});
