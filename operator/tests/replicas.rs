//! The real `evpn-operator` binary as a Deployment runs it, against a real kube-apiserver: two
//! processes with their own `--identity` competing for one Lease, and the liveness probe of a
//! control loop that stalls.
//!
//! Both replicas write with the same field manager, so the apiserver cannot tell their writes
//! apart. The frozen-leader test makes the evidence per replica by construction instead: once the
//! standby has taken over and caught up, it is frozen too, and the test writes nothing more, so
//! while the thawed old leader has not yet had time to take the Lease back legitimately, every
//! change the apiserver reports on the objects the operator writes (EVPNs, their network set,
//! the Lease) is the old leader's. Afterwards the old leader takes over from the frozen standby
//! and does that work, which shows it was alive and only fenced.
//!
//! The stalled loop is stalled by the apiserver itself: an admission webhook on the EVPNs' status
//! that accepts connections and never answers holds each status write of a round until the
//! operator's write timeout.
//!
//! The tests take turns: a replica plans every EVPN of the cluster.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test that cannot set up should panic")]

use std::collections::BTreeSet;
use std::io::BufRead as _;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use evpn_crds::{Evpn, EvpnNetworkSet};
use evpn_tests::{DEADLINE, apply, control_plane, eventually, http_get, unique_name};
use futures::{Stream, StreamExt};
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::time::Instant;

static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Where the tests' Leases live (the operator's RBAC grants it leases there).
const LEASE_NAMESPACE: &str = "evpn-system";

/// One `evpn-operator --no-webhook` process with its log, killed however the test ends.
struct Replica {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
    /// Its plain-HTTP listener (/metrics, /healthz, /readyz).
    metrics: SocketAddr,
}

