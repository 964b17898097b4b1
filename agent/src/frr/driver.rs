//! Applies a [`Config`] to a running FRR and reads its state back.
//!
//! FRR is driven through vtysh, never through a shell: configuration commands go to vtysh's
//! standard input, never its arguments (every user of the node can read a process's arguments,
//! and the commands carry BGP passwords); state queries go as `vtysh [-N ns] -c ...`.
//!
//! FRR is shared with the node's admin, so the agent changes only what it owns: the lines it
//! applied. Every change is a diff of the agent's own lines: against the last applied
//! configuration (the baseline) while FRR still holds it, or else (the first sync after the agent
//! started, after FRR restarted, after a node-wide failure) against the part of FRR's running
//! configuration that the agent accounts for ([`RunningConfig::claimed_by`]: what it wants now,
//! plus what it held before, which survives an agent restart in a private file of FRR's state
//! directory). A line of the admin's is in no diff, so no command touches it, and a context that
//! holds the admin's lines too is only emptied of the agent's, never deleted.
//!
//! Two facts of FRR 8.4.4 shape the error handling. vtysh keeps executing after a rejected command
//! and its exit status says little (0 after "% Malformed Route Target list", 1 after the harmless
//! "% Specified VNI does not exist"): a group fails on a `%` line attributed to it, or when vtysh
//! stopped before its last command. vtysh also takes some lines without applying them: after a
//! full sync the running configuration is read back and each owner's lines are looked up in it.
//! FRR echoes a rejected line, which may be a password line: every text from FRR that goes into
//! an error passes [`redact`] first.
//!
//! FRR restarts are detected by the daemons' pid files: a restarted FRR loads its saved file,
//! which the agent never writes (it is the admin's), so the next sync is a full one.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use evpn_crds::nodestate::{BgpSessionState, VniState};
use serde::Deserialize;
use tokio::io::AsyncWriteExt as _;
use tokio::process::Command;

use super::config::{Config, RunningConfig};
use super::diff::{CommandGroup, diff, diff_sharing};

/// Longest a vtysh run may take; a wedged daemon must not wedge the agent.
const VTYSH_TIMEOUT: Duration = Duration::from_secs(60);
/// What vtysh says when asked to remove what is already gone, or what is not ours to remove: the
/// goal is met. A removal is retried after a partial failure, so this is expected (and 8.4.4 then
/// exits 1). A kernel VRF whose device still exists (OVN-Kubernetes' device) stays in FRR as an
/// empty, active VRF that `show running-config` no longer lists: all of ours is gone.
const ALREADY_ABSENT: [&str; 3] =
    ["% Specified VNI does not exist", "% Can't find BGP instance", "% Only inactive VRFs can be deleted"];
/// Longest a re-attachment waits for zebra to let go of the L3VNI before attaching it again.
const DETACH_TIMEOUT: Duration = Duration::from_secs(5);
/// The daemons whose restart loses configuration the agent applied; zebra and bgpd first, they
/// always run.
const DAEMONS: [&str; 3] = ["zebra", "bgpd", "bfdd"];
/// What the agent holds in FRR, in its state directory: after an agent restart it says which of
/// the running lines are the agent's to change or remove.
const HELD_FILE: &str = "evpn-agent-held.json";
/// What stands in for a password in every text that leaves the driver.
pub const REDACTED: &str = "<redacted>";

/// Why talking to FRR failed.
#[derive(Debug, thiserror::Error)]
pub enum FrrError {
    #[error("cannot run {program}: {source}")]
    Spawn { program: String, source: std::io::Error },
    #[error("{program} did not finish within {timeout:?}")]
    Timeout { program: String, timeout: Duration },
    #[error("FRR rejected the commands of {group}: {output}")]
    CommandFailed { group: String, output: String },
    #[error("cannot compare with FRR's running configuration: {output}")]
    RunningConfigUnreadable { output: String },
    #[error("FRR did not take {} line(s), first: {}", missing.len(), missing.first().map(String::as_str).unwrap_or_default())]
    NotApplied { missing: Vec<String> },
    #[error("vtysh `{command}` failed: {output}")]
    Query { command: String, output: String },
    #[error("unexpected output of vtysh `{command}`: {reason}")]
    ParseState { command: String, reason: String },
}

/// How a sync reached the desired configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncMethod {
    /// FRR already had it.
    NoChange,
    /// Only the lines changed since the baseline were sent.
    Incremental,
    /// Compared with FRR's running configuration, read first, and checked against it afterwards.
    Full,
}

/// The outcome of one owner's part of a sync.
#[derive(Debug)]
pub struct OwnerResult {
    /// `None`: node-wide; `Some(evpn)`: that network.
    pub owner: Option<String>,
    pub result: Result<(), FrrError>,
}

/// What a sync did, owner by owner.
#[derive(Debug)]
pub struct SyncReport {
    pub method: SyncMethod,
    /// Every owner of the desired configuration, plus removed owners that had commands to run.
    pub owners: Vec<OwnerResult>,
}

impl SyncReport {
    /// The outcome of `owner`, if the sync concerned it.
    pub fn result(&self, owner: Option<&str>) -> Option<&Result<(), FrrError>> {
        self.owners.iter().find(|o| o.owner.as_deref() == owner).map(|o| &o.result)
    }

    pub fn is_ok(&self) -> bool {
        self.owners.iter().all(|o| o.result.is_ok())
    }
}

