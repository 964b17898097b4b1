//! The FRR configuration the agent owns, as a tree of stanzas.
//!
//! A stanza is a context header (`router bgp 65001`, `address-family l2vpn evpn`, `vni 100`) with
//! its plain lines and its sub-stanzas. Every stanza carries an owner: `None` for the node-wide
//! underlay BGP, `Some(evpn)` for what one network added. A network's `vni` block lives inside the
//! node-wide `router bgp`, so ownership is per stanza, not per top-level block; lines belong to the
//! owner of their stanza. The same tree is diffed into vtysh commands, rendered as frr.conf text
//! (for people and the render tests), and parsed back from `show running-config` to check what FRR really took and
//! to find, in a configuration FRR shares with the node's admin, the part that is the agent's.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// A context header with its lines and sub-stanzas.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stanza {
    /// The command that enters the context, e.g. `router bgp 65001 vrf red`.
    pub header: String,
    /// `None`: node-wide; `Some(evpn)`: belongs to that network.
    pub owner: Option<String>,
    pub lines: Vec<String>,
    pub children: Vec<Stanza>,
}

impl Stanza {
    pub fn new(header: impl Into<String>, owner: Option<&str>) -> Self {
        Stanza { header: header.into(), owner: owner.map(Into::into), lines: Vec::new(), children: Vec::new() }
    }

    pub fn line(mut self, line: impl Into<String>) -> Self {
        self.lines.push(line.into());
        self
    }

    pub fn child(mut self, child: Stanza) -> Self {
        self.children.push(child);
        self
    }

    /// The command that leaves this context, as FRR writes it in its own configuration.
    pub fn exit_command(&self) -> &'static str {
        match self.header.split(' ').next() {
            Some("vrf") => "exit-vrf",
            Some("address-family") => "exit-address-family",
            Some("vni") => "exit-vni",
            _ => "exit",
        }
    }

    /// The `netns` line of a `vrf` stanza (netns VRF backend).
    pub fn netns_line(&self) -> Option<&str> {
        if !self.header.starts_with("vrf ") {
            return None;
        }
        self.lines.iter().map(String::as_str).find(|l| l.starts_with("netns "))
    }

    fn write_text(&self, depth: usize, out: &mut String) {
        let indent = " ".repeat(depth);
        let _ = writeln!(out, "{indent}{}", self.header);
        for line in &self.lines {
            let _ = writeln!(out, "{indent} {line}");
        }
        for child in &self.children {
            child.write_text(depth + 1, out);
        }
        let _ = writeln!(out, "{indent}{}", self.exit_command());
    }

    /// Removes every sub-stanza owned by `owner`; returns false when this stanza itself is theirs.
    fn retain_not_owned_by(&mut self, owner: &Option<String>) -> bool {
        if &self.owner == owner {
            return false;
        }
        self.children.retain_mut(|c| c.retain_not_owned_by(owner));
        true
    }

    /// Copies into `self` (the same context in another config) the sub-stanzas owned by `owner`.
    fn merge_owned(&mut self, from: &Stanza, owner: &Option<String>) {
        for child in &from.children {
            match self.children.iter_mut().find(|c| c.header == child.header) {
                Some(mine) => mine.merge_owned(child, owner),
                None => self.children.extend(child.owned_part(owner)),
            }
        }
    }

    /// What `owner` has in this stanza, inside bare copies of the contexts that lead to it.
    fn owned_part(&self, owner: &Option<String>) -> Option<Stanza> {
        if &self.owner == owner {
            return Some(self.clone());
        }
        let children: Vec<Stanza> = self.children.iter().filter_map(|c| c.owned_part(owner)).collect();
        (!children.is_empty()).then(|| Stanza {
            header: self.header.clone(),
            owner: self.owner.clone(),
            lines: Vec::new(),
            children,
        })
    }

    fn collect_owners(&self, owners: &mut Vec<Option<String>>) {
        if !owners.contains(&self.owner) {
            owners.push(self.owner.clone());
        }
        for child in &self.children {
            child.collect_owners(owners);
        }
    }

    /// Adds the lines and sub-stanzas of `other` (the same context) that this one lacks.
    fn merge(&mut self, other: &Stanza) {
        for line in &other.lines {
            if !self.lines.contains(line) {
                self.lines.push(line.clone());
            }
        }
        merge_stanzas(&mut self.children, &other.children);
    }
}

fn merge_stanzas(mine: &mut Vec<Stanza>, other: &[Stanza]) {
    for stanza in other {
        match mine.iter_mut().find(|s| s.header == stanza.header) {
            Some(same) => same.merge(stanza),
            None => mine.push(stanza.clone()),
        }
    }
}

