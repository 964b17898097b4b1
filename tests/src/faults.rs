//! Faults between the operator and the apiserver: an HTTP-aware proxy and restarts of the control
//! plane's processes under a running operator.
//!
//! The proxy terminates TLS with a throwaway CA ([`TestCa`]) and forwards each connection to the
//! apiserver over its own TLS connection, so it sees every request in the clear and can aim a
//! fault at one of them: "cut the connection after the apiserver answered the PATCH of
//! `evpns/NAME/status`" is a rule on method and path, not a guess about timing. A pure TCP proxy
//! could only cut connections blindly, which would not say whether the write it broke had
//! landed. Each client connection gets one upstream connection, so a cut or a reset looks to the
//! client exactly like the apiserver's connection dying. Connections the proxy closes are reset
//! (zero linger), the harsher of the two ways a connection ends.
//!
//! [`ControlPlane::restart`] kills etcd or kube-apiserver and starts it again with the same
//! command line (same ports, same data directory), recording the new PID where
//! `hack/control-plane.sh stop` looks for it, so teardown still finds everything. It kills with
//! SIGKILL, a crash: the harsher case for clients, and an apiserver asked to stop gracefully
//! waits up to a minute for its open watches.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context as _, bail};
use http::{Method, Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::{ControlPlane, DEADLINE, TestCa, eventually};

/// What happens to a request a fault matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Forward it, wait for the apiserver's answer, then reset the client's connection: the
    /// write landed but the client never hears so.
    LoseResponse,
    /// Reset the client's connection before forwarding: the request never reaches the apiserver.
    Reset,
}

/// A fault armed for the next request with this method and path (query ignored).
struct Armed {
    method: Method,
    path: String,
    fault: Fault,
    fired: watch::Sender<bool>,
}

/// Fires once, when its fault has hit a request.
pub struct Fired(watch::Receiver<bool>);

impl Fired {
    /// Waits until the fault has hit, failing after [`DEADLINE`].
    pub async fn wait(mut self) -> anyhow::Result<()> {
        match tokio::time::timeout(DEADLINE, self.0.wait_for(|fired| *fired)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => bail!("the proxy stopped before the fault hit"),
            Err(_) => bail!("no matching request within {DEADLINE:?}"),
        }
    }
}

#[derive(Default)]
struct Faults {
    armed: Mutex<Vec<Armed>>,
    latency: Mutex<Duration>,
}

impl Faults {
    /// Takes the first armed fault matching the request, if any.
    fn take(&self, method: &Method, path: &str) -> Option<(Fault, watch::Sender<bool>)> {
        let mut armed = self.armed.lock().unwrap_or_else(PoisonError::into_inner);
        let i = armed.iter().position(|a| a.method == method && a.path == path)?;
        let a = armed.remove(i);
        Some((a.fault, a.fired))
    }

