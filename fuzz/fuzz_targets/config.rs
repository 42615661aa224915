//! Fuzz target `config`: `dprd`'s configuration file. Any text is either
//! refused with an error naming a field (never a panic), or accepted, and
//! then every configuration built from it (engine, cluster protocol,
//! policy, host plan inputs) is built without a panic.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match dprd::config::Config::parse(text) {
        Err(e) => {
            let _ = e.to_string();
        }
        Ok(c) => {
            let _ = c.engine_config();
            let _ = c.node_config();
            let _ = c.make_policy();
            let _ = c.peer_service_v4();
            let _ = c.xdp_plan();
            let _ = c.capacity();
            let _ = c.load_table_config();
        }
    }
});