/// The whole configuration the agent wants in FRR.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// Written on the `hostname` line of [`Config::text`].
    pub hostname: String,
    /// Top-level stanzas in the order FRR needs them (VRFs first, see [`Config::sort`]).
    pub stanzas: Vec<Stanza>,
}

/// Where a top-level stanza goes. vtysh resolves a command in the current context or its parents, so a `vrf red` after `router bgp` would become
/// `vrf-policy red` (prefix match, seen on 8.4.4): VRFs come first, as in FRR's own output.
fn top_level_rank(stanza: &Stanza) -> u8 {
    let words: Vec<&str> = stanza.header.split(' ').collect();
    match words[..] {
        ["vrf", ..] => 0,
        ["interface", ..] => 1,
        ["bfd", ..] => 2,
        ["router", "bgp", _] => 3,
        _ => 4,
    }
}

impl Config {
    /// frr.conf text of this configuration: the header lines FRR needs, then the stanzas.
    pub fn text(&self) -> String {
        let mut out = String::from("frr defaults datacenter\n");
        let _ = writeln!(out, "hostname {}", self.hostname);
        out.push_str("service integrated-vtysh-config\n!\n");
        for stanza in &self.stanzas {
            stanza.write_text(0, &mut out);
            out.push_str("!\n");
        }
        out
    }

    /// Every owner with at least one stanza, in order of appearance.
    pub fn owners(&self) -> Vec<Option<String>> {
        let mut owners = Vec::new();
        for stanza in &self.stanzas {
            stanza.collect_owners(&mut owners);
        }
        owners
    }

    /// Puts the top-level stanzas in FRR's order (stable: stanzas of one rank keep theirs).
    pub fn sort(&mut self) {
        self.stanzas.sort_by_key(top_level_rank);
    }

    /// Everything of this configuration and of `other`, with this one's owners where both have a
    /// stanza.
    pub fn merged(&self, other: &Config) -> Config {
        let mut config = self.clone();
        merge_stanzas(&mut config.stanzas, &other.stanzas);
        config.sort();
        config
    }

    /// This configuration without anything `owner` added.
    pub fn without_owner(&self, owner: &Option<String>) -> Config {
        let mut config = self.clone();
        config.stanzas.retain_mut(|s| s.retain_not_owned_by(owner));
        config
    }

    /// This configuration plus the stanzas `owner` has in `from` (replacing its own, if any).
    pub fn with_owner_from(&self, from: &Config, owner: &Option<String>) -> Config {
        let mut config = self.without_owner(owner);
        for stanza in &from.stanzas {
            match config.stanzas.iter_mut().find(|s| s.header == stanza.header) {
                Some(mine) => mine.merge_owned(stanza, owner),
                None => config.stanzas.extend(stanza.owned_part(owner)),
            }
        }
        config.sort();
        config
    }

    /// This configuration plus the netns-bound VRFs of `old` that it dropped, reduced to their
    /// `netns` line: FRR 8.4.4 cannot bind a VRF to its netns again once `no netns` or `no vrf`
    /// unbound it ("Invalid NSID"), so the binding stays for as long as FRR runs.
    pub fn retaining_netns_vrfs(&self, old: &[Stanza]) -> Config {
        let mut config = self.clone();
        for stanza in old {
            let Some(netns) = stanza.netns_line() else { continue };
            if config.stanzas.iter().any(|s| s.header == stanza.header) {
                continue;
            }
            let mut kept = Stanza::new(stanza.header.clone(), stanza.owner.as_deref());
            kept.lines.push(netns.to_owned());
            config.stanzas.push(kept);
        }
        config.sort();
        config
    }

    /// The lines of `owner` that `running` lacks, each with its context (`a > b > line`).
    pub fn missing_from(&self, running: &RunningConfig, owner: &Option<String>) -> Vec<String> {
        self.missing_by_owner(running).remove(owner).unwrap_or_default()
    }

    /// [`Config::missing_from`] for every owner at once, in one walk: with a thousand networks,
    /// a walk per owner would compare a thousand times a thousand contexts.
    pub fn missing_by_owner(&self, running: &RunningConfig) -> BTreeMap<Option<String>, Vec<String>> {
        let mut missing = BTreeMap::new();
        for stanza in &self.stanzas {
            missing_lines(stanza, (&[], &running.stanzas), &mut Vec::new(), &mut missing);
        }
        missing
    }
}

