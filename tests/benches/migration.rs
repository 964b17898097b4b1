//! A VM with a fixed IP and MAC live-migrated between the leaf outside the cluster and the
//! cluster's nodes: how long a peer's pings go unanswered, with the VM announcing itself after
//! the move (a gratuitous ARP, as hypervisors do) and without (the fabric finds it when it
//! answers flooded traffic).
//!
//!     cargo bench -p evpn-tests --bench migration
//!
//! Settings: EVPN_BENCH_ROUNDS (default 5 VMs per mode), EVPN_TEST_CONTROL_PLANE (reuse a
//! running control plane). Needs root; brings the lab down before and after.
//!
//! Each round starts a new VM behind the leaf and moves it leaf -> node 1 -> node 2 -> leaf while
//! a pod on node 2 pings it every 10 ms; a move is over when the TOR has the VM's routes from the
//! new switch only, with a higher MAC mobility sequence number, and 50 pings in a row came back.
//! A new VM per round: FRR's duplicate address detection flags a MAC that moves 5 times within
//! 180 s (and freezes it where configured to), and three moves stay below that.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a benchmark that cannot set up should panic")]

use std::time::Duration;

use evpn_tests::lab::{Fabric, agent_binary, bench_main, median_min_max_ms};
use evpn_tests::leaf::{Announce, Switch, Tenant, Vm};

const MOVES: [(Switch, Switch); 3] =
    [(Switch::Leaf, Switch::Node(1)), (Switch::Node(1), Switch::Node(2)), (Switch::Node(2), Switch::Leaf)];

fn main() {
    bench_main(5, run);
}

async fn run(rounds: usize) {
    assert!(agent_binary().exists());
    let f = Fabric::up("frr").await;
    f.lab.ok(&["leaf"]).await;
    let tenant = Tenant::new(f.name("mig"), 13101, 13102, "m", "02:00:00:00:07:20");
    tenant.build(&f).await;
    let peer = &tenant.pods[1];
    let mut gaps: Vec<(Announce, Vec<Vec<Duration>>)> = Vec::new();
    for (mode, announce) in [Announce::Yes, Announce::No].into_iter().enumerate() {
        let mut per_move = vec![Vec::new(); MOVES.len()];
        for round in 0..rounds {
            let n = 100 + mode * 50 + round;
            let vm =
                Vm::new(&format!("evl-vm{n}"), &format!("02:00:00:00:08:{:02x}", n % 256), &format!("10.30.0.{n}"));
            vm.start_on_leaf(&f, &tenant).await;
            let mut seq = 0;
            for (i, (from, to)) in MOVES.into_iter().enumerate() {
                let moved = vm.migrate(&f, &tenant, peer, from, to, seq, announce).await;
                seq = moved.mobility_seq;
                println!("{announce:?}: round {round}: {from} -> {to}: gap {} ms", moved.gap.as_millis());
                per_move[i].push(moved.gap);
            }
        }
        gaps.push((announce, per_move));
    }
    f.delete_evpn(&tenant.name).await;
    println!("\nVM migration: the peer's longest run of unanswered pings (10 ms apart), {rounds} VMs per mode;");
    println!("median (min-max) in ms");
    for (announce, per_move) in &gaps {
        for ((from, to), times) in MOVES.iter().zip(per_move) {
            let mode = if *announce == Announce::Yes { "gratuitous ARP" } else { "silent" };
            println!("  {mode:<15} {from} -> {to}: {}", median_min_max_ms(times));
        }
    }
}
