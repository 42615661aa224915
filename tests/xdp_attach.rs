//! Attaching the program to a veth in a network namespace, in each mode, and
//! detaching it by dropping the link (root).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use dpr_lab::netns::{VethPair, in_netns};
use dpr_tests::root_or_skip;
use dpr_xdp::ifindex;
use dpr_xdp::{ProgramConfig, RouterProgram, XdpMode};

/// `ip -d link show DEV` inside the router namespace.
fn link_details(pair: &VethPair) -> String {
    let out = pair
        .ns_a
        .exec(&["ip", "-d", "link", "show", &pair.dev_a])
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The XDP mode `ip` reports: "xdpgeneric", "xdp" (native) or none.
fn attached_mode(pair: &VethPair) -> Option<&'static str> {
    let d = link_details(pair);
    if d.contains("xdpgeneric") {
        Some("generic")
    } else if d.contains(" xdp ") || d.contains("prog/xdp") {
        Some("native")
    } else {
        None
    }
}

#[test]
fn attach_each_mode_and_detach_on_drop() {
    let Some(_g) = root_or_skip("attach_each_mode_and_detach_on_drop") else {
        return;
    };
    let pair = VethPair::new(41).unwrap();
    in_netns(&pair.ns_a, || {
        let prog = RouterProgram::load(&ProgramConfig::default()).unwrap();
        let ifx = ifindex(&pair.dev_a).unwrap();
        for (mode, want) in [
            (XdpMode::Generic, "generic"),
            (XdpMode::Native, "native"),
            // veth has a native XDP hook, so Auto picks it.
            (XdpMode::Auto, "native"),
        ] {
            let link = prog.attach(ifx, mode).unwrap();
            assert_eq!(
                attached_mode(&pair),
                Some(want),
                "{mode:?}: {}",
                link_details(&pair)
            );
            assert_eq!(link.ifindex(), ifx);
            // A second attachment is refused while the link holds the hook.
            assert!(prog.attach(ifx, mode).is_err(), "{mode:?} attached twice");
            drop(link);
            assert_eq!(
                attached_mode(&pair),
                None,
                "{mode:?} still attached after drop"
            );
        }
    })
    .unwrap();
}

#[test]
fn attach_to_a_missing_interface_fails() {
    let Some(_g) = root_or_skip("attach_to_a_missing_interface_fails") else {
        return;
    };
    let prog = RouterProgram::load(&ProgramConfig::default()).unwrap();
    assert!(prog.attach(999_999, XdpMode::Generic).is_err());
}
