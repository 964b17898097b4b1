//! Test harness: a real control plane (etcd + kube-apiserver) for every integration-test binary.
//!
//! [`control_plane`] gives each test binary one control plane with this project's CRDs, the
//! minimal CRDs of the OVN-Kubernetes and frr-k8s kinds we read or write, and the RBAC of
//! `config/rbac/` installed. It reuses the control plane whose run directory is named by
//! `EVPN_TEST_CONTROL_PLANE` (what `hack/test.sh` and CI do: one start for the whole suite), or
//! starts a private one with `hack/control-plane.sh` that is torn down when the test binary exits.
//!
//! Clients are made per test ([`ControlPlane::admin`], [`ControlPlane::user`]): a kube `Client`
//! belongs to the tokio runtime it was made on, and every `#[tokio::test]` has its own. Because a
//! control plane may be shared by several binaries at once, tests name their objects with
//! [`unique_name`].

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::GroupVersionKind;
use kube::discovery::pinned_kind;
use kube::runtime::wait::{Condition, await_condition, conditions};
use kube::{Client, Config, Resource};
use tokio::sync::OnceCell;

pub mod admin_frr;
pub mod faults;
pub mod frrk8s;
pub mod lab;
pub mod leaf;
pub mod simulated;

/// Field manager of everything the harness applies.
const FIELD_MANAGER: &str = "evpn-test-harness";

/// How long the harness waits for the control plane or a condition before failing the test.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// A running control plane: where its kubeconfigs are.
#[derive(Debug)]
pub struct ControlPlane {
    run_dir: PathBuf,
}

impl ControlPlane {
    /// Kubeconfig of the cluster admin (`system:masters`).
    pub fn admin_kubeconfig(&self) -> PathBuf {
        self.run_dir.join("admin.kubeconfig")
    }

    /// Kubeconfig of `evpn-user`, an identity with no permissions beyond what RBAC grants it.
    pub fn user_kubeconfig(&self) -> PathBuf {
        self.run_dir.join("user.kubeconfig")
    }

    /// Kubeconfig of `system:node:NAME`, as a node's agent uses it.
    pub fn node_kubeconfig(&self, name: &str) -> PathBuf {
        self.run_dir.join(format!("node-{name}.kubeconfig"))
    }

    /// A client acting as the cluster admin.
    pub async fn admin(&self) -> anyhow::Result<Client> {
        client_from(&self.admin_kubeconfig()).await
    }

    /// A client acting as the unprivileged `evpn-user`.
    pub async fn user(&self) -> anyhow::Result<Client> {
        client_from(&self.user_kubeconfig()).await
    }

    /// A client acting as the operator's service account.
    pub async fn operator(&self) -> anyhow::Result<Client> {
        client_from(&self.run_dir.join("operator.kubeconfig")).await
    }

    /// A client acting as `system:node:NAME` (group `system:nodes`), as a node's agent may;
    /// `hack/control-plane.sh` makes worker-1, worker-2 and worker-3.
    pub async fn node(&self, name: &str) -> anyhow::Result<Client> {
        client_from(&self.node_kubeconfig(name)).await
    }
}

async fn client_from(kubeconfig: &Path) -> anyhow::Result<Client> {
    let kc = Kubeconfig::read_from(kubeconfig).with_context(|| format!("reading {}", kubeconfig.display()))?;
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(config)?)
}

/// The repository root, for config/ and hack/.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

static CONTROL_PLANE: OnceCell<ControlPlane> = OnceCell::const_new();

/// The control plane of this test binary, started and set up on first use.
pub async fn control_plane() -> anyhow::Result<&'static ControlPlane> {
    CONTROL_PLANE
        .get_or_try_init(|| async {
            let cp = match std::env::var_os("EVPN_TEST_CONTROL_PLANE") {
                Some(dir) => ControlPlane { run_dir: dir.into() },
                None => start_private("").await?,
            };
            install(&cp.admin().await?).await.context("installing CRDs and RBAC")?;
            Ok(cp)
        })
        .await
}

