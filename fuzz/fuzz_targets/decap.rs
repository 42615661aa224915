//! Fuzz target `decap`: the checks live in `dpr_packet::fuzz_checks::decap`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| dpr_packet::fuzz_checks::decap(data));