/// What the agent last applied, and to which daemon processes.
#[derive(Clone, Debug)]
struct Baseline {
    config: Config,
    daemons: DaemonIdentity,
    /// What failed owners were last sent: a failed group may have applied part of it, so an
    /// owner that is then removed gets all of it removed.
    unsure: Config,
}

/// The contents of the daemons' pid files, in [`DAEMONS`] order; `None` where a file could not
/// be read.
type DaemonIdentity = Vec<Option<String>>;

/// Owners whose commands failed, each with its error.
type Failures = Vec<(Option<String>, FrrError)>;

/// One FRR instance (a pathspace, for FRR running as `-N <name>`, or the default one).
#[derive(Clone, Debug)]
pub struct Frr {
    /// FRR's `-N` pathspace: sockets and pid files in `<run_dir>/<pathspace>/`.
    pub pathspace: Option<String>,
    pub vtysh: PathBuf,
    /// FRR's state directory (`/var/run/frr`).
    pub run_dir: PathBuf,
    baseline: Option<Baseline>,
    /// What the held file last recorded (written again only when this changes).
    recorded: Option<Config>,
}

impl Frr {
    /// The Debian install locations.
    pub fn new(pathspace: Option<String>) -> Self {
        Frr {
            pathspace,
            vtysh: "/usr/bin/vtysh".into(),
            run_dir: "/var/run/frr".into(),
            baseline: None,
            recorded: None,
        }
    }

    /// The configuration the last syncs are known to have applied.
    pub fn baseline(&self) -> Option<&Config> {
        self.baseline.as_ref().map(|b| &b.config)
    }

    /// Makes the next sync a full one.
    pub fn forget_baseline(&mut self) {
        self.baseline = None;
    }

    /// Brings FRR to `desired`: incrementally when FRR still holds the baseline, else by a full
    /// sync. The baseline afterwards holds only what FRR took.
    pub async fn sync(&mut self, desired: &Config) -> SyncReport {
        let daemons = self.daemon_identity().await;
        let previous = self.baseline.take();
        let zebra_and_bgpd_known = daemons[..2].iter().all(Option::is_some);
        // A new ASN means a new default BGP instance, which FRR refuses while the old one and
        // its VRF instances exist: only a full sync removes them first.
        let same_asn = |b: &Baseline| underlay_instance(&b.config) == underlay_instance(desired);
        let (current, stale) = match previous {
            Some(b) if b.daemons == daemons && zebra_and_bgpd_known && same_asn(&b) => (Some(b), None),
            other => (None, other),
        };
        // Netns-bound VRFs outlive their network (see `Config::retaining_netns_vrfs`).
        let (method, owners, applied, old, effective) = match current {
            Some(current) => {
                let effective = desired.retaining_netns_vrfs(&current.config.stanzas);
                let mut old = current.config;
                let desired_owners = effective.owners();
                for owner in current.unsure.owners().iter().filter(|o| !desired_owners.contains(o)) {
                    old = old.with_owner_from(&current.unsure, owner);
                }
                let (method, owners, applied) = self.sync_incremental(&old, &effective).await;
                (method, owners, applied, old, effective)
            }
            None => {
                // What FRR may hold of the agent's: the stale baseline (with what was added since
                // FRR last loaded its file), or after an agent restart what the last run recorded.
                let held = match stale {
                    Some(b) => b.config.merged(&b.unsure),
                    None => self.read_held().await,
                };
                let running = self.running_config().await;
                // Held first: a retained VRF keeps its network as owner, so its L3VNI is
                // unbound in the network's group, before its BGP instance goes.
                let mut bound = held.stanzas.clone();
                bound.extend(running.as_ref().map(|r| r.stanzas.clone()).unwrap_or_default());
                let effective = desired.retaining_netns_vrfs(&bound);
                let (method, owners, applied) = match running {
                    Ok(running) => self.sync_full(&running, &held, &effective).await,
                    Err(e) => {
                        let output = e.to_string();
                        let owners = effective.merged(&held).owners().into_iter();
                        let error = || FrrError::RunningConfigUnreadable { output: output.clone() };
                        let results = owners.map(|owner| OwnerResult { owner, result: Err(error()) }).collect();
                        (SyncMethod::Full, results, None)
                    }
                };
                (method, owners, applied, held, effective)
            }
        };
        let mut unsure = Config::default();
        for failed in owners.iter().filter(|o| o.result.is_err()) {
            unsure = unsure.with_owner_from(&effective, &failed.owner);
        }
        let held = match &applied {
            Some(config) => config.merged(&unsure),
            None => old.merged(&effective),
        };
        self.record_held(held).await;
        self.baseline = applied.map(|config| Baseline { config, daemons, unsure });
        SyncReport { method, owners }
    }

    async fn sync_incremental(&self, old: &Config, new: &Config) -> (SyncMethod, Vec<OwnerResult>, Option<Config>) {
        let groups = diff(old, new);
        if groups.is_empty() {
            // Not even a vtysh start: an unchanged resync costs nothing in FRR.
            return (SyncMethod::NoChange, owner_results(new, &groups, Vec::new()), Some(new.clone()));
        }
        let failed = self.run_changes(&groups).await;
        let baseline = baseline_after(old, new, &failed);
        (SyncMethod::Incremental, owner_results(new, &groups, failed), baseline)
    }

