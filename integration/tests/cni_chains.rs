//! The test network's teardown leaves the node's firewall as it found it:
//! CNI portmap's top-level chains (`CNI-HOSTPORT-*`) that were there before
//! a test environment started are never deleted, even when they are empty.

use std::process::Command;

use tidal_integration::env::CriEnv;

fn iptables(args: &[&str]) -> std::process::Output {
    Command::new("iptables")
        .args(["-t", "nat"])
        .args(args)
        .output()
        .expect("run iptables")
}

fn chain_exists(chain: &str) -> bool {
    iptables(&["-S", chain]).status.success()
}

#[test]
fn portmap_chains_that_were_there_before_are_kept() {
    const CHAIN: &str = "CNI-HOSTPORT-MASQ";
    // Empty, as on a node whose other pods have no host ports right now.
    let ours = !chain_exists(CHAIN);
    if ours {
        assert!(iptables(&["-N", CHAIN]).status.success(), "iptables -N");
    }
    let env = CriEnv::start("cnichains");
    drop(env);
    let kept = chain_exists(CHAIN);
    if ours {
        iptables(&["-X", CHAIN]);
    }
    assert!(
        kept,
        "{CHAIN} existed before the test network and was deleted with it"
    );
}