impl Replica {
    async fn start(lease: &str, identity: &str, flags: &[&str]) -> Replica {
        let cp = control_plane().await.unwrap();
        let metrics = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_evpn-operator"))
            .args(["--no-webhook", "--log-format", "text", "--metrics-listen", &metrics.to_string()])
            .args(["--lease-namespace", LEASE_NAMESPACE, "--lease-name", lease, "--identity", identity])
            .args(flags)
            // The operator's own service account: its RBAC is part of what is tested.
            .env("KUBECONFIG", cp.admin_kubeconfig().with_file_name("operator.kubeconfig"))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let lines = log.clone();
        let identity = identity.to_owned();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("{identity}: {line}");
                lines.lock().unwrap().push(line);
            }
        });
        Replica { child, log, metrics }
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill").args([&format!("-{name}"), &self.child.id().to_string()]).status();
        assert!(status.is_ok_and(|s| s.success()), "kill -{name}");
    }

    fn logged(&self, text: &str) -> bool {
        self.log.lock().unwrap().iter().any(|l| l.contains(text))
    }

    async fn wait_logged(&self, text: &str) {
        let found = eventually(|| async { self.logged(text) }).await;
        assert!(found.is_ok(), "it never logged {text:?}:\n{}", self.log.lock().unwrap().join("\n"));
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A VTEP with a VNI range of its own and a Layer2 network, for EVPNs labelled with `id`.
struct World {
    id: String,
    vtep: String,
    network: String,
}

impl World {
    async fn new(client: &Client) -> World {
        let id = unique_name("leader");
        let base = 2_000_000 + (std::process::id() % 1000) * 1000;
        let vtep = format!("{id}-vtep");
        apply(client, &json!({"apiVersion": "evpn.k8s.ovn.org/v1alpha1", "kind": "VTEP", "metadata": {"name": vtep},
            "spec": {"cidrs": ["198.18.0.0/22"], "mode": "Managed", "nodeSelector": {"matchLabels": {"evpn-test/world": id}},
            "vniRanges": [{"start": base, "end": base + 999}],
            "bgp": {"asn": 65001, "neighbors": [{"address": "198.18.255.1", "asn": 65000}]}}}))
        .await
        .unwrap();
        let network = format!("{id}-net");
        apply(
            client,
            &json!({"apiVersion": "k8s.ovn.org/v1", "kind": "ClusterUserDefinedNetwork",
            "metadata": {"name": network}, "spec": {"namespaceSelector": {},
            "network": {"topology": "Layer2", "layer2": {"role": "Primary", "subnets": ["10.100.0.0/16"]}}}}),
        )
        .await
        .unwrap();
        evpn_tests::annotate_network_id(client, &network, base).await.unwrap();
        World { id, vtep, network }
    }

    async fn create_evpn(&self, client: &Client, name: &str) {
        let evpn = json!({"apiVersion": "evpn.k8s.ovn.org/v1alpha1", "kind": "EVPN",
            "metadata": {"name": name, "labels": {"evpn-test/world": self.id}},
            "spec": {"network": {"kind": "ClusterUserDefinedNetwork", "name": self.network}, "vtep": self.vtep, "macVRF": {}}});
        let api: Api<Evpn> = Api::all(client.clone());
        api.create(&PostParams::default(), &serde_json::from_value(evpn).unwrap()).await.unwrap();
    }

    fn selector(&self) -> String {
        format!("evpn-test/world={}", self.id)
    }

    /// This world's EVPNs that have a VNI allocated.
    async fn allocated(&self, client: &Client) -> Vec<Evpn> {
        let api: Api<Evpn> = Api::all(client.clone());
        let list = api.list(&ListParams::default().labels(&self.selector())).await.unwrap();
        list.items.into_iter().filter(|e| e.status.as_ref().is_some_and(|s| s.mac_vrf.is_some())).collect()
    }

    async fn wait_allocated(&self, client: &Client, names: &[String]) {
        let wanted: BTreeSet<&String> = names.iter().collect();
        let done = eventually(|| async {
            let allocated: BTreeSet<String> = self.allocated(client).await.iter().map(|e| e.name_any()).collect();
            wanted.iter().all(|n| allocated.contains(*n))
        })
        .await;
        assert!(done.is_ok(), "not every EVPN of {names:?} got a VNI within {DEADLINE:?}");
    }
}

fn leases(client: &Client) -> Api<Lease> {
    Api::namespaced(client.clone(), LEASE_NAMESPACE)
}

fn holder(lease: &Lease) -> Option<&str> {
    lease.spec.as_ref()?.holder_identity.as_deref()
}

async fn wait_holder(client: &Client, lease: &str, identity: &str) {
    let api = leases(client);
    let held =
        eventually(|| async { api.get_opt(lease).await.ok().flatten().is_some_and(|l| holder(&l) == Some(identity)) });
    assert!(held.await.is_ok(), "{identity} never held the lease {lease}");
}

/// Every change the apiserver makes to `api`'s objects matching `params` after `version`, named.
async fn changes<K>(api: Api<K>, params: WatchParams, version: &str) -> impl Stream<Item = String> + use<K>
where
    K: kube::Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    let kind = K::kind(&()).into_owned();
    api.watch(&params, version).await.unwrap().filter_map(move |event| {
        let change = match event.unwrap() {
            WatchEvent::Added(o) => Some(format!("{kind} {} added", o.name_any())),
            WatchEvent::Modified(o) => Some(format!("{kind} {} modified", o.name_any())),
            WatchEvent::Deleted(o) => Some(format!("{kind} {} deleted", o.name_any())),
            WatchEvent::Bookmark(_) => None,
            WatchEvent::Error(e) => panic!("watching {kind}: {e}"),
        };
        std::future::ready(change)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_frozen_past_its_lease_writes_nothing_once_thawed() {
    let _turn = TURN.lock().await;
    let client = control_plane().await.unwrap().admin().await.unwrap();
    let w = World::new(&client).await;
    let lease = unique_name("lease");
    let timing = ["--lease-duration", "3s", "--renew-deadline", "2s", "--retry-period", "500ms"];
    let a = Replica::start(&lease, "a", &timing).await;
    wait_holder(&client, &lease, "a").await;
    let b = Replica::start(&lease, "b", &timing).await;
    b.wait_logged("standing by").await;

    // A burst of EVPNs; A is frozen while it is writing their allocations, with more to come.
    let burst: Vec<String> = (0..150).map(|i| format!("{}-e{i}", w.id)).collect();
    let creating = futures::stream::iter(burst.iter().map(|n| w.create_evpn(&client, n))).buffer_unordered(16).count();
    let freezing = async {
        let writing = eventually(|| async { w.allocated(&client).await.len() >= 10 }).await;
        assert!(writing.is_ok(), "A never allocated");
        a.signal("STOP");
    };
    futures::join!(creating, freezing);

    // B takes over once A's renewals have stopped for a whole lease, and does the burst's work.
    wait_holder(&client, &lease, "b").await;
    w.wait_allocated(&client, &burst).await;
    // Then B is frozen too, and EVPNs arrive that nobody has allocated: work A would do.
    b.signal("STOP");
    let late: Vec<String> = (0..5).map(|i| format!("{}-late{i}", w.id)).collect();
    for name in &late {
        w.create_evpn(&client, name).await;
    }

    // From here on, nothing but A can change what the operator writes.
    let (evpns, sets, lease_api) =
        (Api::<Evpn>::all(client.clone()), Api::<EvpnNetworkSet>::all(client.clone()), leases(&client));
    let by_world = ListParams::default().labels(&w.selector());
    let (set_name, lease_name) = (format!("metadata.name={}", w.vtep), format!("metadata.name={lease}"));
    let evpns_version = evpns.list_metadata(&by_world).await.unwrap().metadata.resource_version.unwrap();
    let sets_version =
        sets.list_metadata(&ListParams::default().fields(&set_name)).await.unwrap().metadata.resource_version.unwrap();
    let lease_version = lease_api
        .list_metadata(&ListParams::default().fields(&lease_name))
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut writes = futures::stream::select_all([
        changes(evpns, WatchParams::default().labels(&w.selector()), &evpns_version).await.boxed(),
        changes(sets, WatchParams::default().fields(&set_name), &sets_version).await.boxed(),
        changes(lease_api, WatchParams::default().fields(&lease_name), &lease_version).await.boxed(),
    ]);
    let thawed = Instant::now();
    a.signal("CONT");
    // A may take the lease back only after seeing B's record unchanged for a whole lease from
    // its first look after waking: until then, any change is a write A must not make.
    let window = Duration::from_millis(2500);
    let mut seen = Vec::new();
    while let Ok(Some(change)) = tokio::time::timeout_at(thawed + window, writes.next()).await {
        seen.push(format!("{change} {:?} after the thaw", thawed.elapsed()));
    }
    assert!(seen.is_empty(), "the thawed old leader wrote while B held the lease: {seen:#?}");

    // A is alive, only fenced: it takes over from the frozen B and allocates the late EVPNs.
    wait_holder(&client, &lease, "a").await;
    w.wait_allocated(&client, &late).await;
    let vnis: Vec<u32> =
        w.allocated(&client).await.iter().filter_map(|e| Some(e.status.as_ref()?.mac_vrf.as_ref()?.vni)).collect();
    assert_eq!(vnis.iter().collect::<BTreeSet<_>>().len(), vnis.len(), "duplicate VNIs: {vnis:?}");
    assert!(a.logged("no renewal within the renew deadline"), "A must say why it stopped leading");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_stopped_with_sigterm_hands_over_within_two_seconds() {
    let _turn = TURN.lock().await;
    let client = control_plane().await.unwrap().admin().await.unwrap();
    let lease = unique_name("lease");
    // The defaults: what a rollout does.
    let mut a = Replica::start(&lease, "a", &[]).await;
    wait_holder(&client, &lease, "a").await;
    let b = Replica::start(&lease, "b", &[]).await;
    b.wait_logged("standing by").await;

    let api = leases(&client);
    let name = format!("metadata.name={lease}");
    let version =
        api.list_metadata(&ListParams::default().fields(&name)).await.unwrap().metadata.resource_version.unwrap();
    let mut events = api.watch(&WatchParams::default().fields(&name), &version).await.unwrap().boxed();
    let stopped = Instant::now();
    a.signal("TERM");
    let handed_over = loop {
        let event = tokio::time::timeout_at(stopped + DEADLINE, events.next()).await;
        match event.expect("b never took the lease").expect("the watch ended").unwrap() {
            WatchEvent::Modified(l) if holder(&l) == Some("b") => break stopped.elapsed(),
            _ => {}
        }
    };
    eprintln!("hand-over: {handed_over:?} from SIGTERM to the standby holding the lease");
    assert!(handed_over < Duration::from_secs(2), "the hand-over took {handed_over:?}");
    let exit = tokio::task::spawn_blocking(move || {
        let status = a.child.wait();
        (a, status)
    });
    let (a, status) = tokio::time::timeout(DEADLINE, exit).await.unwrap().unwrap();
    assert!(status.unwrap().success(), "SIGTERM is a clean stop");
    assert!(a.logged("released the lease"));
    b.wait_logged("leading").await;
}

#[test]
fn election_timings_out_of_client_go_order_are_refused_at_startup() {
    let out = Command::new(env!("CARGO_BIN_EXE_evpn-operator"))
        .args(["--no-webhook", "--log-format", "text", "--lease-duration", "10s", "--renew-deadline", "10s"])
        .env("KUBECONFIG", "/nonexistent")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("lease duration > renew deadline > retry period"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_fails_while_a_round_is_stalled_and_not_while_the_loop_idles() {
    let _turn = TURN.lock().await;
    let client = control_plane().await.unwrap().admin().await.unwrap();
    let w = World::new(&client).await;
    // Accepts the apiserver's connections and never answers (not even the TLS handshake).
    let stall = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}/", stall.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut connections = Vec::new();
        while let Ok((connection, _)) = stall.accept().await {
            connections.push(connection);
        }
    });
    let webhooks: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    let stalling = json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": w.id}, "webhooks": [{"name": "stall.evpn.test", "clientConfig": {"url": url},
        "rules": [{"apiGroups": ["evpn.k8s.ovn.org"], "apiVersions": ["*"], "operations": ["CREATE", "UPDATE"],
                   "resources": ["evpns/status"]}],
        "objectSelector": {"matchLabels": {"evpn-test/world": w.id}}, "failurePolicy": "Fail",
        "sideEffects": "None", "admissionReviewVersions": ["v1"], "timeoutSeconds": 30}]});
    apply(&client, &stalling).await.unwrap();

    let operator = Replica::start(&unique_name("lease"), "a", &["--round-stall-limit", "1s"]).await;
    operator.wait_logged("leading").await;
    let healthz = || async { http_get(operator.metrics, "/healthz").await.ok() };
    let alive = eventually(|| async { healthz().await.is_some_and(|r| r.status == 200) }).await;
    assert!(alive.is_ok(), "/healthz never answered");
    let name = format!("{}-e", w.id);
    w.create_evpn(&client, &name).await;
    let reason = Mutex::new(String::new());
    let stalled = eventually(|| async {
        let Some(r) = healthz().await else { return false };
        *reason.lock().unwrap() = r.body;
        r.status == 503
    })
    .await;
    assert!(stalled.is_ok(), "/healthz stayed ok while a round was stalled on its status write");
    let reason = reason.into_inner().unwrap();
    assert!(reason.contains("the control loop has been in one round for"), "{reason}");

    // The stall ends; the round completes, and a loop that then waits is healthy however long.
    webhooks.delete(&w.id, &Default::default()).await.unwrap();
    held.abort();
    w.wait_allocated(&client, std::slice::from_ref(&name)).await;
    let recovered = eventually(|| async { healthz().await.is_some_and(|r| r.status == 200) }).await;
    assert!(recovered.is_ok(), "/healthz never recovered after the round completed");
    let idle_until = Instant::now() + Duration::from_secs(3);
    let mut probe = tokio::time::interval(Duration::from_millis(100));
    while Instant::now() < idle_until {
        probe.tick().await;
        let r = healthz().await.expect("/healthz answers");
        assert_eq!(r.status, 200, "an idle loop is healthy, past the limit too: {}", r.body);
    }
}
