//! A node cut off from the fabric: how long the top-of-rack keeps its routes, with BFD on the
//! underlay sessions (300 ms x 3, `Fabric::underlay_bfd`) and without (BGP's hold timer: 9 s with
//! FRR's `datacenter` defaults). The withdrawal of a node's routes is what makes the fabric turn
//! to the other node of an Ethernet segment (mass withdrawal of its type-1 routes); here the
//! node's type-3 route stands for all of them (a segment needs a bond, which this kernel lacks:
//! `fabric_with_a_multihomed_host` in the VM lab measures the type-1 routes themselves).
//!
//!     cargo bench -p evpn-tests --bench failover
//!
//! Settings: EVPN_BENCH_ROUNDS (default 5 per mode), EVPN_TEST_CONTROL_PLANE (reuse a running
//! control plane). Needs root; brings the lab down before and after.
//!
//! Each round cuts node 1's link on the node's side (`lab.sh uplink evl-n1 down`), so the TOR
//! sees no carrier change on its bridge and has only BFD or the hold timer to go by, then polls
//! the TOR's EVPN table every 10 ms until node 1's type-3 route is gone, restores the link and
//! waits for the session and the route to come back.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a benchmark that cannot set up should panic")]

use std::time::Duration;

use evpn_tests::lab::{Fabric, agent_binary, bench_main, median_min_max_ms, ms, until};
use serde_json::json;
use tokio::time::Instant;

const POLL: Duration = Duration::from_millis(10);
const ROUND_DEADLINE: Duration = Duration::from_secs(60);

fn main() {
    bench_main(5, run);
}

async fn run(rounds: usize) {
    assert!(agent_binary().exists());
    let mut f = Fabric::up("frr").await;
    let network = f.name("fo");
    f.network(&network, "Layer2", json!(["10.71.0.0/24"])).await;
    f.evpn(&network, &network, json!({"macVRF": {}})).await;
    until("node 1's type-3 route at the TOR", || n1_type3(&f)).await;
    let mut results = Vec::new();
    // Off first: v1.20's server-side apply leaves `null` behind when an apply drops a list.
    for bfd in [false, true] {
        f.underlay_bfd(bfd).await;
        if bfd {
            until("BFD up on both sessions at the TOR", || f.bfd_up_at_tor()).await;
        }
        let mut times = Vec::new();
        for round in 0..rounds {
            let cut = Instant::now();
            f.lab.ok(&["uplink", "evl-n1", "down"]).await;
            while n1_type3(&f).await {
                assert!(cut.elapsed() < ROUND_DEADLINE, "node 1's route stays at the TOR");
                tokio::time::sleep(POLL).await;
            }
            let withdrawn = cut.elapsed();
            println!("BFD {}: round {round}: withdrawn at the TOR {:.0} ms after the cut", on_off(bfd), ms(withdrawn));
            times.push(withdrawn);
            f.lab.ok(&["uplink", "evl-n1", "up"]).await;
            until("node 1's type-3 route back at the TOR", || n1_type3(&f)).await;
            if bfd {
                until("BFD up again on both sessions", || f.bfd_up_at_tor()).await;
            }
        }
        results.push((bfd, times));
    }
    f.delete_evpn(&network).await;
    println!(
        "\nNode 1 cut off: its routes withdrawn at the TOR, {rounds} rounds; median (min-max) in ms after the cut"
    );
    for (bfd, times) in &results {
        println!("  BFD {:<3}  {}", on_off(*bfd), median_min_max_ms(times));
    }
}

async fn n1_type3(f: &Fabric) -> bool {
    f.lab.vtysh("evl-tor", "show bgp l2vpn evpn route type multicast").await.contains("[3]:[0]:[32]:[198.18.0.1]")
}

fn on_off(bfd: bool) -> &'static str {
    if bfd { "on" } else { "off" }
}
