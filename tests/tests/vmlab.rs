//! The VM lab: the lab suite's scenarios (`tests/lab.rs`) and the agent's data-plane tests on
//! Debian's kernel, in a qemu VM (`hack/vmlab.sh`), with kernel VRF devices and the agent's
//! production backend (VTEP address on a dummy device, bridges and SVIs enslaved to the VRF
//! device). This machine's kernel has no VRF device, so only the VM runs those paths.
//!
//! One VM run serves every test here: the first test to need it builds the binaries, boots the
//! VM and runs `hack/vmlab-suite.sh` inside, which runs the test binaries over the shared root
//! filesystem against this binary's control plane (its apiserver port forwarded into the VM).
//! Each scenario comes back as a line of a report file, each step as an exit status, and every
//! test here asserts one of them.
//!
//! Needs root; installs qemu, busybox and Debian's kernel on first use (`hack/vmlab.sh install`).
//! Without root, or when those cannot be installed, every test says why and passes as skipped,
//! except under CI (`CI` set), where a VM lab that cannot run is a failure.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test that cannot set up should panic")]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Instant;

use evpn_tests::lab::{agent_binary, panic_message};
use evpn_tests::{control_plane, repo_root};
use serde::Deserialize;

/// One scenario's outcome, as `lab::Scenarios` writes it.
#[derive(Debug, Deserialize)]
struct ScenarioResult {
    test: String,
    scenario: String,
    result: String,
    seconds: f64,
    message: String,
}

/// What the one VM run left.
struct VmRun {
    out: PathBuf,
    scenarios: Vec<ScenarioResult>,
    /// Exit status and seconds per step of `hack/vmlab-suite.sh`.
    steps: HashMap<String, (i32, String)>,
}

enum Outcome {
    Skipped(String),
    /// Setting up or running the VM failed: every test fails with this, none runs it again.
    Failed(String),
    Ran(VmRun),
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

/// Skips (with the reason) where the VM lab cannot run, but not under CI, which must run it.
fn cannot_run(why: String) -> Outcome {
    assert!(std::env::var_os("CI").is_none(), "the VM lab must run under CI, but: {why}");
    Outcome::Skipped(why)
}

fn vm_run() -> &'static Outcome {
    static RUN: OnceLock<Outcome> = OnceLock::new();
    RUN.get_or_init(|| {
        std::panic::catch_unwind(run_vm).unwrap_or_else(|panic| Outcome::Failed(panic_message(panic.as_ref())))
    })
}

fn run_vm() -> Outcome {
    if !is_root() {
        return cannot_run("needs root (qemu, network namespaces, FRR)".into());
    }
    let script = repo_root().join("hack/vmlab.sh");
    let install = Command::new("bash").arg(&script).arg("install").stdin(Stdio::null()).output().unwrap();
    if !install.status.success() {
        return cannot_run(format!(
            "`hack/vmlab.sh install` failed (qemu, busybox or Debian's kernel unavailable):\n{}",
            String::from_utf8_lossy(&install.stderr)
        ));
    }
    let lab = hack_lab_install();
    if let Some(why) = lab {
        return cannot_run(why);
    }

    let agent = agent_binary();
    let lab_test = test_binary("lab");
    let dataplane_test = test_binary("dataplane");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let cp = runtime.block_on(control_plane()).expect("control plane");
    let kubeconfig = cp.admin_kubeconfig();
    let cp_dir = kubeconfig.parent().unwrap().to_owned();
    let port = apiserver_port(&kubeconfig);

    // One place, replaced by every run: what the last run left stays there to look at.
    let out = std::env::temp_dir().join("evpn-vmlab-suite");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).unwrap();
    let steps_dir = out.join("steps");
    let report = out.join("report.jsonl");
    let start = Instant::now();
    let status = Command::new("bash")
        .arg(&script)
        .arg("run")
        .arg("bash")
        .arg(repo_root().join("hack/vmlab-suite.sh"))
        .args([&steps_dir, &lab_test, &dataplane_test])
        .env("EVPN_VMLAB_OUT", &out)
        .env("EVPN_VMLAB_FORWARD", port.to_string())
        .env("EVPN_VMLAB_ENV", "EVPN_LAB_AGENT EVPN_TEST_CONTROL_PLANE EVPN_LAB_REPORT")
        .env("EVPN_LAB_AGENT", &agent)
        .env("EVPN_TEST_CONTROL_PLANE", &cp_dir)
        .env("EVPN_LAB_REPORT", &report)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(out.join("console.log")).unwrap())
        .stderr(std::fs::File::create(out.join("vmlab.log")).unwrap())
        .status()
        .unwrap();
    eprintln!(
        "VM lab: ran for {:.0}s ({status}); console in {}",
        start.elapsed().as_secs_f64(),
        out.join("console.log").display()
    );
    assert!(
        status.success(),
        "the VM did not complete its run ({status}):\n{}",
        std::fs::read_to_string(out.join("vmlab.log")).unwrap_or_default()
    );
    let scenarios = std::fs::read_to_string(&report)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a report line"))
        .collect();
    let mut steps = HashMap::new();
    for entry in std::fs::read_dir(&steps_dir).unwrap().flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "status") {
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            let code = std::fs::read_to_string(&path).unwrap().trim().parse().unwrap_or(-1);
            let seconds = std::fs::read_to_string(path.with_extension("seconds")).unwrap_or_default();
            steps.insert(name, (code, seconds.trim().to_owned()));
        }
    }
    Outcome::Ran(VmRun { out, scenarios, steps })
}

