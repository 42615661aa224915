//! Fuzz target `encap_roundtrip`: the checks live in `dpr_packet::fuzz_checks::encap_roundtrip`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| dpr_packet::fuzz_checks::encap_roundtrip(data));