    /// Brings the agent's part of `running` to `desired`. The agent's part is what `desired` and
    /// `held` account for; the rest is the admin's and is in no command.
    async fn sync_full(
        &self,
        running: &RunningConfig,
        held: &Config,
        desired: &Config,
    ) -> (SyncMethod, Vec<OwnerResult>, Option<Config>) {
        let claimed = running.claimed_by(&desired.merged(held));
        let old = &claimed.config;
        // A new ASN: FRR takes the new default instance only once the old one and its VRF
        // instances are gone, so every removal runs before the first addition.
        let asn_changed = match (underlay_instance(old), underlay_instance(desired)) {
            (Some(old), Some(new)) => old != new,
            _ => false,
        };
        let detached = asn_changed.then(|| without_bgp(old));
        // The old instance goes even where the admin has lines in it: FRR runs one ASN.
        let mut detaching = claimed.shared.clone();
        detaching.retain(|header| Some(header.as_str()) != underlay_instance(old));
        let steps = match &detached {
            Some(detached) => vec![(old, detached, &detaching), (detached, desired, &claimed.shared)],
            None => vec![(old, desired, &claimed.shared)],
        };
        let mut groups = Vec::new();
        let mut failed = Vec::new();
        for (from, to, shared) in steps {
            let step = diff_sharing(from, to, shared);
            failed.extend(self.run_changes(&step).await);
            groups.extend(step);
        }
        let mut baseline = baseline_after(old, desired, &failed);
        // vtysh takes some lines without applying them: what FRR holds decides.
        if baseline.is_some() {
            match self.running_config().await {
                Ok(running) => {
                    for (owner, missing) in desired.missing_by_owner(&running) {
                        if failed.iter().any(|(o, _)| *o == owner) {
                            continue;
                        }
                        baseline = match owner {
                            Some(_) => baseline.map(|b| b.without_owner(&owner)),
                            None => None,
                        };
                        let missing = missing.iter().map(|line| redact(line, &[])).collect();
                        failed.push((owner, FrrError::NotApplied { missing }));
                    }
                }
                Err(e) => {
                    baseline = None;
                    failed.push((None, e));
                }
            }
        }
        (SyncMethod::Full, owner_results(desired, &groups, failed), baseline)
    }

    /// Runs `groups`; returns the owners whose group failed, each logged.
    async fn run_changes(&self, groups: &[CommandGroup]) -> Failures {
        let mut failed = Vec::new();
        if groups.is_empty() {
            return failed;
        }
        for (group, outcome) in groups.iter().zip(self.run_groups(groups).await) {
            if let Err(e) = outcome {
                tracing::warn!(owner = ?group.owner, error = %e, "FRR command group failed; retried next sync");
                failed.push((group.owner.clone(), e));
            }
        }
        failed
    }