/// Looks `stanza` up in the running context given as (plain lines, sub-stanzas). A context FRR
/// shows without lines (`profile fast` with default timers) parses as a plain line.
fn missing_lines<'a>(
    stanza: &'a Stanza,
    (running_lines, running_stanzas): (&[String], &[Stanza]),
    path: &mut Vec<&'a str>,
    missing: &mut BTreeMap<Option<String>, Vec<String>>,
) {
    path.push(&stanza.header);
    let found = running_stanzas.iter().find(|r| r.header == stanza.header);
    let lines = stanza.lines.iter().filter(|l| found.is_none_or(|r| !r.lines.contains(l)));
    let mut lost: Vec<String> = lines.map(|l| format!("{} > {l}", path.join(" > "))).collect();
    if found.is_none() && stanza.lines.is_empty() && !running_lines.contains(&stanza.header) {
        lost.push(path.join(" > "));
    }
    if !lost.is_empty() {
        missing.entry(stanza.owner.clone()).or_default().extend(lost);
    }
    let inside = found.map(|r| (r.lines.as_slice(), r.children.as_slice())).unwrap_or_default();
    for child in &stanza.children {
        missing_lines(child, inside, path, missing);
    }
    path.pop();
}

/// FRR's `show running-config`, parsed into the same tree (owners left empty), to check what
/// FRR actually applied.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunningConfig {
    pub stanzas: Vec<Stanza>,
}

/// The agent's part of a running configuration FRR shares with the node's admin.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Claimed {
    /// The running lines and contexts the agent's reference has, with its owners.
    pub config: Config,
    /// Top-level contexts that also hold what is not the agent's: emptied of the agent's lines,
    /// never deleted.
    pub shared: BTreeSet<String>,
}

impl RunningConfig {
    /// Parses by indentation: a line followed by deeper-indented lines is a stanza header; exit
    /// lines and `!` separators close nothing we need, indentation says it all.
    pub fn parse(text: &str) -> RunningConfig {
        let lines: Vec<(usize, &str)> = text
            .lines()
            .map(|l| (l.len() - l.trim_start().len(), l.trim()))
            .filter(|(_, l)| !l.is_empty() && !l.starts_with('!') && !l.starts_with("exit") && *l != "end")
            .collect();
        let mut pos = 0;
        RunningConfig { stanzas: parse_children(&lines, &mut pos, 0).1 }
    }

    /// What of this running configuration `reference` (what the agent holds or wants) accounts
    /// for: a line is the agent's where the reference has it in the same context. Everything
    /// else is the admin's and stays out, so nothing built from the result can touch it.
    pub fn claimed_by(&self, reference: &Config) -> Claimed {
        let mut claimed = Claimed {
            config: Config { hostname: reference.hostname.clone(), stanzas: Vec::new() },
            ..Default::default()
        };
        for running in &self.stanzas {
            let Some(ours) = reference.stanzas.iter().find(|s| s.header == running.header) else { continue };
            let (stanza, whole) = claim(running, ours);
            if !whole {
                claimed.shared.insert(running.header.clone());
            }
            claimed.config.stanzas.push(stanza);
        }
        claimed.config.sort();
        claimed
    }
}

/// The part of `running` that `ours` (the same context) has, with `ours`' owners, and whether
/// that is all of `running`.
fn claim(running: &Stanza, ours: &Stanza) -> (Stanza, bool) {
    let mut stanza = Stanza::new(running.header.clone(), ours.owner.as_deref());
    let mut whole = true;
    for line in &running.lines {
        if ours.lines.contains(line) {
            stanza.lines.push(line.clone());
        } else if let Some(empty) = ours.children.iter().find(|c| &c.header == line) {
            // A context FRR shows without lines (`profile fast` with default timers).
            stanza.children.push(Stanza::new(line.clone(), empty.owner.as_deref()));
        } else {
            whole = false;
        }
    }
    for child in &running.children {
        match ours.children.iter().find(|c| c.header == child.header) {
            Some(mine) => {
                let (claimed, all) = claim(child, mine);
                whole &= all;
                stanza.children.push(claimed);
            }
            None => whole = false,
        }
    }
    (stanza, whole)
}