/// A second, independent cluster's control plane for this process (another cluster on the same
/// fabric), set up like the first; `name` tells it apart.
pub async fn another_control_plane(name: &str) -> anyhow::Result<ControlPlane> {
    let cp = start_private(&format!("-{name}")).await?;
    install(&cp.admin().await?).await.context("installing CRDs and RBAC")?;
    Ok(cp)
}

/// Starts a control plane for this process alone, on free ports, removed when the process exits.
async fn start_private(suffix: &str) -> anyhow::Result<ControlPlane> {
    let run_dir = std::env::temp_dir().join(format!("evpn-operator/test-{}{suffix}", std::process::id()));
    let ports = free_ports(3)?;
    let script = repo_root().join("hack/control-plane.sh");
    let out = tokio::process::Command::new("bash")
        .arg(&script)
        .arg("start")
        .env("EVPN_RUN", &run_dir)
        .env("ETCD_PORT", ports[0].to_string())
        .env("ETCD_PEER_PORT", ports[1].to_string())
        .env("API_PORT", ports[2].to_string())
        .env("OWNER_PID", std::process::id().to_string())
        .output()
        .await
        .with_context(|| format!("running {}", script.display()))?;
    if !out.status.success() {
        bail!(
            "could not start a control plane ({}); install one with `hack/control-plane.sh install` \
             or point EVPN_TEST_CONTROL_PLANE at a running one:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(ControlPlane { run_dir })
}

fn free_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    // Hold all listeners until every port is chosen so the kernel cannot hand one out twice.
    let listeners = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .context("binding a free port")?;
    listeners.iter().map(|l| Ok(l.local_addr()?.port())).collect()
}

/// Applies this project's CRDs, the minimal third-party CRDs and `config/rbac/`, then waits for
/// every CRD to be Established.
async fn install(client: &Client) -> anyhow::Result<()> {
    let root = repo_root().join("config");
    let has_cel = server_has_cel(client).await?;
    let mut crds = Vec::new();
    for dir in ["crd", "third-party"] {
        for mut doc in read_yaml_dir(&root.join(dir))? {
            if !has_cel {
                strip_cel(&mut doc);
            }
            let crd: CustomResourceDefinition = serde_json::from_value(doc)?;
            crds.push(apply_crd(client, &crd).await?);
        }
    }
    for name in crds {
        wait_crd_established(client, &name).await?;
    }
    for doc in read_yaml_dir(&root.join("rbac"))? {
        apply(client, &doc).await?;
    }
    Ok(())
}

/// Whether the apiserver knows `x-kubernetes-validations` (Kubernetes 1.25 and later).
pub async fn server_has_cel(client: &Client) -> anyhow::Result<bool> {
    let version = client.apiserver_version().await.context("reading the apiserver version")?;
    let minor: u32 = version.minor.trim_end_matches('+').parse().unwrap_or(0);
    Ok(version.major != "1" || minor >= 25)
}

/// Removes CEL rules from a CRD. Servers without CEL drop them on a plain create, but their
/// server-side apply refuses the unknown field outright, so the harness strips them first,
/// exactly what those servers would have kept.
pub fn strip_cel(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            map.remove("x-kubernetes-validations");
            map.values_mut().for_each(strip_cel);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(strip_cel),
        _ => {}
    }
}

/// Server-side applies a CRD and returns its name.
pub async fn apply_crd(client: &Client, crd: &CustomResourceDefinition) -> anyhow::Result<String> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let name = crd.metadata.name.clone().context("CRD without a name")?;
    api.patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(crd))
        .await
        .with_context(|| format!("applying CRD {name}"))?;
    Ok(name)
}

/// Waits until the named CRD is Established (its API is served).
pub async fn wait_crd_established(client: &Client, name: &str) -> anyhow::Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    wait_for(&api, name, conditions::is_crd_established()).await.map(drop)
}