    /// What the last run recorded as held in FRR; nothing when it recorded nothing (FRR then holds
    /// nothing of the agent's but what it wants now, unless a node restart took the file).
    async fn read_held(&self) -> Config {
        let path = self.state_dir().join(HELD_FILE);
        match tokio::fs::read(&path).await {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(path = %path.display(), error = %e, "unreadable record of the agent's FRR lines; ignored");
                Config::default()
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Config::default(),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot read the record of the agent's FRR lines");
                Config::default()
            }
        }
    }

    /// Records `held` for the next agent run, when it changed.
    async fn record_held(&mut self, held: Config) {
        if self.recorded.as_ref() == Some(&held) {
            return;
        }
        let path = self.state_dir().join(HELD_FILE);
        let written = match serde_json::to_string(&held) {
            Ok(text) => write_private(&path, &text).await,
            Err(e) => Err(std::io::Error::other(e)),
        };
        match written {
            Ok(()) => self.recorded = Some(held),
            Err(e) => tracing::warn!(path = %path.display(), error = %e, "cannot record the agent's FRR lines"),
        }
    }

    /// Runs every group in one vtysh session: starting vtysh (it builds the command tree of every
    /// daemon) costs more than a one-VNI change, and a thousand groups must not mean a thousand
    /// vtysh runs. Each group is wrapped in `configure terminal` ... `end`, so one whose failure
    /// leaves vtysh in an unexpected context cannot derail the next; `--echo` prints each command
    /// before its output, which attributes every error line to its group. The commands go to
    /// vtysh's standard input, one a line: a group with a line break or another control
    /// character inside a command (a value from outside) is not sent at all.
    async fn run_groups(&self, groups: &[CommandGroup]) -> Vec<Result<(), FrrError>> {
        let unsendable = |g: &CommandGroup| g.commands.iter().any(|c| c.chars().any(char::is_control));
        let sendable: Vec<CommandGroup> = groups.iter().filter(|g| !unsendable(g)).cloned().collect();
        let session = Session::new(&sendable);
        let mut args = self.vtysh_prefix();
        args.push("--echo".into());
        let input: String = session.commands.iter().map(|(_, command)| format!("{command}\n")).collect();
        let mut outcomes = match run(&self.vtysh, &args, Some(&input), VTYSH_TIMEOUT).await {
            Ok((_, output)) => session.outcomes(&output),
            Err(e) => vec![Err(e.to_string()); sendable.len()],
        }
        .into_iter();
        groups
            .iter()
            .map(|group| {
                let outcome = match unsendable(group) {
                    true => Err("a command holds a control character; not sent".to_owned()),
                    false => outcomes.next().unwrap_or_else(|| Err("vtysh gave no outcome".to_owned())),
                };
                outcome.map_err(|output| FrrError::CommandFailed {
                    group: match &group.owner {
                        Some(evpn) => format!("network {evpn}"),
                        None => "the node-wide configuration".into(),
                    },
                    output,
                })
            })
            .collect()
    }

    /// Runs a vtysh show command; fails on a non-zero exit or a `%` error line.
    pub async fn show(&self, command: &str) -> Result<String, FrrError> {
        self.show_each(command, &[command]).await
    }

    /// Runs show `commands` in one vtysh run (their outputs one after the other); `label` names
    /// them in an error.
    async fn show_each(&self, label: &str, commands: &[&str]) -> Result<String, FrrError> {
        let mut args = self.vtysh_prefix();
        for command in commands {
            args.extend(["-c".into(), (*command).to_owned()]);
        }
        let (ok, output) = run(&self.vtysh, &args, None, VTYSH_TIMEOUT).await?;
        let errors = error_lines(&output);
        if !ok || !errors.is_empty() {
            let output = if errors.is_empty() { tail(&output) } else { errors };
            return Err(FrrError::Query { command: label.into(), output: redact(&output, &[]) });
        }
        Ok(output)
    }

    /// FRR's running configuration, parsed.
    pub async fn running_config(&self) -> Result<RunningConfig, FrrError> {
        Ok(RunningConfig::parse(&self.show("show running-config").await?))
    }

    /// The underlay BGP sessions with their BFD state (from `show bgp neighbors json`, which has
    /// both in one query).
    pub async fn bgp_sessions(&self) -> Result<Vec<BgpSessionState>, FrrError> {
        const COMMAND: &str = "show bgp neighbors json";
        #[derive(Deserialize)]
        struct Neighbor {
            #[serde(rename = "bgpState")]
            bgp_state: Option<String>,
            #[serde(rename = "peerBfdInfo")]
            bfd: Option<Bfd>,
        }
        #[derive(Deserialize)]
        struct Bfd {
            status: Option<String>,
        }
        let output = self.show(COMMAND).await?;
        let Some(map) = parse_json::<serde_json::Map<String, serde_json::Value>>(COMMAND, &output)? else {
            return Ok(Vec::new());
        };
        let mut sessions = Vec::new();
        for (name, value) in map {
            // Other keys (none in 8.4.4, but versions differ) are not neighbors: skip them.
            let Ok(neighbor) = serde_json::from_value::<Neighbor>(value) else { continue };
            let Some(state) = neighbor.bgp_state else { continue };
            sessions.push(BgpSessionState { neighbor: name, state, bfd: neighbor.bfd.and_then(|b| b.status) });
        }
        Ok(sessions)
    }

    /// The VNIs zebra knows (from `show evpn vni detail json`): an L2VNI is up when it has its
    /// VXLAN device, an L3VNI when zebra says so (device, VRF and router MAC all present).
    pub async fn vnis(&self) -> Result<Vec<VniState>, FrrError> {
        const COMMAND: &str = "show evpn vni detail json";
        #[derive(Deserialize)]
        struct Vni {
            vni: u32,
            #[serde(rename = "type")]
            type_: Option<String>,
            #[serde(rename = "vxlanInterface")]
            vxlan_interface: Option<String>,
            state: Option<String>,
        }
        let output = self.show(COMMAND).await?;
        let entries = json_entries(COMMAND, &output)?;
        let mut vnis = Vec::new();
        for entry in entries {
            let Ok(vni) = serde_json::from_value::<Vni>(entry) else { continue };
            let type_ = vni.type_.unwrap_or_default();
            let up = match type_.as_str() {
                "L3" => vni.state.as_deref() == Some("Up"),
                _ => vni.vxlan_interface.is_some_and(|i| i != "None"),
            };
            vnis.push(VniState { vni: vni.vni, type_, up });
        }
        Ok(vnis)
    }

    /// For each IP-VRF of `l3vnis` (VRF name -> L3VNI), the remote VTEPs its installed routes go
    /// through that zebra holds no router MAC for ([`super::next_hops`]); two queries for all.
    pub async fn stranded_vteps(
        &self,
        l3vnis: &BTreeMap<String, u32>,
    ) -> Result<BTreeMap<String, BTreeSet<Ipv4Addr>>, FrrError> {
        const ROUTES: &str = "show ip route vrf <each IP-VRF> json";
        const NEXT_HOPS: &str = "show evpn next-hops vni all json";
        if l3vnis.is_empty() {
            return Ok(BTreeMap::new());
        }
        // Only the agent's VRFs: `vrf all` includes the default VRF, a full routing table on
        // some nodes.
        let queries: Vec<String> = l3vnis.keys().map(|vrf| format!("show ip route vrf {vrf} json")).collect();
        let queries: Vec<&str> = queries.iter().map(String::as_str).collect();
        let routes = serde_json::Deserializer::from_str(&self.show_each(ROUTES, &queries).await?)
            .into_iter::<serde_json::Value>()
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| FrrError::ParseState { command: ROUTES.into(), reason: e.to_string() })?;
        let next_hops = parse_json::<serde_json::Value>(NEXT_HOPS, &self.show(NEXT_HOPS).await?)?.unwrap_or_default();
        Ok(super::next_hops::stranded_vteps(&routes, &next_hops, l3vnis))
    }

    /// Detaches L3VNI `vni` from VRF `vrf` of network `owner` and, once zebra has let go of it,
    /// attaches it again: zebra then rebuilds the VNI's next hops and router MACs from the routes
    /// BGP hands it anew. Routed traffic of the VRF pauses meanwhile.
    pub async fn reattach_l3vni(&self, owner: &str, vrf: &str, vni: u32) -> Result<(), FrrError> {
        let group =
            |line: String| CommandGroup { owner: Some(owner.into()), commands: vec![format!("vrf {vrf}"), line] };
        self.run_groups(&[group(format!("no vni {vni}"))]).await.into_iter().collect::<Result<(), _>>()?;
        // Detached once zebra no longer has the L3VNI and BGP has taken the VRF's EVPN routes back
        // (attached sooner, BGP may import them into the same broken state). Attached again
        // regardless after the deadline: the VRF must not stay without its L3VNI.
        let deadline = tokio::time::Instant::now() + DETACH_TIMEOUT;
        let bgp_routes = format!("show ip route vrf {vrf} bgp json");
        while tokio::time::Instant::now() < deadline
            && (self.vnis().await?.iter().any(|v| v.vni == vni && v.type_ == "L3")
                || !json_entries(&bgp_routes, &self.show(&bgp_routes).await?)?.is_empty())
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.run_groups(&[group(format!("vni {vni}"))]).await.into_iter().collect()
    }

    /// The Ethernet segments zebra knows (`show evpn es detail json`).
    pub async fn ethernet_segments(&self) -> Result<Vec<ZebraSegment>, FrrError> {
        const COMMAND: &str = "show evpn es detail json";
        parse_ethernet_segments(COMMAND, &self.show(COMMAND).await?)
    }

    /// Whether zebra has bound VRF `name` (to its device or netns). With the netns backend a
    /// `vrf` stanza configured before that stays "inactive (configured)" for good on 8.4.4, so
    /// the caller waits for this before rendering the network's VRF.
    pub async fn vrf_active(&self, name: &str) -> Result<bool, FrrError> {
        Ok(self.active_vrfs().await?.contains(name))
    }

    /// The VRFs zebra has bound (has an id for), in one query.
    pub async fn active_vrfs(&self) -> Result<BTreeSet<String>, FrrError> {
        // 8.4.4 has no `show vrf json`; active lines read `vrf red id 5 netns /run/netns/red`,
        // inactive ones `vrf red inactive (configured)`.
        let output = self.show("show vrf").await?;
        Ok(output
            .lines()
            .filter_map(|line| {
                let words: Vec<&str> = line.split_whitespace().take(3).collect();
                match words[..] {
                    ["vrf", name, "id"] => Some(name.to_owned()),
                    _ => None,
                }
            })
            .collect())
    }

    fn vtysh_prefix(&self) -> Vec<String> {
        match &self.pathspace {
            Some(ns) => vec!["-N".into(), ns.clone()],
            None => Vec::new(),
        }
    }

    fn state_dir(&self) -> PathBuf {
        match &self.pathspace {
            Some(ns) => self.run_dir.join(ns),
            None => self.run_dir.clone(),
        }
    }

    async fn daemon_identity(&self) -> DaemonIdentity {
        let mut identity = Vec::new();
        for daemon in DAEMONS {
            let pid = tokio::fs::read_to_string(self.state_dir().join(format!("{daemon}.pid"))).await.ok();
            identity.push(pid.map(|p| p.trim().to_owned()));
        }
        identity
    }
}