    fn latency(&self) -> Duration {
        *self.latency.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A TLS-terminating proxy in front of a control plane's apiserver; stops when dropped.
pub struct FaultProxy {
    addr: SocketAddr,
    ca: TestCa,
    faults: Arc<Faults>,
    task: JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FaultProxy {
    /// Starts a proxy to `control_plane`'s apiserver on a free loopback port.
    pub async fn start(control_plane: &ControlPlane) -> anyhow::Result<Self> {
        let upstream = apiserver_addr(control_plane)?;
        let apiserver_ca =
            std::fs::read(control_plane.run_dir.join("pki/ca.crt")).context("reading the apiserver CA")?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&apiserver_ca) {
            roots.add(cert?)?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let client_tls = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let ca = TestCa::new()?;
        let (cert, key) = ca.serving_pair()?;
        let mut server_tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(
                CertificateDer::pem_slice_iter(cert.as_bytes()).collect::<Result<_, _>>()?,
                PrivateKeyDer::from_pem_slice(key.as_bytes())?,
            )?;
        // HTTP/1.1 only: one request at a time per connection, so a cut hits exactly one request.
        server_tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let faults = Arc::new(Faults::default());
        let proxy = Proxy {
            upstream,
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(server_tls)),
            connector: tokio_rustls::TlsConnector::from(Arc::new(client_tls)),
            faults: faults.clone(),
        };
        let task = tokio::spawn(proxy.accept(listener));
        Ok(Self { addr, ca, faults, task })
    }

    /// A client with the identity of `kubeconfig` whose requests go through the proxy.
    pub async fn client(&self, kubeconfig: &std::path::Path) -> anyhow::Result<Client> {
        let kc = Kubeconfig::read_from(kubeconfig).with_context(|| format!("reading {}", kubeconfig.display()))?;
        let mut config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
        config.cluster_url = format!("https://{}", self.addr).parse()?;
        let ca = CertificateDer::from_pem_slice(self.ca.cert_pem.as_bytes())?;
        config.root_cert = Some(vec![ca.to_vec()]);
        config.root_cert_file = None;
        Ok(Client::try_from(config)?)
    }

    /// A client with the operator's identity whose requests go through the proxy.
    pub async fn operator(&self, control_plane: &ControlPlane) -> anyhow::Result<Client> {
        self.client(&control_plane.run_dir.join("operator.kubeconfig")).await
    }

    /// Arms `fault` for the next `method` request of `path` (e.g.
    /// `/apis/evpn.k8s.ovn.org/v1alpha1/evpns/blue/status`).
    pub fn arm(&self, fault: Fault, method: Method, path: &str) -> Fired {
        let (fired, seen) = watch::channel(false);
        let armed = Armed { method, path: path.to_owned(), fault, fired };
        self.faults.armed.lock().unwrap_or_else(PoisonError::into_inner).push(armed);
        Fired(seen)
    }

    /// Delays every request by `latency` before forwarding it (zero: no delay).
    pub fn set_latency(&self, latency: Duration) {
        *self.faults.latency.lock().unwrap_or_else(PoisonError::into_inner) = latency;
    }
}

fn apiserver_addr(control_plane: &ControlPlane) -> anyhow::Result<SocketAddr> {
    let kc = Kubeconfig::read_from(control_plane.admin_kubeconfig())?;
    let server = kc.clusters.first().and_then(|c| c.cluster.as_ref()?.server.clone()).context("no server")?;
    let uri: http::Uri = server.parse()?;
    let port = uri.port_u16().context("apiserver URL without a port")?;
    Ok(SocketAddr::from(([127, 0, 0, 1], port)))
}

#[derive(Clone)]
struct Proxy {
    upstream: SocketAddr,
    acceptor: tokio_rustls::TlsAcceptor,
    connector: tokio_rustls::TlsConnector,
    faults: Arc<Faults>,
}

impl Proxy {
    async fn accept(self, listener: TcpListener) {
        loop {
            let Ok((client, _)) = listener.accept().await else { continue };
            tokio::spawn(self.clone().connection(client));
        }
    }

    /// Serves one client connection until either side closes it or a fault cuts it.
    async fn connection(self, client: TcpStream) {
        // Whatever the proxy closes, it resets.
        let _ = client.set_zero_linger();
        // An apiserver that is down refuses the client's connection too.
        let Ok(upstream) = TcpStream::connect(self.upstream).await else { return };
        let Ok(name) = ServerName::try_from("127.0.0.1") else { return };
        let Ok(upstream) = self.connector.connect(name, upstream).await else { return };
        let Ok((sender, upstream_conn)) = hyper::client::conn::http1::handshake(TokioIo::new(upstream)).await else {
            return;
        };
        let Ok(client) = self.acceptor.accept(client).await else { return };
        let sender = Arc::new(tokio::sync::Mutex::new(sender));
        let cut = Arc::new(Notify::new());
        let service = {
            let cut = cut.clone();
            service_fn(move |request: Request<Incoming>| {
                let (faults, sender, cut) = (self.faults.clone(), sender.clone(), cut.clone());
                async move {
                    let fault = faults.take(request.method(), request.uri().path());
                    let latency = faults.latency();
                    if !latency.is_zero() {
                        tokio::time::sleep(latency).await;
                    }
                    if let Some((Fault::Reset, fired)) = &fault {
                        fired.send_replace(true);
                        cut.notify_one();
                        return std::future::pending().await;
                    }
                    let response: Result<Response<Incoming>, hyper::Error> =
                        sender.lock().await.send_request(request).await;
                    if let Some((Fault::LoseResponse, fired)) = &fault {
                        // The apiserver has answered, so the write is committed (or refused).
                        fired.send_replace(true);
                        cut.notify_one();
                        return std::future::pending().await;
                    }
                    response
                }
            })
        };
        let serve = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(client), service);
        tokio::select! {
            _ = serve => {}
            _ = upstream_conn => {}
            () = cut.notified() => {}
        }
    }
}

/// A process of the control plane.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Component {
    Etcd,
    Apiserver,
}

