//! Leader election on a coordination.k8s.io Lease, with the guarantees of client-go's
//! `leaderelection`.
//!
//! Three durations, in client-go's order: `lease_duration` > `renew_deadline` > `retry_period`.
//! Every `retry_period` the holder renews and a standby looks at the Lease. A standby takes it
//! over only after seeing the same record unchanged for the lease's whole `leaseDurationSeconds`
//! by its own monotonic clock (no clock comparison between machines), or at once when its holder
//! is empty (released). Every change is a resourceVersion-checked update, so two replicas cannot
//! both win.
//!
//! The holder acts only until `renew_deadline` after the *start* of its last successful renewal
//! (the apiserver recorded it no earlier than that), which is before any standby can count a whole
//! `lease_duration` from having seen that renewal. This must hold even for a process frozen
//! (SIGSTOP, a stalled VM) past its lease: a frozen process cannot notice anything, so on waking
//! it would finish whatever it was doing before any check of the lease ran. The controllers
//! therefore get a [`Fence`]d client, and the election drops their work at that instant. A check
//! in front of the client's request queue is not enough: requests queued before a freeze (a
//! round has dozens in flight) would still reach the socket after it. So the binary's fence
//! ([`Connection::fenced_at_the_socket`]) sits on the connections themselves: every task that
//! writes to an apiserver socket checks the clock each time it runs and closes its connection
//! once the fence has passed. What can still escape is a write already in the kernel's socket buffer, which the
//! apiserver receives whether or not the process is frozen; only fencing by the apiserver could
//! do better, and the Kubernetes API has none.
//!
//! Every call to the apiserver is bounded: a renewal by what is left of the renew deadline, any
//! other attempt and the release by `renew_deadline`. [`Election::release`] hands the lease over
//! on shutdown the way client-go's `ReleaseOnCancel` does (empty holder, `leaseDurationSeconds:
//! 1`), so a standby takes over at its next look instead of waiting the lease out.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{bail, ensure};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::time::{Instant, sleep, sleep_until, timeout};

/// Who competes for which lease, and how fast.
#[derive(Clone, Debug)]
pub struct Election {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    /// How long a standby waits, after the last renewal it saw, before taking the lease over.
    /// Whole seconds: the Lease records it in seconds.
    pub lease_duration: Duration,
    /// How long the holder keeps acting after the start of its last successful renewal.
    pub renew_deadline: Duration,
    /// How often the holder renews and a standby looks at the Lease.
    pub retry_period: Duration,
}

/// The Lease as a standby last saw it, and since when it has been unchanged.
struct Observed {
    spec: LeaseSpec,
    since: Instant,
}

impl Election {
    /// Checks client-go's ordering, lease duration > renew deadline > retry period, and that the
    /// lease duration fits the Lease (whole seconds, at least one).
    pub fn validate(&self) -> anyhow::Result<()> {
        let (lease, renew, retry) = (self.lease_duration, self.renew_deadline, self.retry_period);
        ensure!(
            lease > renew && renew > retry && !retry.is_zero(),
            "leader election needs lease duration > renew deadline > retry period > 0, got {lease:?}, {renew:?} \
             and {retry:?}: the holder must stop acting before a standby may take over, and must be able to \
             retry a renewal before it gives up"
        );
        if lease.subsec_nanos() != 0 || lease_seconds(lease).is_none() {
            bail!("the lease duration must be a whole number of seconds (the Lease records seconds), got {lease:?}");
        }
        Ok(())
    }