/// An Ethernet segment as FRR 8.4.4's zebra reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZebraSegment {
    /// Ten lowercase hex bytes.
    pub esi: String,
    /// The local interface (`accessPort`); `None` for a segment known from remote VTEPs only.
    pub interface: Option<String>,
    /// This node is attached: the `local` flag.
    pub local: bool,
    /// The `readyForBgp` flag: local, and zebra knows the VTEP address to advertise it from;
    /// only then does zebra run the designated-forwarder election.
    pub ready: bool,
    /// The `nonDF` flag: this node does not forward the segment's BUM traffic.
    pub non_df: bool,
    /// The `operUp` flag.
    pub oper_up: bool,
    /// The VTEPs that advertised the segment (`vteps[].vtep`).
    pub vteps: Vec<String>,
}

/// Parses zebra's `show evpn es detail json`: a list of segments, each with `esi`, `accessPort`,
/// `flags` (`local`, `remote`, `nonDF`, `readyForBgp`, `operUp`, ...; left out when no flag is
/// set) and `vteps`.
/// Entries without an ESI are skipped and other missing fields read as unset: versions differ.
fn parse_ethernet_segments(command: &str, output: &str) -> Result<Vec<ZebraSegment>, FrrError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Segment {
        esi: String,
        #[serde(default)]
        access_port: serde_json::Value,
        #[serde(default)]
        flags: serde_json::Value,
        #[serde(default)]
        vteps: serde_json::Value,
    }
    let segments = json_entries(command, output)?.into_iter().filter_map(|entry| {
        let segment = serde_json::from_value::<Segment>(entry).ok()?;
        let list = |v: &serde_json::Value| v.as_array().cloned().unwrap_or_default();
        let flags = list(&segment.flags);
        let flag = |name: &str| flags.iter().any(|f| f.as_str() == Some(name));
        Some(ZebraSegment {
            esi: segment.esi.to_ascii_lowercase(),
            local: flag("local"),
            ready: flag("readyForBgp"),
            non_df: flag("nonDF"),
            oper_up: flag("operUp"),
            interface: segment.access_port.as_str().map(str::to_owned),
            vteps: list(&segment.vteps).iter().filter_map(|v| v.get("vtep")?.as_str().map(str::to_owned)).collect(),
        })
    });
    Ok(segments.collect())
}

/// The header of the node-wide BGP instance (`router bgp <asn>`).
fn underlay_instance(config: &Config) -> Option<&str> {
    let is_underlay = |h: &&str| h.starts_with("router bgp ") && !h.contains(" vrf ");
    config.stanzas.iter().map(|s| s.header.as_str()).find(is_underlay)
}