/// Parses the lines at `depth` starting at `pos`: returns (plain lines, stanzas).
fn parse_children(lines: &[(usize, &str)], pos: &mut usize, depth: usize) -> (Vec<String>, Vec<Stanza>) {
    let mut plain = Vec::new();
    let mut stanzas = Vec::new();
    while let Some(&(indent, text)) = lines.get(*pos) {
        if indent < depth {
            break;
        }
        *pos += 1;
        let has_children = lines.get(*pos).is_some_and(|&(next, _)| next > indent);
        if has_children {
            let (child_lines, children) = parse_children(lines, pos, indent + 1);
            stanzas.push(Stanza { header: text.to_owned(), owner: None, lines: child_lines, children });
        } else {
            plain.push(text.to_owned());
        }
    }
    (plain, stanzas)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_running_config_by_indentation() {
        let running = RunningConfig::parse(
            "Building configuration...\n\nCurrent configuration:\n!\nfrr version 8.4.4\nvrf red\n vni 4000\nexit-vrf\n!\n\
             router bgp 65001\n bgp router-id 198.18.0.1\n !\n address-family l2vpn evpn\n  advertise-all-vni\n  vni 100\n   rd 198.18.0.1:1\n  exit-vni\n exit-address-family\nexit\n!\nend\n",
        );
        let bgp = &running.stanzas[1];
        assert_eq!(running.stanzas[0], Stanza::new("vrf red", None).line("vni 4000"));
        assert_eq!(bgp.lines, ["bgp router-id 198.18.0.1"]);
        assert_eq!(bgp.children[0].lines, ["advertise-all-vni"]);
        assert_eq!(bgp.children[0].children[0], Stanza::new("vni 100", None).line("rd 198.18.0.1:1"));

        let desired = Config {
            hostname: "n1".into(),
            stanzas: vec![Stanza::new("router bgp 65001", None).line("bgp router-id 198.18.0.1").child(
                Stanza::new("address-family l2vpn evpn", None).child(
                    Stanza::new("vni 100", Some("blue")).line("rd 198.18.0.1:1").line("route-target import 65000:1"),
                ),
            )],
        };
        assert!(desired.missing_from(&running, &None).is_empty());
        assert_eq!(
            desired.missing_from(&running, &Some("blue".into())),
            ["router bgp 65001 > address-family l2vpn evpn > vni 100 > route-target import 65000:1"]
        );
    }

    /// The admin's lines, in contexts of their own or in the agent's, are not the agent's.
    #[test]
    fn claims_only_what_the_agent_accounts_for() {
        let running = RunningConfig::parse(
            "frr version 8.4.4\nip prefix-list ADMIN seq 5 permit 10.99.0.0/16\n!\nroute-map ADMIN permit 10\n match ip address prefix-list ADMIN\nexit\n!\n\
             vrf red\n vni 4000\nexit-vrf\n!\nrouter bgp 65001\n bgp router-id 198.18.0.1\n neighbor 198.18.255.99 remote-as 65099\n neighbor 198.18.1.1 remote-as 65000\n !\n \
             address-family l2vpn evpn\n  advertise-all-vni\n  vni 100\n   rd 198.18.0.1:1\n  exit-vni\n exit-address-family\nexit\n!\nbfd\n profile fast\n exit\nexit\n!\nend\n",
        );
        let reference = Config {
            hostname: "n1".into(),
            stanzas: vec![
                Stanza::new("vrf red", Some("red")).line("vni 4000"),
                Stanza::new("bfd", None).child(Stanza::new("profile fast", None)),
                Stanza::new("router bgp 65001", None)
                    .line("bgp router-id 198.18.0.1")
                    .line("neighbor 198.18.1.1 remote-as 65000")
                    .child(
                        Stanza::new("address-family l2vpn evpn", None)
                            .line("advertise-all-vni")
                            .child(Stanza::new("vni 100", Some("blue")).line("rd 198.18.0.1:1")),
                    ),
            ],
        };
        let claimed = running.claimed_by(&reference);
        assert_eq!(claimed.config.stanzas, reference.stanzas, "the agent's lines, with its owners, in FRR's order");
        assert_eq!(claimed.shared, BTreeSet::from(["router bgp 65001".to_owned()]));

        let mut fewer = reference.clone();
        fewer.stanzas.retain(|s| s.header.starts_with("router bgp"));
        fewer.stanzas[0].lines.pop();
        let claimed = running.claimed_by(&fewer);
        assert_eq!(claimed.config.stanzas[0].lines, ["bgp router-id 198.18.0.1"]);
        assert_eq!(claimed.config.stanzas.len(), 1, "what the reference lacks stays out");
    }

    #[test]
    fn owner_stanzas_move_between_configs() {
        let with_blue = Config {
            hostname: "n1".into(),
            stanzas: vec![
                Stanza::new("vrf blue", Some("blue")).line("vni 4000"),
                Stanza::new("router bgp 65001", None).child(Stanza::new("vni 100", Some("blue")).line("rd 1.1.1.1:1")),
            ],
        };
        let without = with_blue.without_owner(&Some("blue".into()));
        assert_eq!(without.stanzas, vec![Stanza::new("router bgp 65001", None)]);
        assert_eq!(without.with_owner_from(&with_blue, &Some("blue".into())), with_blue);
        assert_eq!(with_blue.owners(), [Some("blue".to_owned()), None]);
        let only_blue = Config::default().with_owner_from(&with_blue, &Some("blue".into()));
        assert_eq!(
            only_blue.stanzas[1],
            Stanza::new("router bgp 65001", None).child(with_blue.stanzas[1].children[0].clone())
        );
    }
}