impl Component {
    fn name(self) -> &'static str {
        match self {
            Self::Etcd => "etcd",
            Self::Apiserver => "kube-apiserver",
        }
    }
}

impl ControlPlane {
    /// Kills `component` and returns what [`ControlPlane::start`] needs to start it again as it
    /// was. Only for a control plane this process started: others may be sharing it.
    pub async fn kill(&self, component: Component) -> anyhow::Result<Stopped> {
        let pid_file = self.run_dir.join(format!("{}.pid", component.name()));
        let pid: u32 = std::fs::read_to_string(&pid_file)?.trim().parse()?;
        let argv: Vec<String> = std::fs::read(format!("/proc/{pid}/cmdline"))?
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let status = tokio::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status().await?;
        if !status.success() {
            bail!("could not kill {} ({pid})", component.name());
        }
        eventually(|| async { gone(pid) })
            .await
            .with_context(|| format!("{} ({pid}) did not exit", component.name()))?;
        Ok(Stopped { component, argv })
    }

    /// Starts a stopped component again with its old command line, same ports and data.
    pub async fn start(&self, stopped: Stopped) -> anyhow::Result<()> {
        let name = stopped.component.name();
        let (program, args) = stopped.argv.split_first().context("empty command line")?;
        let log =
            std::fs::OpenOptions::new().append(true).create(true).open(self.run_dir.join(format!("{name}.log")))?;
        let child = tokio::process::Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        let pid = child.id().context("no PID")?;
        std::fs::write(self.run_dir.join(format!("{name}.pid")), format!("{pid}\n"))?;
        // Reaped in the background, so a later stop sees it gone rather than a zombie.
        tokio::spawn(async move {
            let mut child = child;
            let _ = child.wait().await;
        });
        Ok(())
    }

    /// Kills `component`, waits until the apiserver says it is not ready, starts it again and
    /// waits until the apiserver is ready.
    pub async fn restart(&self, component: Component) -> anyhow::Result<()> {
        let admin = self.admin().await?;
        let stopped = self.kill(component).await?;
        eventually(|| async { !ready(&admin).await }).await.context("the apiserver stayed ready")?;
        self.start(stopped).await?;
        eventually(|| async { ready(&admin).await }).await.context("the apiserver did not become ready again")
    }
}

/// A stopped control-plane process, with how to start it again.
pub struct Stopped {
    component: Component,
    argv: Vec<String>,
}

/// Whether the process has exited (gone, or a zombie waiting for its parent).
fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z')),
        Err(_) => true,
    }
}

/// Whether the apiserver answers `/readyz` (which includes etcd) with 200.
async fn ready(client: &Client) -> bool {
    let Ok(request) = Request::get("/readyz").body(Vec::new()) else { return false };
    client.request_text(request).await.is_ok()
}
