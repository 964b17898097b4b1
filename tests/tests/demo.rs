//! The demo, as a user runs it: `hack/demo.sh up` on this machine, its output checked (two Ready
//! EVPNs, the ping matrix of tenant isolation), then `hack/demo.sh down` and a look, independent
//! of the script's own, that nothing is left. On the way: the preconditions it must refuse, a
//! second `up`, and a Ctrl-C half-way through `up` that `down` cleans after.
//!
//! Needs root and network namespaces; without them the demo test says so and passes as skipped.
//! The demo runs with a directory, namespace prefix and ports of its own, so neither a demo a
//! developer left running nor the lab suite (namespaces `evl-*`) gets in its way.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test that cannot build its input should panic")]

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use evpn_tests::lab::unavailable;
use evpn_tests::repo_root;
use evpn_webhook::configuration;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::WebhookClientConfig;

const DIR: &str = "/tmp/evpn-demo-test";
const PREFIX: &str = "evt";
const PORT_BASE: u16 = 29440;

/// The ports the demo takes: etcd, etcd peers, kube-apiserver, webhook, metrics.
fn ports() -> Vec<u16> {
    (1..=5).map(|i| PORT_BASE + i).collect()
}

/// `hack/demo.sh ARG` with SIGINT at its default action, whatever this test inherited: started in
/// the background by a non-interactive shell (CI runners, nohup) it inherits SIGINT ignored, bash
/// cannot trap a signal ignored on entry, and the Ctrl-C of `interrupt_up_when` would go unheard.
fn demo_command(arg: &str) -> Command {
    let mut cmd = Command::new("env");
    cmd.arg("--default-signal=INT")
        .arg("bash")
        .arg(repo_root().join("hack/demo.sh"))
        .arg(arg)
        .env("EVPN_DEMO_DIR", DIR)
        .env("EVPN_DEMO_PREFIX", PREFIX)
        .env("EVPN_DEMO_PORT_BASE", PORT_BASE.to_string())
        .stdin(Stdio::null());
    evpn_tests::without_cargo_test_env(&mut cmd);
    cmd
}

