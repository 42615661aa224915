//! Fuzz target `virtio`: the checks live in `dpr_packet::fuzz_checks::virtio`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| dpr_packet::fuzz_checks::virtio(data));