/// Waits, up to [`DEADLINE`], until `cond` holds for the named object; returns the object.
pub async fn wait_for<K>(api: &Api<K>, name: &str, cond: impl Condition<K>) -> anyhow::Result<K>
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    match tokio::time::timeout(DEADLINE, await_condition(api.clone(), name, cond)).await {
        Ok(Ok(Some(obj))) => Ok(obj),
        Ok(Ok(None)) => bail!("{name} was deleted while waiting for it"),
        Ok(Err(e)) => Err(e).with_context(|| format!("watching {name}")),
        Err(_) => bail!("{name} did not reach the expected condition within {DEADLINE:?}"),
    }
}

/// Every YAML document of every `.yaml` file in `dir`, in file-name order.
pub fn read_yaml_dir(dir: &Path) -> anyhow::Result<Vec<serde_json::Value>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    files.retain(|p| p.extension().is_some_and(|e| e == "yaml"));
    files.sort();
    let mut docs = Vec::new();
    for f in files {
        docs.extend(read_yaml(&f)?);
    }
    Ok(docs)
}

/// Every YAML document in one file.
pub fn read_yaml(file: &Path) -> anyhow::Result<Vec<serde_json::Value>> {
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let docs: Vec<serde_json::Value> =
        serde_saphyr::from_multiple(&text).with_context(|| format!("parsing {}", file.display()))?;
    Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
}

/// The typed API of any object given as JSON (kind looked up by discovery).
pub async fn dynamic_api(client: &Client, obj: &serde_json::Value) -> anyhow::Result<(Api<DynamicObject>, String)> {
    let api_version = obj["apiVersion"].as_str().context("object without apiVersion")?;
    let kind = obj["kind"].as_str().context("object without kind")?;
    let name = obj["metadata"]["name"].as_str().context("object without metadata.name")?.to_owned();
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let gvk = GroupVersionKind::gvk(group, version, kind);
    let (resource, caps) =
        pinned_kind(client, &gvk).await.with_context(|| format!("discovering {api_version} {kind}"))?;
    let api = match (caps.scope, obj["metadata"]["namespace"].as_str()) {
        (kube::discovery::Scope::Namespaced, Some(ns)) => Api::namespaced_with(client.clone(), ns, &resource),
        (kube::discovery::Scope::Namespaced, None) => Api::default_namespaced_with(client.clone(), &resource),
        (kube::discovery::Scope::Cluster, _) => Api::all_with(client.clone(), &resource),
    };
    Ok((api, name))
}

/// Server-side applies any object given as JSON.
pub async fn apply(client: &Client, obj: &serde_json::Value) -> anyhow::Result<DynamicObject> {
    let (api, name) = dynamic_api(client, obj).await?;
    api.patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(obj))
        .await
        .with_context(|| format!("applying {} {name}", obj["kind"]))
}

/// A name no other test (in this or another binary sharing the control plane) uses.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    format!("{prefix}-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// Does what OVN-Kubernetes does for a ClusterUserDefinedNetwork named `network`: a
/// NetworkAttachmentDefinition (in `default`) annotated with the network's OVN name and `id`,
/// which names the network's VRF (`mp<id>-udn-vrf`) when the CUDN's own name is too long.
pub async fn annotate_network_id(client: &Client, network: &str, id: u32) -> anyhow::Result<()> {
    let nad = serde_json::json!({"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
        "metadata": {"name": network, "namespace": "default", "annotations": {
            "k8s.ovn.org/network-name": format!("cluster_udn_{network}"), "k8s.ovn.org/network-id": id.to_string()}},
        "spec": {"config": "{}"}});
    apply(client, &nad).await.map(drop)
}

/// Keeps what cargo sets for a running test out of a command that builds with cargo: ring's
/// build script reruns when CARGO_MANIFEST_DIR changes, so a build from a test and the test
/// suite's own would otherwise rebuild the TLS stack for each other every time.
pub fn without_cargo_test_env(cmd: &mut std::process::Command) -> &mut std::process::Command {
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if key.starts_with("CARGO_PKG_")
            || ["CARGO_MANIFEST_DIR", "CARGO_MANIFEST_PATH", "CARGO_CRATE_NAME", "CARGO_PRIMARY_PACKAGE"]
                .contains(&key.as_ref())
        {
            cmd.env_remove(key.as_ref());
        }
    }
    cmd
}

