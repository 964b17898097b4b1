//! One-VNI change with 1,000 L2VNIs present: the agent's incremental apply path against a full
//! frr-reload.py of the same configuration, on a lab node (`hack/lab.sh up frr 1`: netns evl-n1,
//! FRR pathspace evl-n1 with the netns VRF backend, BGP to the lab's FRR TOR).
//!
//!     cargo bench -p evpn-agent --bench apply
//!
//! Settings: EVPN_BENCH_ROUNDS (default 7), EVPN_BENCH_NETWORKS (default 1000),
//! EVPN_BENCH_KEEP_LAB (leave the lab up afterwards). Needs root, FRR and frr-pythontools; the
//! lab is brought down before and after (only one lab can be up at a time).
//!
//! Every timed step is a call the agent makes; verification (kernel devices, FRR's running
//! configuration) runs outside the timed sections.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a benchmark that cannot set up should panic")]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use evpn_agent::dataplane::{ApplyScope, BackendChoice, Dataplane};
use evpn_agent::frr::{Frr, RenderOptions, SyncMethod, render};
use evpn_agent::plan::{bridge_name, plan, vxlan_name};
use evpn_agent::reconcile::Agent;
use evpn_agent::report::{Observed, Outcome};
use evpn_crds::common::{NetworkKind, NetworkRef, RouteTargets};
use evpn_crds::networkset::SetNetwork;
use evpn_crds::nodestate::{DesiredNode, NodeNetwork, NodeVrf, NodeVtep};
use evpn_crds::vtep::{Bgp, BgpNeighbor, VtepMode};

const NODE: &str = "evl-n1";
const FIRST_VNI: u32 = 10_000;
const VTEP_IP: &str = "198.18.0.1";

fn main() {
    if let Some(why) = unavailable() {
        eprintln!("skipped: {why}");
        return;
    }
    let rounds: usize = env_or("EVPN_BENCH_ROUNDS", 7);
    let count: u32 = env_or("EVPN_BENCH_NETWORKS", 1000);
    let lab = Lab::up();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(run(&lab, rounds, count));
    drop(lab);
}