    /// Runs `work` with a client fenced to this replica's leadership whenever this replica leads,
    /// until the future is dropped. `on_change` hears about every change of leadership.
    pub async fn lead<F, Fut>(&self, connection: Connection, work: F, on_change: impl Fn(bool))
    where
        F: Fn(kube::Client) -> Fut,
        Fut: Future<Output = ()>,
    {
        let Connection { lease, work: fenced, fence } = connection;
        let api: Api<Lease> = Api::namespaced(lease, &self.namespace);
        let mut observed = None;
        loop {
            let started = Instant::now();
            match timeout(self.renew_deadline, self.try_acquire_or_renew(&api, &mut observed)).await {
                Ok(Ok(true)) => {
                    fence.extend(started + self.renew_deadline);
                    tracing::info!(lease = %self.name, identity = %self.identity, "leading");
                    on_change(true);
                    tokio::select! {
                        // Checked first: once the fence has passed, the work is not polled again.
                        biased;
                        () = self.keep(&api, &fence) => {}
                        () = work(fenced.clone()) => tracing::warn!(lease = %self.name, "the controllers stopped"),
                    }
                    fence.revoke();
                    on_change(false);
                    observed = None;
                }
                Ok(Ok(false)) => {}
                Ok(Err(e)) => tracing::warn!(lease = %self.name, error = %e, "lease request failed"),
                Err(_) => tracing::warn!(lease = %self.name, "lease request unanswered within the renew deadline"),
            }
            sleep(self.retry_period).await;
        }
    }

    /// Renews every `retry_period` and returns once the fence has passed without a successful
    /// renewal, or another replica holds the lease.
    async fn keep(&self, api: &Api<Lease>, fence: &Fence) {
        while let Some(until) = fence.until() {
            let renewal = async {
                sleep(self.retry_period).await;
                let started = Instant::now();
                (started, self.try_acquire_or_renew(api, &mut None).await)
            };
            tokio::select! {
                biased;
                () = sleep_until(until) => {
                    tracing::warn!(lease = %self.name, "no renewal within the renew deadline; stopping");
                    return;
                }
                (started, result) = renewal => match result {
                    Ok(true) => fence.extend(started + self.renew_deadline),
                    Ok(false) => {
                        tracing::warn!(lease = %self.name, "another replica holds the lease; stopping");
                        return;
                    }
                    Err(e) => tracing::warn!(lease = %self.name, error = %e, "renewing the lease failed"),
                },
            }
        }
    }

    /// Takes the lease if it is missing, released, ours, or unchanged for its whole duration
    /// since `observed`; `Ok(true)` when we now hold it.
    async fn try_acquire_or_renew(
        &self,
        api: &Api<Lease>,
        observed: &mut Option<Observed>,
    ) -> Result<bool, kube::Error> {
        let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
        let Some(mut lease) = api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(self.name.clone()), ..Default::default() },
                spec: Some(self.spec(now.clone(), now, 0)),
            };
            return conflict_is_false(api.create(&PostParams::default(), &lease).await);
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.as_deref().filter(|h| !h.is_empty());
        let ours = holder == Some(self.identity.as_str());
        if !ours && holder.is_some() {
            let seen = match observed.take() {
                Some(o) if o.spec == spec => o,
                previous => {
                    if previous.is_none_or(|p| p.spec.holder_identity != spec.holder_identity) {
                        tracing::info!(lease = %self.name, holder = holder.unwrap_or_default(), "standing by");
                    }
                    Observed { spec: spec.clone(), since: Instant::now() }
                }
            };
            // The holder stops acting within its own duration; never count less than ours.
            let duration = spec.lease_duration_seconds.map_or(self.lease_duration, |s| {
                Duration::from_secs(u64::try_from(s).unwrap_or(0)).max(self.lease_duration)
            });
            let expired = seen.since.elapsed() >= duration;
            *observed = Some(seen);
            if !expired {
                return Ok(false);
            }
        }
        let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(!ours);
        let acquired = if ours { spec.acquire_time.clone().unwrap_or_else(|| now.clone()) } else { now.clone() };
        lease.spec = Some(self.spec(acquired, now, transitions));
        conflict_is_false(api.replace(&self.name, &PostParams::default(), &lease).await)
    }

    fn spec(&self, acquired: MicroTime, renewed: MicroTime, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: lease_seconds(self.lease_duration),
            acquire_time: Some(acquired),
            renew_time: Some(renewed),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }

    /// Hands the lease over if this replica holds it: an empty holder and a one-second duration,
    /// so a standby takes it at its next look. Call it once the work has stopped (the future of
    /// [`Election::lead`] dropped). Bounded by the renew deadline; on a conflict (a renewal that
    /// was still in flight landed first) it reads the lease again.
    pub async fn release(&self, client: kube::Client) -> anyhow::Result<()> {
        let api: Api<Lease> = Api::namespaced(client, &self.namespace);
        let released = async {
            loop {
                let Some(mut lease) = api.get_opt(&self.name).await? else { return Ok(false) };
                let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
                if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
                    return Ok(false);
                }
                let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
                *spec = LeaseSpec {
                    holder_identity: Some(String::new()),
                    lease_duration_seconds: Some(1),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: spec.lease_transitions,
                    ..Default::default()
                };
                match api.replace(&self.name, &PostParams::default(), &lease).await {
                    Ok(_) => return Ok(true),
                    Err(kube::Error::Api(s)) if s.code == 409 => continue,
                    Err(e) => return Err(e),
                }
            }
        };
        match timeout(self.renew_deadline, released).await {
            Ok(Ok(true)) => {
                tracing::info!(lease = %self.name, identity = %self.identity, "released the lease");
                Ok(())
            }
            Ok(Ok(false)) => Ok(()),
            Ok(Err(e)) => Err(anyhow::Error::new(e).context(format!("releasing the lease {}", self.name))),
            Err(_) => bail!("releasing the lease {}: no answer within {:?}", self.name, self.renew_deadline),
        }
    }
}