/// `config` without its BGP instances and the L3VNI bindings that FRR wants gone before a VRF's
/// instance ("Please unconfigure l3vni"): the first step of an ASN change.
fn without_bgp(config: &Config) -> Config {
    let mut detached = config.clone();
    detached.stanzas.retain(|s| !s.header.starts_with("router bgp "));
    for vrf in detached.stanzas.iter_mut().filter(|s| s.header.starts_with("vrf ")) {
        vrf.lines.retain(|l| !l.starts_with("vni "));
    }
    detached
}

/// What FRR holds of the agent's after changing `old` to `new` with `failed` groups: a failed
/// addition is retried as a whole, a failed removal from the old; `None` when the node-wide group
/// failed (the underlay holds everything else: start over with a full sync).
fn baseline_after(old: &Config, new: &Config, failed: &Failures) -> Option<Config> {
    let mut baseline = new.clone();
    for (owner, _) in failed {
        if owner.is_none() {
            return None;
        }
        baseline = if new.owners().contains(owner) {
            baseline.without_owner(owner)
        } else {
            baseline.with_owner_from(old, owner)
        };
    }
    Some(baseline)
}

/// The password a configuration command sets or removes (`[no] neighbor X password VALUE`).
fn password_in(command: &str) -> Option<&str> {
    let (_, value) = command.split_once(" password ")?;
    Some(value.trim()).filter(|v| !v.is_empty())
}

/// `text` with every password replaced by [`REDACTED`]: each of `secrets`, and on any line
/// whatever follows ` password ` (FRR echoes a rejected line, and the status, Events and logs
/// are readable by far more people than the Secret).
pub fn redact(text: &str, secrets: &[&str]) -> String {
    let mut redacted: String = text
        .split_inclusive('\n')
        .map(|line| match line.split_once(" password ") {
            Some((before, rest)) => {
                let end = if rest.ends_with('\n') { "\n" } else { "" };
                format!("{before} password {REDACTED}{end}")
            }
            None => line.to_owned(),
        })
        .collect();
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        redacted = redacted.replace(secret, REDACTED);
    }
    redacted
}

/// The flat command list of one vtysh session, each command with the index of its group.
struct Session<'a> {
    commands: Vec<(usize, &'a str)>,
    /// Per group, the index of its last command (its `end`).
    group_ends: Vec<usize>,
    /// The passwords the commands carry.
    secrets: Vec<&'a str>,
}

impl<'a> Session<'a> {
    fn new(groups: &'a [CommandGroup]) -> Self {
        let mut commands = Vec::new();
        let mut group_ends = Vec::new();
        for (i, group) in groups.iter().enumerate() {
            commands.push((i, "configure terminal"));
            commands.extend(group.commands.iter().map(|c| (i, c.as_str())));
            commands.push((i, "end"));
            group_ends.push(commands.len() - 1);
        }
        let secrets = commands.iter().filter_map(|(_, c)| password_in(c)).collect();
        Session { commands, group_ends, secrets }
    }

    /// Each group's outcome from vtysh's echoed output: an error with its lines when one of them
    /// is a rejection (`% ...`, except removals of what is already gone), or when vtysh stopped
    /// before the group's last command. vtysh stops after some of those answers ("% Can't find
    /// BGP instance", "% Only inactive VRFs can be deleted"): when one answered the group's last
    /// command, the group is done. Everything is read redacted, so no error carries a password.
    fn outcomes(&self, output: &str) -> Vec<Result<(), String>> {
        let output = redact(output, &self.secrets);
        let commands: Vec<String> = self.commands.iter().map(|(_, c)| redact(c, &self.secrets)).collect();
        let mut lines: Vec<Vec<&str>> = vec![Vec::new(); self.group_ends.len()];
        let mut echoed = 0;
        for line in output.lines() {
            if let Some(command) = commands.get(echoed)
                && line.strip_suffix(command.as_str()).is_some_and(|prompt| prompt.ends_with("# "))
            {
                echoed += 1;
                continue;
            }
            let line = line.trim();
            // Lines before the first echo are vtysh's own (e.g. it could not connect).
            if let (false, Some((group, _))) =
                (line.is_empty(), echoed.checked_sub(1).and_then(|c| self.commands.get(c)))
            {
                lines[*group].push(line);
            }
        }
        lines
            .into_iter()
            .enumerate()
            .map(|(group, lines)| {
                let rejected = lines.iter().any(|l| l.starts_with('%') && !ALREADY_ABSENT.contains(l));
                let last_was_absent =
                    echoed == self.group_ends[group] && lines.last().is_some_and(|l| ALREADY_ABSENT.contains(l));
                if echoed <= self.group_ends[group] && !last_was_absent {
                    Err(format!("vtysh stopped before the group ran: {}", tail(&output)))
                } else if rejected {
                    Err(lines.join("; "))
                } else {
                    Ok(())
                }
            })
            .collect()
    }
}

/// Every owner of `config` plus those with groups, each with its error or `Ok`.
fn owner_results(
    config: &Config,
    groups: &[CommandGroup],
    failed: Vec<(Option<String>, FrrError)>,
) -> Vec<OwnerResult> {
    let mut owners = config.owners();
    for group in groups {
        if !owners.contains(&group.owner) {
            owners.push(group.owner.clone());
        }
    }
    let mut failed: Vec<Option<(Option<String>, FrrError)>> = failed.into_iter().map(Some).collect();
    owners
        .into_iter()
        .map(|owner| {
            let error = failed.iter_mut().find(|f| f.as_ref().is_some_and(|(o, _)| *o == owner)).and_then(Option::take);
            OwnerResult { result: error.map_or(Ok(()), |(_, e)| Err(e)), owner }
        })
        .collect()
}