async fn run(lab: &Lab, rounds: usize, count: u32) {
    let dataplane = Dataplane::new(
        Some(PathBuf::from(format!("/run/netns/{NODE}"))),
        BackendChoice::Netns { dir: format!("/var/run/frr/{NODE}/netns").into() },
    )
    .await
    .expect("data plane");
    let render_options = RenderOptions {
        hostname: NODE.into(),
        vrf_backend: dataplane.backend(),
        vrf_netns_dir: "/run/netns".into(),
        passwords: Default::default(),
        uplinks: Default::default(),
    };
    let mut agent = Agent::new(NODE.into(), dataplane, Frr::new(Some(NODE.into())), render_options, Duration::ZERO);
    let mut spec = DesiredNode {
        vteps: vec![vtep()],
        networks: (FIRST_VNI..FIRST_VNI + count).map(|vni| network(vni, "65000:1")).collect(),
    };
    let mut generation = 1;

    let start = Instant::now();
    let observed = agent.reconcile(&spec, Some(generation), ApplyScope::Full).await;
    println!("first reconcile, {count} L2 networks from nothing: {:.2?}", start.elapsed());
    assert_applied(&observed, count as usize);
    let start = Instant::now();
    let observed = agent.reconcile(&spec, Some(generation), ApplyScope::Changes).await;
    println!("reconcile with nothing to change: {:.2?}", start.elapsed());
    assert_applied(&observed, count as usize);

    let mut t = Timings::default();
    let changed = FIRST_VNI + count / 2;
    let idx = (changed - FIRST_VNI) as usize;
    for round in 0..rounds {
        // (a) one network's route targets, the agent's apply path (incremental FRR sync).
        let rt = format!("65000:{}", 1000 + round);
        set_import(&mut spec, idx, &rt);
        generation += 1;
        let start = Instant::now();
        let observed = agent.reconcile(&spec, Some(generation), ApplyScope::Changes).await;
        t.rt_incremental.push(start.elapsed());
        assert_applied(&observed, count as usize);
        assert!(vni_block(&lab.running_config(), changed).contains(&format!("route-target import {rt}")));

        // (b) the same change, FRR by a full reload of the whole rendered configuration.
        let rt = format!("65000:{}", 2000 + round);
        set_import(&mut spec, idx, &rt);
        generation += 1;
        agent.frr.forget_baseline();
        let start = Instant::now();
        let observed = agent.reconcile(&spec, Some(generation), ApplyScope::Full).await;
        t.rt_full.push(start.elapsed());
        assert_applied(&observed, count as usize);
        assert!(vni_block(&lab.running_config(), changed).contains(&format!("route-target import {rt}")));

        // (a) one new network.
        let vni = FIRST_VNI + count + 2 * round as u32;
        spec.networks.push(network(vni, "65000:1"));
        generation += 1;
        let start = Instant::now();
        let observed = agent.reconcile(&spec, Some(generation), ApplyScope::Changes).await;
        t.add_incremental.push(start.elapsed());
        assert_applied(&observed, count as usize + 1);
        lab.assert_network(vni);
        spec.networks.pop();
        assert_applied(&agent.reconcile(&spec, Some(generation), ApplyScope::Changes).await, count as usize);

        // (b) one new network, FRR by a full reload.
        let vni = vni + 1;
        spec.networks.push(network(vni, "65000:1"));
        generation += 1;
        agent.frr.forget_baseline();
        let start = Instant::now();
        let observed = agent.reconcile(&spec, Some(generation), ApplyScope::Full).await;
        t.add_full.push(start.elapsed());
        assert_applied(&observed, count as usize + 1);
        lab.assert_network(vni);
        spec.networks.pop();
        assert_applied(&agent.reconcile(&spec, Some(generation), ApplyScope::Changes).await, count as usize);

        // Where the time goes: the steps of a reconcile, one by one, for the route-target change
        // and for an added network, incremental and full.
        for (add, full) in [(false, false), (false, true), (true, false), (true, true)] {
            let vni = FIRST_VNI + count + 2 * rounds as u32 + round as u32;
            if add {
                spec.networks.push(network(vni, "65000:1"));
            } else {
                set_import(&mut spec, idx, &format!("65000:{}", 3000 + 2 * round + usize::from(full)));
            }
            if full {
                agent.frr.forget_baseline();
            }
            let scope = if full { ApplyScope::Full } else { ApplyScope::Changes };
            let steps = steps(&mut agent, &spec, scope).await;
            let key = usize::from(add) * 2 + usize::from(full);
            t.steps[key].push(steps);
            if add {
                lab.assert_network(vni);
                spec.networks.pop();
                assert_applied(&agent.reconcile(&spec, Some(generation), ApplyScope::Full).await, count as usize);
            }
        }
    }
    // The floor of anything vtysh does: starting vtysh (it loads every daemon's command tree).
    for _ in 0..rounds {
        let start = Instant::now();
        sh("vtysh", &["-N", NODE, "-c", "show version"]);
        t.bare_vtysh.push(start.elapsed());
    }
    t.print(rounds, count);
}

