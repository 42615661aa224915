//! Fuzz target `gre`: the checks live in `dpr_packet::fuzz_checks::gre`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| dpr_packet::fuzz_checks::gre(data));
