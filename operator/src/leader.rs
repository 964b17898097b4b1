//! Leader election on a coordination.k8s.io Lease.
//!
//! The holder renews the lease every `renew`; another replica takes it over only after seeing
//! the same holder and renewTime unchanged for a whole `duration` by its own clock (no clock
//! comparison between machines), and every change goes through resourceVersion, so two replicas
//! cannot both win. Work runs only while the lease is held and is dropped the moment a renewal
//! fails for longer than the lease lasts.

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::time::Instant;

/// Who competes for which lease, and how fast.
#[derive(Clone, Debug)]
pub struct Election {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    pub duration: Duration,
    pub renew: Duration,
}

impl Election {
    /// Runs `work` whenever this replica leads, until the future is dropped. `on_change` hears
    /// about every change of leadership.
    pub async fn lead<F, Fut>(&self, client: kube::Client, work: F, on_change: impl Fn(bool))
    where
        F: Fn() -> Fut,
        Fut: Future<Output = ()>,
    {
        let api: Api<Lease> = Api::namespaced(client, &self.namespace);
        let mut seen: Option<(Option<String>, Option<MicroTime>, Instant)> = None;
        loop {
            match self.try_acquire(&api, &mut seen).await {
                Ok(true) => {
                    tracing::info!(lease = %self.name, identity = %self.identity, "leading");
                    on_change(true);
                    tokio::select! {
                        () = work() => {}
                        () = self.keep(&api) => tracing::warn!(lease = %self.name, "lost the lease; stopping"),
                    }
                    on_change(false);
                    seen = None;
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(lease = %self.name, error = %e, "lease request failed"),
            }
            tokio::time::sleep(self.renew).await;
        }
    }

    /// Takes the lease if it is free, ours, or expired; `Ok(true)` when we now hold it.
    async fn try_acquire(
        &self,
        api: &Api<Lease>,
        seen: &mut Option<(Option<String>, Option<MicroTime>, Instant)>,
    ) -> Result<bool, kube::Error> {
        let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
        let Some(mut lease) = api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(self.name.clone()), ..Default::default() },
                spec: Some(self.spec(now.clone(), now, 0)),
            };
            return match api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let ours = holder.as_deref() == Some(self.identity.as_str());
        let observed = (holder.clone(), spec.renew_time.clone());
        let expired = match seen {
            Some((h, r, since)) if (h.clone(), r.clone()) == observed => since.elapsed() >= self.duration,
            _ => {
                *seen = Some((observed.0, observed.1, Instant::now()));
                holder.is_none()
            }
        };
        if !ours && !expired {
            return Ok(false);
        }
        let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(!ours);
        let acquired = if ours { spec.acquire_time.clone().unwrap_or_else(|| now.clone()) } else { now.clone() };
        lease.spec = Some(self.spec(acquired, now, transitions));
        match api.replace(&self.name, &PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn spec(&self, acquired: MicroTime, renewed: MicroTime, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.duration.as_secs().max(1) as i32),
            acquire_time: Some(acquired),
            renew_time: Some(renewed),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }

    /// Renews until a renewal has failed for as long as the lease lasts; then returns.
    async fn keep(&self, api: &Api<Lease>) {
        let mut last_renewed = Instant::now();
        loop {
            tokio::time::sleep(self.renew).await;
            let mut seen = None;
            match self.try_acquire(api, &mut seen).await {
                Ok(true) => last_renewed = Instant::now(),
                Ok(false) => return, // somebody else holds it now
                Err(e) => tracing::warn!(error = %e, "renewing the lease failed"),
            }
            if last_renewed.elapsed() >= self.duration {
                return;
            }
        }
    }
}