/// Runs `program` without a shell, `input` on its standard input; returns whether it exited 0
/// and its stdout + stderr.
async fn run(
    program: &Path,
    args: &[String],
    input: Option<&str>,
    timeout: Duration,
) -> Result<(bool, String), FrrError> {
    let name = program.display().to_string();
    let mut child = Command::new(program)
        .args(args)
        .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| FrrError::Spawn { program: name.clone(), source })?;
    let stdin = child.stdin.take();
    // Written while the output is read: vtysh answers as it reads, and a full pipe either way
    // would stall both.
    let feed = async move {
        if let (Some(mut stdin), Some(input)) = (stdin, input) {
            // A vtysh that stopped early closes its end; its output says what it did.
            let _ = stdin.write_all(input.as_bytes()).await;
        }
    };
    let (_, output) = tokio::time::timeout(timeout, async { tokio::join!(feed, child.wait_with_output()) })
        .await
        .map_err(|_| FrrError::Timeout { program: name.clone(), timeout })?;
    let output = output.map_err(|source| FrrError::Spawn { program: name, source })?;
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    Ok((output.status.success(), text))
}

/// FRR's error lines (`% ...`), joined; empty when there are none.
fn error_lines(output: &str) -> String {
    output.lines().map(str::trim).filter(|l| l.starts_with('%')).collect::<Vec<_>>().join("; ")
}

/// The last lines of an output, for an error message when FRR printed no `%` line.
fn tail(output: &str) -> String {
    let lines: Vec<&str> = output.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(5)..].join("; ")
}

/// Parses vtysh JSON output; `None` when FRR printed nothing (e.g. no BGP instance yet).
fn parse_json<T: serde::de::DeserializeOwned>(command: &str, output: &str) -> Result<Option<T>, FrrError> {
    if output.trim().is_empty() {
        return Ok(None);
    }
    serde_json::from_str(output)
        .map(Some)
        .map_err(|e| FrrError::ParseState { command: command.into(), reason: e.to_string() })
}

/// The entries of a JSON list, or the values of a JSON map (FRR prints either, by version and
/// command); none when FRR printed nothing.
fn json_entries(command: &str, output: &str) -> Result<Vec<serde_json::Value>, FrrError> {
    match parse_json::<serde_json::Value>(command, output)? {
        None => Ok(Vec::new()),
        Some(serde_json::Value::Array(entries)) => Ok(entries),
        Some(serde_json::Value::Object(map)) => Ok(map.into_iter().map(|(_, v)| v).collect()),
        Some(_) => Err(FrrError::ParseState { command: command.into(), reason: "neither a list nor a map".into() }),
    }
}

