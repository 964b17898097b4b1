//! How the binaries stop: on SIGTERM always, on SIGINT only when they were not started with
//! SIGINT ignored (a background job of a non-interactive shell is, and must stay deaf to the
//! Ctrl-C meant for the script that started it). Both binaries share
//! `evpn_telemetry::shutdown_signal`; the operator runs here with neither webhook nor
//! controllers, against the test control plane, so only its signal handling and probes are up.

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use evpn_tests::{DEADLINE, control_plane, http_get, workspace_binary};

/// A running `evpn-operator --no-webhook --no-controllers` and the lines it logs.
struct Operator {
    child: Child,
    metrics: SocketAddr,
    lines: mpsc::Receiver<String>,
}

impl Operator {
    /// Starts it through `launcher` (a command prefix that sets SIGINT's disposition and execs).
    async fn start(launcher: &[&str]) -> Operator {
        let plane = control_plane().await.expect("control plane");
        let metrics = free_port();
        let mut cmd = Command::new(launcher[0]);
        cmd.args(&launcher[1..])
            .arg(workspace_binary("evpn-operator"))
            .args(["--no-webhook", "--no-controllers", "--log-format", "text", "--metrics-listen"])
            .arg(metrics.to_string())
            .env("KUBECONFIG", plane.admin_kubeconfig())
            .stdin(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("starting evpn-operator");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("operator: {line}");
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let operator = Operator { child, metrics, lines };
        operator.wait_healthy().await;
        operator
    }

    async fn wait_healthy(&self) {
        evpn_tests::eventually(|| async { http_get(self.metrics, "/healthz").await.is_ok_and(|r| r.status == 200) })
            .await
            .expect("the operator's /healthz never answered");
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill").args([&format!("-{name}"), &self.child.id().to_string()]).status();
        assert!(status.is_ok_and(|s| s.success()), "kill -{name}");
    }

    /// Its exit status, within the harness deadline.
    fn exit(&mut self) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("waiting for evpn-operator") {
                return status;
            }
            assert!(start.elapsed() < DEADLINE, "evpn-operator did not stop within {DEADLINE:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether it logged a line containing `text` (up to now, or within the deadline).
    fn logged(&self, text: &str) -> bool {
        let start = Instant::now();
        while let Ok(line) = self.lines.recv_timeout(DEADLINE.saturating_sub(start.elapsed())) {
            if line.contains(text) {
                return true;
            }
        }
        false
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("its address")
}

#[tokio::test]
async fn sigint_stops_a_binary_started_with_it_at_its_default() {
    let mut operator = Operator::start(&["env", "--default-signal=INT"]).await;
    operator.signal("INT");
    assert!(operator.exit().success(), "SIGINT must stop it cleanly");
}

#[tokio::test]
async fn sigint_ignored_on_entry_stays_ignored_and_sigterm_still_stops() {
    // `trap "" INT` then exec: what a background job of a non-interactive shell inherits.
    let mut operator = Operator::start(&["bash", "-c", "trap '' INT; exec \"$@\"", "bash"]).await;
    assert!(operator.logged("stopping on SIGTERM only"), "it must say it ignores SIGINT");
    operator.signal("INT");
    // An ignored signal is discarded when it is sent: the process still serves afterwards.
    let health = http_get(operator.metrics, "/healthz").await;
    assert!(health.is_ok_and(|r| r.status == 200), "SIGINT ignored on entry must not stop it");
    assert!(operator.child.try_wait().expect("waiting").is_none(), "still running after SIGINT");
    operator.signal("TERM");
    assert!(operator.exit().success(), "SIGTERM must stop it cleanly");
}