/// The lab's packages (FRR, GoBGP, tcpdump, ...) on the host, whose root the VM shares.
fn hack_lab_install() -> Option<String> {
    let out =
        Command::new("bash").arg(repo_root().join("hack/lab.sh")).arg("install").stdin(Stdio::null()).output().unwrap();
    (!out.status.success()).then(|| format!("`hack/lab.sh install` failed:\n{}", String::from_utf8_lossy(&out.stderr)))
}

/// Builds the integration-test binary `test` and returns its path, as cargo reports it. Built
/// for the whole workspace, so features resolve as in `cargo test --workspace` and the binary
/// `hack/test.sh` already built is reused.
fn test_binary(test: &str) -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["test", "--workspace", "--test", test, "--no-run", "--message-format=json"])
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(out.status.success(), "building the {test} tests");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["target"]["name"] == test && m["target"]["kind"] == serde_json::json!(["test"]))
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .unwrap_or_else(|| panic!("cargo named no executable for the {test} tests"))
}

/// The port of the apiserver in a kubeconfig (`server: https://127.0.0.1:PORT`).
fn apiserver_port(kubeconfig: &Path) -> u16 {
    let text = std::fs::read_to_string(kubeconfig).unwrap();
    text.lines()
        .find_map(|l| l.trim().strip_prefix("server: https://127.0.0.1:"))
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("no loopback apiserver in {}", kubeconfig.display()))
}

/// The VM run, or `None` (having said why) where it was skipped.
fn ran() -> Option<&'static VmRun> {
    match vm_run() {
        Outcome::Skipped(why) => {
            eprintln!("skipped: {why}");
            None
        }
        Outcome::Failed(why) => panic!("the VM lab failed: {why}"),
        Outcome::Ran(run) => Some(run),
    }
}

/// Asserts that scenario `scenario` of the lab's FRR fabric passed in the VM.
fn scenario(scenario: &str) {
    scenario_of("fabric_with_an_frr_tor", scenario);
}

/// Asserts that scenario `scenario` of lab test `test` passed in the VM.
fn scenario_of(test: &str, scenario: &str) {
    let Some(run) = ran() else { return };
    let console = run.out.join("console.log");
    match run.scenarios.iter().find(|r| r.test == test && r.scenario == scenario) {
        Some(r) if r.result == "passed" => eprintln!("{scenario}: passed in the VM in {:.1}s", r.seconds),
        Some(r) => panic!("{scenario}: {} in the VM: {}\n(console: {})", r.result, r.message, console.display()),
        None => panic!("{scenario}: no result from the VM (console: {})", console.display()),
    }
}

/// Asserts that step `name` of `hack/vmlab-suite.sh` exited 0.
fn step(name: &str) {
    let Some(run) = ran() else { return };
    let log = run.out.join("steps").join(format!("{name}.log"));
    match run.steps.get(name) {
        Some((0, seconds)) => eprintln!("step {name}: passed in the VM in {seconds}s"),
        Some((code, _)) => {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            panic!("step {name} exited {code} in the VM ({}):\n{}", log.display(), tail.join("\n"))
        }
        None => panic!("step {name} did not run in the VM (console: {})", run.out.join("console.log").display()),
    }
}

#[test]
fn kernel_vrf_layer2() {
    scenario("L2");
}

#[test]
fn kernel_vrf_overlapping_ips() {
    scenario("overlapping IPs");
}

#[test]
fn kernel_vrf_layer3() {
    scenario("L3");
}

#[test]
fn kernel_vrf_symmetric_irb() {
    scenario("symmetric IRB");
}

#[test]
fn kernel_vrf_route_targets() {
    scenario("route targets");
}

#[test]
fn kernel_vrf_route_targets_again_and_again() {
    scenario("route targets, again and again");
}

#[test]
fn kernel_vrf_faults() {
    scenario("faults");
}

#[test]
fn kernel_vrf_deletion() {
    scenario("deletion");
}

/// The lab test as a whole, including bringing the fabric up and removing its EVPNs at the end.
#[test]
fn kernel_vrf_lab_suite() {
    step("lab");
}

/// Multi-homing's data plane: an external host's LACP bond aggregates one leg to each of two
/// nodes, whose one-leg bonds share the Ethernet segment's system ID.
#[test]
fn bond_to_two_nodes() {
    step("bond");
}

/// Multi-homing end to end: a host on a bond to two nodes as one Ethernet segment, its type-4 and
/// type-1 routes at the TOR, pods on both nodes reached (`fabric_with_a_multihomed_host`).
#[test]
fn multihoming_segment() {
    scenario_of("fabric_with_a_multihomed_host", "segment");
}

/// Both nodes agree on the segment's designated forwarder, as their agents report it.
#[test]
fn multihoming_designated_forwarder() {
    scenario_of("fabric_with_a_multihomed_host", "designated forwarder");
}

/// A node's uplink cut with BFD on: the TOR withdraws its type-1 routes and keeps the other node's,
/// and the cut node's zebra counts its uplink down.
#[test]
fn multihoming_mass_withdrawal() {
    scenario_of("fabric_with_a_multihomed_host", "mass withdrawal");
}

/// The agent's data-plane tests, including the kernel-VRF backend's, which skip on this host.
#[test]
fn kernel_vrf_dataplane_tests() {
    step("dataplane");
}