/// Writes a file readable by its owner only: it carries the BGP passwords.
async fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let (path, text) = (path.to_owned(), text.to_owned());
    let write = move || {
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)?
            .write_all(text.as_bytes())
    };
    tokio::task::spawn_blocking(write).await.map_err(std::io::Error::other)?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_lines_and_tails_keep_messages_short() {
        assert_eq!(
            error_lines("ok\n% Malformed Route Target list\n  % Unknown command\n"),
            "% Malformed Route Target list; % Unknown command"
        );
        assert_eq!(error_lines("Building configuration...\n"), "");
        assert_eq!(tail("a\n\nb\nc\nd\ne\nf\n"), "b; c; d; e; f");
    }

    #[test]
    fn echoed_output_attributes_errors_to_their_group() {
        let groups = [
            CommandGroup {
                owner: Some("bad".into()),
                commands: vec!["router bgp 65001".into(), "vni 300".into(), "exit".into()],
            },
            CommandGroup { owner: Some("gone".into()), commands: vec!["router bgp 65001".into(), "no vni 200".into()] },
            CommandGroup { owner: None, commands: vec!["router bgp 65001".into(), "exit".into()] },
        ];
        let session = Session::new(&groups);
        let output = "n1# configure terminal\nn1(config)# router bgp 65001\nn1(config-router)# vni 300\n\
            % Configuration failed.\nError description: VNI 300 is bad\nn1(config-router)# exit\nn1(config)# end\n\
            n1# configure terminal\nn1(config)# router bgp 65001\nn1(config-router)# no vni 200\n\
            % Specified VNI does not exist\nn1(config-router)# end\nn1# configure terminal\n";
        let outcomes = session.outcomes(output);
        assert_eq!(outcomes[0], Err("% Configuration failed.; Error description: VNI 300 is bad".into()));
        assert_eq!(outcomes[1], Ok(()), "removing what is gone is no failure");
        assert!(outcomes[2].as_ref().is_err_and(|e| e.starts_with("vtysh stopped")), "{outcomes:?}");
    }

    /// FRR 8.4.4 echoes a line it rejects whole ("% Unknown command: <line>"): a mistyped
    /// password line would carry the password into the node status. A password in other output
    /// (a stop before the group ran) is redacted too.
    #[test]
    fn no_error_carries_a_password() {
        let groups = [
            CommandGroup {
                owner: None,
                commands: vec![
                    "router bgp 65001".into(),
                    "neighbor 198.18.1.1 password s3cret".into(),
                    "neighbor 198.18.1.1 passwrd s3cret".into(),
                    "exit".into(),
                ],
            },
            CommandGroup {
                owner: Some("blue".into()),
                commands: vec!["no neighbor 198.18.1.2 password old-one".into()],
            },
        ];
        let session = Session::new(&groups);
        let output = "\nHello, this is FRRouting (version 8.4.4).\n\
            n1# configure terminal\nn1(config)# router bgp 65001\n\
            n1(config-router)# neighbor 198.18.1.1 password s3cret\n\
            n1(config-router)# neighbor 198.18.1.1 passwrd s3cret\n\
            % Unknown command: neighbor 198.18.1.1 passwrd s3cret\n\
            n1(config-router)# exit\nn1(config)# end\nn1# configure terminal\n\
            n1(config)# no neighbor 198.18.1.2 password old-one\n";
        let outcomes = session.outcomes(output);
        assert_eq!(outcomes[0], Err(format!("% Unknown command: neighbor 198.18.1.1 passwrd {REDACTED}")));
        let stopped = outcomes[1].as_ref().expect_err("vtysh stopped before the group's end");
        assert!(stopped.starts_with("vtysh stopped") && stopped.contains(REDACTED), "{stopped}");
        for outcome in &outcomes {
            let text = format!("{outcome:?}");
            assert!(!text.contains("s3cret") && !text.contains("old-one"), "{text}");
        }
        assert_eq!(
            redact("a\n neighbor x password q w\n% b q\n", &["q"]),
            format!("a\n neighbor x password {REDACTED}\n% b {REDACTED}\n")
        );
        assert_eq!(password_in("no neighbor eth1 password  x y "), Some("x y"));
        assert_eq!(password_in("neighbor eth1 remote-as 65000"), None);
    }

    /// What FRR 8.4.4 answers when a network's kernel VRF, whose device still exists, is deleted.
    #[test]
    fn removing_a_network_whose_kernel_vrf_device_remains_is_done_although_vtysh_stopped() {
        let groups = [
            CommandGroup {
                owner: Some("green".into()),
                commands: vec![
                    "vrf green".into(),
                    "no vni 10005".into(),
                    "exit-vrf".into(),
                    "no router bgp 65001 vrf green".into(),
                    "no vrf green".into(),
                ],
            },
            CommandGroup { owner: Some("next".into()), commands: vec!["router bgp 65001".into()] },
        ];
        let session = Session::new(&groups);
        let output = "n1# configure terminal\nn1(config)# vrf green\nn1(config-vrf)# no vni 10005\n\
            n1(config-vrf)# exit-vrf\nn1(config)# no router bgp 65001 vrf green\nn1(config)# no vrf green\n\
            % Only inactive VRFs can be deleted\n";
        let outcomes = session.outcomes(output);
        assert_eq!(outcomes[0], Ok(()), "{outcomes:?}");
        assert!(outcomes[1].as_ref().is_err_and(|e| e.starts_with("vtysh stopped")), "{outcomes:?}");
    }

    /// Shaped after zebra_evpn_es_show_entry_detail() of FRR 8.4.4: a local segment that lost the
    /// election, a remote-only one, one without flags, and entries of unknown shape.
    #[test]
    fn parses_zebra_ethernet_segments() {
        let output = r#"[
          {"esi":"03:02:aa:00:00:00:01:00:00:07","accessPort":"bond3",
           "flags":["local","remote","nonDF","readyForBgp","bridgePort","operUp","nexthopGroupActive"],
           "vniCount":1,"macCount":2,"dfPreference":100,"nexthopGroup":536870913,
           "vteps":[{"vtep":"198.18.0.2","dfAlgorithm":"preference","dfPreference":50000,"nexthopId":268435457}]},
          {"esi":"00:11:22:33:44:55:66:77:88:99","flags":["remote"],"vniCount":0,"macCount":0,
           "dfPreference":0,"nexthopGroup":0,"vteps":[{"vtep":"198.18.0.3"}]},
          {"esi":"00:AA:22:33:44:55:66:77:88:99","accessPort":"bond4","vniCount":0,"macCount":0},
          {"accessPort":"bond5"},
          {"esi":"00:bb:22:33:44:55:66:77:88:99","flags":"local","vteps":[{"nexthopId":1}, 7]}
        ]"#;
        let segments = parse_ethernet_segments("c", output).unwrap();
        assert_eq!(
            segments[0],
            ZebraSegment {
                esi: "03:02:aa:00:00:00:01:00:00:07".into(),
                interface: Some("bond3".into()),
                local: true,
                ready: true,
                non_df: true,
                oper_up: true,
                vteps: vec!["198.18.0.2".into()],
            }
        );
        assert_eq!((segments[1].local, segments[1].interface.as_deref()), (false, None));
        assert_eq!(
            (segments[2].esi.as_str(), segments[2].local, segments[2].oper_up),
            ("00:aa:22:33:44:55:66:77:88:99", false, false)
        );
        assert_eq!(
            (segments[3].local, segments[3].vteps.len(), segments.len()),
            (false, 0, 4),
            "fields of another shape read as unset; entries without an ESI are skipped"
        );
        assert_eq!(parse_ethernet_segments("c", "").unwrap(), []);
        assert_eq!(parse_ethernet_segments("c", "{}").unwrap(), []);
        assert!(parse_ethernet_segments("c", "7").is_err());
    }

    #[test]
    fn json_parsing_tolerates_empty_and_rejects_garbage() {
        assert_eq!(parse_json::<serde_json::Value>("c", "  \n").ok().flatten(), None);
        assert!(matches!(
            parse_json::<serde_json::Value>("c", "% bgpd is not running"),
            Err(FrrError::ParseState { .. })
        ));
    }
}