/// `leaseDurationSeconds` of a duration, if it fits.
fn lease_seconds(d: Duration) -> Option<i32> {
    i32::try_from(d.as_secs()).ok().filter(|s| *s >= 1)
}

/// A write that lost a race (409) is "not ours", not an error.
fn conflict_is_false<T>(result: Result<T, kube::Error>) -> Result<bool, kube::Error> {
    match result {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Until when this replica may act as leader. Shared by the election, which extends it on each
/// successful renewal, and the controllers' client, which checks it before every request.
#[derive(Clone, Debug, Default)]
pub struct Fence(Arc<Mutex<Option<Instant>>>);

impl Fence {
    fn until(&self) -> Option<Instant> {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn extend(&self, until: Instant) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(until);
    }

    fn revoke(&self) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// Whether this replica may still act as leader.
    pub fn holds(&self) -> bool {
        self.until().is_some_and(|until| Instant::now() < until)
    }

    /// `client`, refusing every request while the fence does not hold.
    pub fn client(&self, client: kube::Client) -> kube::Client {
        let fence = self.clone();
        let default_namespace = client.default_namespace().to_owned();
        let service = tower::service_fn(move |request: http::Request<kube::client::Body>| {
            let (fence, client) = (fence.clone(), client.clone());
            async move {
                if !fence.holds() {
                    return Err(NotLeading.into());
                }
                client.send(request).await.map_err(tower::BoxError::from)
            }
        });
        kube::Client::new(service, default_namespace)
    }
}

/// How the election and the leader's work reach the apiserver: a client for the Lease, and one
/// for the work that the fence stops.
pub struct Connection {
    lease: kube::Client,
    work: kube::Client,
    fence: Fence,
}

impl Connection {
    /// From a configuration, with the fence on the connections themselves: what the binary uses.
    pub fn fenced_at_the_socket(config: kube::Config) -> Result<Self, kube::Error> {
        let fence = Fence::default();
        let lease = kube::Client::try_from(config.clone())?;
        let work = kube::client::ClientBuilder::try_from((config, FencedExecutor(fence.clone())))?.build();
        // The check in front as well: it refuses at once, with a clear error.
        Ok(Connection { lease, work: fence.client(work), fence })
    }
}

/// From a client made elsewhere: the fence can only sit in front of its request queue, which is
/// enough where nothing freezes the process (the in-process tests).
impl From<kube::Client> for Connection {
    fn from(client: kube::Client) -> Self {
        let fence = Fence::default();
        Connection { work: fence.client(client.clone()), lease: client, fence }
    }
}

/// Runs the HTTP client's connection tasks (the ones that write requests to the socket), each
/// stopped, and so its connection closed, the first time it runs after the fence has passed.
#[derive(Clone)]
struct FencedExecutor(Fence);

impl<F: Future<Output = ()> + Send + 'static> hyper::rt::Executor<F> for FencedExecutor {
    fn execute(&self, task: F) {
        tokio::spawn(Fenced { fence: self.0.clone(), task: Box::pin(task) });
    }
}

/// A task that ends, dropping what it runs, once the fence does not hold.
struct Fenced<F> {
    fence: Fence,
    task: std::pin::Pin<Box<F>>,
}

impl<F: Future<Output = ()>> Future for Fenced<F> {
    type Output = ();

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        if !self.fence.holds() {
            return std::task::Poll::Ready(());
        }
        self.task.as_mut().poll(cx)
    }
}