/// Runs `hack/demo.sh ARG` to its end; echoes its output, so a failure shows what the demo said.
fn demo(arg: &str) -> Output {
    let out = demo_command(arg).output().expect("running hack/demo.sh");
    eprintln!(
        "--- hack/demo.sh {arg}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    out
}

/// Takes the demo down when the test ends, however it ends.
struct Teardown;

impl Drop for Teardown {
    fn drop(&mut self) {
        let _ = demo_command("down").output();
    }
}

#[test]
fn demo_up_shows_ready_networks_and_isolation_and_down_leaves_nothing() {
    if let Some(why) = unavailable() {
        eprintln!("skipped: {why}");
        return;
    }
    let _teardown = Teardown;

    // `down` with nothing running succeeds (and clears what an earlier, killed run left).
    assert!(demo("down").status.success(), "down with nothing running must succeed");
    assert_nothing_left();

    // A port it needs is taken: `up` stops before it makes anything, saying which.
    {
        let taken = ports()[2];
        let _listener = std::net::TcpListener::bind(("127.0.0.1", taken)).unwrap();
        let out = demo("up");
        assert!(!out.status.success(), "up must refuse to start with port {taken} taken");
        assert!(stderr(&out).contains(&format!("ports already in use on 127.0.0.1: {taken}")), "up must name the port");
        assert!(!Path::new(DIR).exists(), "a refused up must leave nothing behind");
    }

    // Ctrl-C while the operator starts (the control plane up, the fabric coming up beside it):
    // what `up` started so far stays for `down` to remove.
    interrupt_up_when("evpn-operator:");
    assert!(demo("down").status.success(), "down after an interrupted up must succeed");
    assert_nothing_left();

    let out = demo("up");
    assert!(out.status.success(), "hack/demo.sh up failed");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    for name in ["blue", "red"] {
        let row = text
            .lines()
            .find(|l| l.starts_with(&format!("evpn.evpn.k8s.ovn.org/{name} ")))
            .unwrap_or_else(|| panic!("no row for EVPN {name} in kubectl's output:\n{text}"));
        let columns: Vec<&str> = row.split_whitespace().collect();
        assert!(columns.contains(&"2/2") && columns.contains(&"True"), "EVPN {name} not Ready on both nodes: {row}");
    }
    assert!(
        text.contains("admission webhook \"evpns.evpn.k8s.ovn.org\" denied the request"),
        "the webhook must refuse the bad EVPN:\n{text}"
    );
    assert_ping_matrix(&text);

    let again = demo("up");
    assert!(again.status.success(), "a second up must succeed");
    assert!(stderr(&again).contains("already running"), "a second up must say the demo is already running");
    let status = demo("status");
    assert!(status.status.success(), "status must succeed while the demo runs");
    assert_ping_matrix(&String::from_utf8_lossy(&status.stdout));

    assert!(demo("down").status.success(), "down failed");
    assert_nothing_left();
    assert!(demo("down").status.success(), "a second down must succeed");
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Starts `up`, sends SIGINT to it (and everything in its process group, as a terminal's Ctrl-C
/// does) once its progress shows `marker`, and checks that it ends saying how to clean up.
fn interrupt_up_when(marker: &str) {
    let mut child = demo_command("up").stderr(Stdio::piped()).process_group(0).spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut said = String::new();
    let mut sent = false;
    for line in BufReader::new(stderr).lines() {
        let line = line.unwrap();
        eprintln!("{line}");
        said.push_str(&line);
        said.push('\n');
        if !sent && line.contains(marker) {
            let group = format!("-{}", child.id());
            let kill = Command::new("kill").args(["-INT", "--", &group]).status().unwrap();
            assert!(kill.success(), "kill -INT {group}");
            sent = true;
        }
    }
    let status = child.wait().unwrap();
    assert!(sent, "up never reached {marker:?}:\n{said}");
    assert!(!status.success(), "an interrupted up must fail");
    assert!(said.contains("interrupted"), "up must say it was interrupted");
    assert!(said.contains("hack/demo.sh down removes it"), "up must say how to clean up");
}

/// The matrix rows: within a tenant every pod replies, across tenants none does.
fn assert_ping_matrix(text: &str) {
    let pods = ["blue-1", "blue-2", "red-1", "red-2"];
    for from in pods {
        let row = text
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with(&format!("{from} (worker-")))
            .unwrap_or_else(|| panic!("no ping matrix row for {from}:\n{text}"));
        // Cells are separated by two or more spaces; the first one is the row's label.
        let cells: Vec<&str> = row.split("  ").map(str::trim).filter(|c| !c.is_empty()).skip(1).collect();
        let tenant = |p: &str| p.split('-').next().unwrap().to_owned();
        let expected: Vec<&str> = pods
            .iter()
            .map(|to| match (from == *to, tenant(from) == tenant(to)) {
                (true, _) => "-",
                (false, true) => "reply",
                (false, false) => "no reply",
            })
            .collect();
        assert_eq!(cells, expected, "ping matrix row of {from}: {row}");
    }
    assert!(text.contains("never the other tenant's"), "the matrix verdict is missing:\n{text}");
}

/// Checked here, not taken from the script's word: no namespace, process, mount, file or port of
/// the demo is left.
fn assert_nothing_left() {
    let netns = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let netns = String::from_utf8_lossy(&netns.stdout);
    let left: Vec<&str> = netns.lines().filter(|l| l.starts_with(&format!("{PREFIX}-"))).collect();
    assert!(left.is_empty(), "namespaces left: {left:?}");

    let mut processes = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(&format!("{DIR}/"))
            || cmdline.contains(&format!("/run/netns/{PREFIX}-"))
            || cmdline.contains(&format!("/frr/{PREFIX}-"))
        {
            processes.push(cmdline);
        }
    }
    assert!(processes.is_empty(), "processes left: {processes:#?}");

    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let left: Vec<&str> =
        mounts.lines().filter(|l| l.contains(&format!("/frr/{PREFIX}-")) || l.contains(DIR)).collect();
    assert!(left.is_empty(), "mounts left: {left:#?}");

    let mut files: Vec<PathBuf> = vec![PathBuf::from(DIR)];
    for dir in ["/run/frr", "/etc/frr"] {
        if let Ok(entries) = std::fs::read_dir(dir) {
            files.extend(
                entries
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(&format!("{PREFIX}-")))),
            );
        }
    }
    let left: Vec<&PathBuf> = files.iter().filter(|p| p.symlink_metadata().is_ok()).collect();
    assert!(left.is_empty(), "files left: {left:?}");

    for port in ports() {
        assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(), "port {port} still in use");
    }
}

/// The webhook registration the demo applies is the one the code builds (placeholders filled the
/// way hack/demo.sh fills them), so the demo exercises the real configuration. Needs no root.
#[test]
fn demo_webhook_registration_matches_the_code() {
    let template = std::fs::read_to_string(repo_root().join("hack/demo/webhook.yaml")).unwrap();
    let url = "https://127.0.0.1:28444";
    let client = WebhookClientConfig {
        url: Some(url.into()),
        ca_bundle: Some(ByteString(b"-----BEGIN CERTIFICATE-----".to_vec())),
        ..Default::default()
    };
    let from_code = serde_json::to_value(configuration("evpn-operator-demo", client, None)).unwrap();
    let ca_base64 = from_code["webhooks"][0]["clientConfig"]["caBundle"].as_str().unwrap();
    let filled = template.replace("WEBHOOK_URL", url).replace("CA_BUNDLE", ca_base64);
    let from_file: serde_json::Value = serde_saphyr::from_str(&filled).unwrap();
    assert_eq!(from_file, from_code, "hack/demo/webhook.yaml differs from evpn_webhook::configuration()");
}