/// One reconcile's steps as `Agent::reconcile` runs them for these networks (L2 only, so no
/// VRF checks), each timed.
async fn steps(agent: &mut Agent, spec: &DesiredNode, scope: ApplyScope) -> Steps {
    let start = Instant::now();
    let node_plan = plan(spec);
    let plan_time = start.elapsed();
    let start = Instant::now();
    let dp = agent.dataplane.apply_scoped(&node_plan, scope).await;
    let dataplane = start.elapsed();
    assert!(dp.networks.values().all(Result::is_ok), "data plane failed");
    let ip = dp.vtep.expect("a VTEP").expect("the VTEP").ip;
    let start = Instant::now();
    let config = render(&node_plan, ip, &agent.render);
    let render_time = start.elapsed();
    let start = Instant::now();
    let sync = agent.frr.sync(&config).await;
    let frr_sync = start.elapsed();
    assert!(sync.is_ok(), "{sync:?}");
    let start = Instant::now();
    agent.frr.bgp_sessions().await.expect("sessions");
    let sessions = start.elapsed();
    let start = Instant::now();
    agent.frr.vnis().await.expect("vnis");
    let vnis = start.elapsed();
    Steps {
        plan: plan_time,
        dataplane,
        changes: dp.changes,
        render: render_time,
        frr_sync,
        method: sync.method,
        sessions,
        vnis,
    }
}

struct Steps {
    plan: Duration,
    dataplane: Duration,
    changes: usize,
    render: Duration,
    frr_sync: Duration,
    method: SyncMethod,
    sessions: Duration,
    vnis: Duration,
}

#[derive(Default)]
struct Timings {
    rt_incremental: Vec<Duration>,
    rt_full: Vec<Duration>,
    add_incremental: Vec<Duration>,
    add_full: Vec<Duration>,
    /// By `add * 2 + full`.
    steps: [Vec<Steps>; 4],
    bare_vtysh: Vec<Duration>,
}