/// What a fenced client answers once this replica may no longer act as leader.
#[derive(Debug)]
struct NotLeading;

impl std::fmt::Display for NotLeading {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("this replica no longer holds the leader lease")
    }
}

impl std::error::Error for NotLeading {}

/// A duration as `500ms`, `2s`, `1.5s` or `2m`, for flags.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let (number, unit) = s.find(|c: char| c.is_ascii_alphabetic()).map_or((s, ""), |i| s.split_at(i));
    let scale = match unit {
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        _ => return Err(format!("{s:?} is not a duration such as 500ms, 10s or 2m")),
    };
    let value: f64 = number.parse().map_err(|_| format!("{s:?} is not a duration such as 500ms, 10s or 2m"))?;
    Duration::try_from_secs_f64(value * scale).map_err(|e| format!("{s:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn election(lease: &str, renew: &str, retry: &str) -> Election {
        Election {
            namespace: "ns".into(),
            name: "lease".into(),
            identity: "a".into(),
            lease_duration: parse_duration(lease).unwrap(),
            renew_deadline: parse_duration(renew).unwrap(),
            retry_period: parse_duration(retry).unwrap(),
        }
    }

    #[test]
    fn durations_follow_client_go_ordering() {
        assert!(election("15s", "10s", "1s").validate().is_ok());
        assert!(election("2s", "1500ms", "500ms").validate().is_ok());
        for (lease, renew, retry) in
            [("10s", "10s", "1s"), ("15s", "20s", "1s"), ("15s", "2s", "2s"), ("3s", "2s", "0s")]
        {
            let err = election(lease, renew, retry).validate().unwrap_err().to_string();
            assert!(err.contains("lease duration > renew deadline > retry period"), "{err}");
        }
        let err = election("2500ms", "2s", "1s").validate().unwrap_err().to_string();
        assert!(err.contains("whole number of seconds"), "{err}");
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        for bad in ["", "10", "s", "10h", "-1s", "1e400s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_fence_holds_until_its_instant() {
        let fence = Fence::default();
        assert!(!fence.holds(), "no leadership before the first acquisition");
        fence.extend(Instant::now() + Duration::from_secs(3600));
        assert!(fence.holds());
        fence.extend(Instant::now());
        assert!(!fence.holds(), "the fence has passed");
        fence.extend(Instant::now() + Duration::from_secs(3600));
        fence.revoke();
        assert!(!fence.holds());
    }

    #[tokio::test]
    async fn a_fenced_client_sends_nothing_once_the_fence_has_passed() {
        // Nothing listens on port 1: a request that is sent fails to connect.
        let config = kube::Config::new("http://127.0.0.1:1".parse().unwrap());
        let fence = Fence::default();
        let leases: Api<Lease> = Api::namespaced(fence.client(kube::Client::try_from(config).unwrap()), "ns");
        let refused = leases.get("lease").await.unwrap_err().to_string();
        assert!(refused.contains("no longer holds the leader lease"), "{refused}");
        fence.extend(Instant::now() + Duration::from_secs(3600));
        let sent = leases.get("lease").await.unwrap_err().to_string();
        assert!(!sent.contains("leader lease"), "sent while leading: {sent}");
    }
}
