//! Fuzz target `recovery`: recovery replies as a restarted host receives
//! them, authentic and answering its request, so the bytes reach the code
//! that restores routes (`dpr_router::fuzz_checks::recovery_replies`: no
//! route a reply did not name, no change on refusal, the recovery ends).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    dpr_router::fuzz_checks::recovery_replies(data);
});