impl Timings {
    fn print(&self, rounds: usize, count: u32) {
        println!("\none-VNI change with {count} L2VNIs, {rounds} rounds; median (min-max) in ms");
        println!("{:<34} {:>24} {:>24} {:>8}", "Agent::reconcile", "incremental (agent)", "full reload", "ratio");
        for (what, inc, full) in [
            ("route targets of one network", &self.rt_incremental, &self.rt_full),
            ("one network added", &self.add_incremental, &self.add_full),
        ] {
            println!("{what:<34} {:>24} {:>24} {:>7.1}x", stats(inc), stats(full), ms(median(full)) / ms(median(inc)));
        }
        println!("\nsteps of a reconcile (run one by one), median (min-max) in ms");
        println!(
            "{:<34} {:>18} {:>18} {:>18} {:>18} {:>18} {:>18} {:>18}",
            "", "plan", "data plane", "render", "FRR sync", "show bgp nbrs", "show evpn vni", "sum"
        );
        let names = ["RT change, incremental", "RT change, full reload", "add, incremental", "add, full reload"];
        for (name, steps) in names.iter().zip(&self.steps) {
            let col = |f: &dyn Fn(&Steps) -> Duration| stats(&steps.iter().map(f).collect::<Vec<_>>());
            let sum = |s: &Steps| s.plan + s.dataplane + s.render + s.frr_sync + s.sessions + s.vnis;
            println!(
                "{name:<34} {:>18} {:>18} {:>18} {:>18} {:>18} {:>18} {:>18}",
                col(&|s| s.plan),
                col(&|s| s.dataplane),
                col(&|s| s.render),
                col(&|s| s.frr_sync),
                col(&|s| s.sessions),
                col(&|s| s.vnis),
                col(&sum)
            );
            let methods: Vec<String> = steps.iter().map(|s| format!("{:?}/{}", s.method, s.changes)).collect();
            println!("{:<34} sync method / netlink changes: {}", "", methods.join(" "));
        }
        println!("\nbare `vtysh -N {NODE} -c 'show version'`: {}", stats(&self.bare_vtysh));
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(v: &[Duration]) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    v[v.len() / 2]
}

fn stats(v: &[Duration]) -> String {
    let (min, max) = (v.iter().min().unwrap(), v.iter().max().unwrap());
    format!("{:.1} ({:.1}-{:.1})", ms(median(v)), ms(*min), ms(*max))
}

fn vtep() -> NodeVtep {
    let neighbor = BgpNeighbor {
        address: Some("198.18.255.1".into()),
        interface: None,
        asn: Some(65000),
        dynamic_asn: None,
        password_secret: None,
        bfd_profile: None,
    };
    NodeVtep {
        name: "fabric".into(),
        mode: VtepMode::Managed,
        ip: Some(VTEP_IP.into()),
        cidrs: vec!["198.18.0.0/24".into()],
        udp_port: 4789,
        mtu: None,
        bgp: Some(Bgp { asn: 65001, neighbors: vec![neighbor], bfd_profiles: Vec::new() }),
    }
}

fn network(vni: u32, import: &str) -> NodeNetwork {
    let name = format!("net{vni}");
    NodeNetwork {
        entry: SetNetwork {
            evpn: name.clone(),
            generation: 1,
            revision: 1,
            network: NetworkRef { kind: NetworkKind::ClusterUserDefinedNetwork, name: name.clone(), namespace: None },
            vrf: name,
            mac_vrf: Some(NodeVrf {
                vni,
                route_targets: RouteTargets { import: vec![import.into()], export: vec![format!("65000:{vni}")] },
                route_distinguisher_index: vni,
            }),
            ip_vrf: None,
            subnets: Vec::new(),
        },
        vtep: "fabric".into(),
        ethernet_segments: Vec::new(),
    }
}

fn set_import(spec: &mut DesiredNode, idx: usize, rt: &str) {
    let n = &mut spec.networks[idx];
    n.entry.generation += 1;
    n.entry.mac_vrf.as_mut().unwrap().route_targets.import = vec![rt.into()];
}

fn assert_applied(observed: &Observed, expected: usize) {
    let applied = observed.networks.iter().filter(|(_, o)| matches!(o, Outcome::Applied { .. })).count();
    if applied != expected {
        let bad: Vec<_> =
            observed.networks.iter().filter(|(_, o)| !matches!(o, Outcome::Applied { .. })).take(3).collect();
        panic!("{applied} of {expected} networks applied; e.g. {bad:?}");
    }
}

/// The lines of `vni <vni>`'s block in a running configuration.
fn vni_block(running: &str, vni: u32) -> String {
    let header = format!("vni {vni}");
    let mut lines = running.lines().skip_while(|l| l.trim() != header);
    lines.next();
    lines.take_while(|l| l.trim() != "exit-vni").collect::<Vec<_>>().join("\n")
}

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn unavailable() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let root = status.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"));
    if !root {
        return Some("needs root (network namespaces, FRR)".into());
    }
    ["/usr/lib/frr/zebra", "/usr/bin/vtysh", "/usr/lib/frr/frr-reload.py"]
        .iter()
        .find(|b| !Path::new(b).exists())
        .map(|b| format!("{b} is not installed"))
}

fn sh(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(out.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The lab with one node, brought down when dropped.
struct Lab {
    script: PathBuf,
}

impl Lab {
    fn up() -> Lab {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../hack/lab.sh");
        let lab = Lab { script };
        sh("bash", &[lab.script(), "down"]);
        sh("bash", &[lab.script(), "up", "frr", "1"]);
        lab
    }

    fn script(&self) -> &str {
        self.script.to_str().unwrap()
    }

    fn running_config(&self) -> String {
        sh("vtysh", &["-N", NODE, "-c", "show running-config"])
    }

    /// The network's bridge and VXLAN device exist and FRR has its VNI.
    fn assert_network(&self, vni: u32) {
        let links = sh("ip", &["-n", NODE, "link", "show"]);
        for device in [bridge_name(vni), vxlan_name(vni)] {
            assert!(
                links.contains(&format!(" {device}:")) || links.contains(&format!(" {device}@")),
                "{device} missing"
            );
        }
        let block = vni_block(&self.running_config(), vni);
        assert!(block.contains("route-target"), "VNI {vni} not in FRR's running configuration");
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if std::env::var_os("EVPN_BENCH_KEEP_LAB").is_none() {
            let _ = Command::new("bash").args([self.script(), "down"]).output();
        }
    }
}
