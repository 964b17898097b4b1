//! The BGP password Secrets this node's neighbors name, kept current by one watch per Secret.
//!
//! The agent may read only those Secrets (the operator's per-VTEP Roles name them one by one,
//! `bgp_passwords` in the operator), and RBAC allows a list or watch restricted by name only
//! through the field selector `metadata.name`, so each Secret gets its own watch in its own
//! namespace. A reconcile then reads passwords from memory instead of asking the apiserver once
//! per neighbor, and a changed Secret starts a reconcile by itself. The set of watches follows
//! what the plan names; a Secret no longer named is forgotten. Secret data is never logged:
//! errors say which Secret and key, not what is in it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, watcher};
use tokio::sync::watch as signal;
use tokio::task::JoinHandle;
use tracing::warn;

/// A Secret, by namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct SecretName {
    pub namespace: String,
    pub name: String,
}

/// What is known of one watched Secret. Not `Debug`: it holds the passwords.
#[derive(Clone, PartialEq)]
enum Read {
    /// The watch has not listed yet.
    Pending,
    Missing,
    Found(BTreeMap<String, ByteString>),
    /// The first list failed (most often: the agent may not read it).
    Failed(String),
}

/// Why a password cannot be had.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unavailable {
    /// Not read yet: the watch was just started.
    Pending(String),
    Failed(String),
}

/// Called whenever what is known of a watched Secret changes.
type OnChange = Arc<dyn Fn() + Send + Sync>;

/// The watched Secrets. Dropping it stops the watches.
pub struct PasswordSecrets {
    client: Option<kube::Client>,
    on_change: OnChange,
    /// Marked on every change, for [`PasswordSecrets::settle`].
    changed: signal::Receiver<()>,
    reads: Arc<Mutex<BTreeMap<SecretName, Read>>>,
    watches: BTreeMap<SecretName, JoinHandle<()>>,
}

impl Default for PasswordSecrets {
    /// No API to read from: every Secret asked for is unavailable.
    fn default() -> Self {
        Self::new(None, || ())
    }
}

impl Drop for PasswordSecrets {
    fn drop(&mut self) {
        self.watches.values().for_each(JoinHandle::abort);
    }
}

impl PasswordSecrets {
    pub fn new(client: Option<kube::Client>, on_change: impl Fn() + Send + Sync + 'static) -> Self {
        let (mark, changed) = signal::channel(());
        let on_change = Arc::new(move || {
            mark.send_modify(|_| ());
            on_change();
        });
        Self { client, on_change, changed, reads: Arc::default(), watches: BTreeMap::new() }
    }

    /// Waits until no followed Secret is still to be read, at most `limit`: an agent that starts
    /// watching then reports its networks as they are, not a moment of `Pending`.
    pub async fn settle(&self, limit: Duration) {
        let mut changed = self.changed.clone();
        let _ = tokio::time::timeout(limit, async {
            loop {
                changed.borrow_and_update();
                if !self.lock().values().any(|r| *r == Read::Pending) || changed.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
    }

    /// Watches exactly `wanted` from now on: starts the missing watches, stops the others.
    pub fn follow(&mut self, wanted: &BTreeSet<SecretName>) {
        let unwanted: Vec<SecretName> = self.watches.keys().filter(|s| !wanted.contains(*s)).cloned().collect();
        for secret in unwanted {
            if let Some(task) = self.watches.remove(&secret) {
                task.abort();
            }
            self.lock().remove(&secret);
        }
        let Some(client) = &self.client else { return };
        for secret in wanted {
            if self.watches.contains_key(secret) {
                continue;
            }
            self.lock().insert(secret.clone(), Read::Pending);
            let task = watch(client.clone(), secret.clone(), self.reads.clone(), self.on_change.clone());
            self.watches.insert(secret.clone(), tokio::spawn(task));
        }
    }

    /// The UTF-8 value of `key` in `secret`, which must be followed.
    pub fn value(&self, secret: &SecretName, key: &str) -> Result<String, Unavailable> {
        let read = match &self.client {
            None => return Err(Unavailable::Failed("no Kubernetes client to read it".into())),
            Some(_) => self.lock().get(secret).cloned().unwrap_or(Read::Pending),
        };
        match read {
            Read::Pending => Err(Unavailable::Pending("not read yet".into())),
            Read::Missing => Err(Unavailable::Failed("the Secret does not exist".into())),
            Read::Failed(e) => Err(Unavailable::Failed(e)),
            Read::Found(data) => {
                let value = data.get(key).ok_or_else(|| Unavailable::Failed("the key is missing".into()))?;
                // Checked before it can reach FRR's configuration, without quoting it.
                crate::plan::bgp_password(value.0.clone()).map_err(Unavailable::Failed)
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<SecretName, Read>> {
        self.reads.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Keeps `reads[secret]` equal to the Secret, calling `on_change` after each change.
async fn watch(
    client: kube::Client,
    secret: SecretName,
    reads: Arc<Mutex<BTreeMap<SecretName, Read>>>,
    on_change: OnChange,
) {
    let api: Api<Secret> = Api::namespaced(client, &secret.namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={}", secret.name));
    let mut events = watcher(api, config).default_backoff().boxed();
    let mut listed = None;
    while let Some(event) = events.next().await {
        let mut reads = reads.lock().unwrap_or_else(PoisonError::into_inner);
        // A Secret no longer followed has no entry, and its watch is being stopped.
        let Some(known) = reads.get_mut(&secret) else { return };
        let read = match event {
            Ok(watcher::Event::Init) => {
                listed = None;
                continue;
            }
            Ok(watcher::Event::InitApply(found)) => {
                listed = Some(found);
                continue;
            }
            Ok(watcher::Event::InitDone) => listed.take().map_or(Read::Missing, data),
            Ok(watcher::Event::Apply(found)) => data(found),
            Ok(watcher::Event::Delete(_)) => Read::Missing,
            Err(e) => {
                warn!(namespace = secret.namespace, name = secret.name, "watching a BGP password Secret: {e}");
                // A Secret already read keeps its value through a broken watch; one never read
                // says why.
                match known {
                    Read::Pending | Read::Failed(_) => Read::Failed(e.to_string()),
                    _ => continue,
                }
            }
        };
        if *known != read {
            *known = read;
            drop(reads);
            on_change();
        }
    }
}

fn data(secret: Secret) -> Read {
    Read::Found(secret.data.unwrap_or_default())
}