/// The binary of workspace package `package` (named like it) next to this test binary, brought
/// up to date first, once per test binary: `cargo test` builds another package's tests but not
/// its binaries. A benchmark runs from target/release and gets a release build.
pub fn workspace_binary(package: &str) -> PathBuf {
    static BUILT: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let exe = std::env::current_exe().expect("the test binary's path");
    let dir = exe.parent().and_then(Path::parent).expect("test binaries live in target/<profile>/deps").to_owned();
    let mut built = BUILT.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if !built.iter().any(|p| p == package) {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut args = vec!["build", "-p", package];
        if dir.ends_with("release") {
            args.push("--release");
        }
        let mut build = std::process::Command::new(cargo);
        build.args(args);
        let status = without_cargo_test_env(&mut build).status();
        assert!(status.is_ok_and(|s| s.success()), "building {package}");
        built.push(package.to_owned());
    }
    dir.join(package)
}

/// The status code of a failed API call, if the apiserver answered.
pub fn api_status(err: &kube::Error) -> Option<u16> {
    match err {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

/// Polls `check` until it returns true, failing after [`DEADLINE`]. For conditions no watch can
/// observe (an authorizer's cache, a webhook registration becoming active).
pub async fn eventually<F, Fut>(mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let mut interval = tokio::time::interval(Duration::from_millis(50));
    loop {
        interval.tick().await;
        if check().await {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("condition not met within {DEADLINE:?}");
        }
    }
}

/// An answer of a plain-HTTP endpoint (metrics, probes).
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: String,
}

/// `GET path` over HTTP/1.1 from a server on `addr`: how a probe or a scraper asks the binaries'
/// metrics endpoints.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> anyhow::Result<HttpResponse> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(addr).await.with_context(|| format!("connecting to {addr}"))?;
    stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes()).await?;
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await?;
    let (head, body) = raw.split_once("\r\n\r\n").context("no end of headers")?;
    let mut lines = head.lines();
    let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|s| s.parse().ok()).context("no status")?;
    let content_type = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.eq_ignore_ascii_case("content-type"))
        .map(|(_, value)| value.trim().to_owned());
    Ok(HttpResponse { status, content_type, body: body.to_owned() })
}

/// The value of the first sample of `metric` (name and labels as written, e.g.
/// `evpn_agent_networks{phase="Failed"}`) in Prometheus text.
pub fn sample(text: &str, metric: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(metric)?.strip_prefix(' ')?.trim().parse().ok())
}

/// A throwaway certificate authority for serving certificates on loopback.
pub struct TestCa {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    /// The CA certificate, PEM: what a client (the apiserver's caBundle) trusts.
    pub cert_pem: String,
}

impl TestCa {
    /// A new CA with a fresh key.
    pub fn new() -> anyhow::Result<Self> {
        let key = rcgen::KeyPair::generate()?;
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, "evpn-operator test CA");
        let cert_pem = params.self_signed(&key)?.pem();
        Ok(Self { issuer: rcgen::Issuer::new(params, key), cert_pem })
    }

    /// A TLS client that trusts this CA and offers `alpn` (`b"h2"`, `b"http/1.1"`), as the
    /// apiserver calls a webhook.
    pub fn connector(&self, alpn: &[u8]) -> anyhow::Result<tokio_rustls::TlsConnector> {
        use rustls::pki_types::pem::PemObject as _;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(rustls::pki_types::CertificateDer::from_pem_slice(self.cert_pem.as_bytes())?)?;
        let mut config =
            rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()?
                .with_root_certificates(roots)
                .with_no_client_auth();
        config.alpn_protocols = vec![alpn.to_vec()];
        Ok(tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)))
    }

    /// A new serving certificate and key (PEM) for 127.0.0.1 and localhost.
    pub fn serving_pair(&self) -> anyhow::Result<(String, String)> {
        let key = rcgen::KeyPair::generate()?;
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()])?;
        params.subject_alt_names.push(rcgen::SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
        params.distinguished_name.push(rcgen::DnType::CommonName, "127.0.0.1");
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}
