//! Fuzz target `icmp_quote`: the checks live in `dpr_packet::fuzz_checks::icmp_quote`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| dpr_packet::fuzz_checks::icmp_quote(data));
