//! Fuzz target `engine`: an engine with full tables fed arbitrary frames;
//! the checks live in `dpr_router::fuzz_checks::engine_frames`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| dpr_router::fuzz_checks::engine_frames(data));
