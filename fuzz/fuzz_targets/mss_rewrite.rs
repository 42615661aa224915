//! Fuzz target `mss_rewrite`: the checks live in `dpr_packet::fuzz_checks::mss_rewrite`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| dpr_packet::fuzz_checks::mss_rewrite(data));
