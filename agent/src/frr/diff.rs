//! The vtysh commands that turn one [`Config`] into another, grouped per owner.
//!
//! Each group starts and ends at `configure terminal` level and enters every context it needs, so
//! it runs on its own: one network's failing group never stops another's. vtysh resolves a
//! command in the current context or, failing that, in its parents by prefix (`vrf red` typed in
//! `router bgp` becomes `vrf-policy red` on 8.4.4), so groups leave every context explicitly.
//!
//! Order within a group, all verified traps on FRR 8.4.4:
//! - removals before additions, so a changed single-valued setting (`rd`) is not removed after
//!   being set, except route targets: new ones first, so an import never lapses; settings FRR replaces in place (`rd`, `remote-as`, ...) are only set, since
//!   `no neighbor X remote-as` would delete the whole neighbor;
//! - removals deepest first and lines in reverse, so `no neighbor X activate` runs before the
//!   neighbor disappears;
//! - top-level stanzas in configuration order, so `vrf red` / `no vni 4000` comes before
//!   `no router bgp 65001 vrf red` ("Please unconfigure l3vni" otherwise), and a kernel VRF's
//!   `no vrf red` comes last;
//! - a `netns` line is never removed and a netns-bound `vrf` is never deleted: 8.4.4 cannot bind
//!   it again ("Invalid NSID");
//! - an `interface` is never deleted, only emptied of our lines: the device is not ours, and
//!   zebra refuses to delete an interface the kernel has;
//! - nor is `bfd`, nor any context the running configuration shows holding the admin's lines too
//!   (FRR is shared: the agent only takes out what it put in).
//!
//! Node-wide additions form the first group (networks hang their `vni` blocks inside the
//! underlay `router bgp`), node-wide removals the last (`no router bgp 65001` fails while VRF
//! instances exist).

use std::collections::BTreeSet;

use super::config::{Config, Stanza};

/// The commands of one owner, runnable on their own from `configure terminal`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandGroup {
    /// `None`: node-wide; `Some(evpn)`: that network.
    pub owner: Option<String>,
    pub commands: Vec<String>,
}

/// One command in its context path (headers from the top level down).
struct Change<'a> {
    owner: Option<&'a str>,
    path: Vec<&'a str>,
    /// `None` only enters the context (a stanza created without lines).
    command: Option<String>,
}

/// The commands that change FRR from `old` to `new`.
pub fn diff(old: &Config, new: &Config) -> Vec<CommandGroup> {
    diff_sharing(old, new, &BTreeSet::new())
}

/// [`diff`], where the top-level contexts `shared` also hold what is not the agent's.
pub fn diff_sharing(old: &Config, new: &Config, shared: &BTreeSet<String>) -> Vec<CommandGroup> {
    let mut removals = Vec::new();
    let mut deferred_vrf_deletions = Vec::new();
    for stanza in &old.stanzas {
        let never_deleted = stanza.header.starts_with("interface ") || stanza.header == "bfd";
        match new.stanzas.iter().find(|s| s.header == stanza.header) {
            Some(kept) => removals_within(stanza, kept, &mut Vec::new(), &mut removals),
            // Not only ours (a bond, an uplink, the admin's BFD peers or neighbors): only our
            // lines leave it.
            None if never_deleted || shared.contains(&stanza.header) => {
                emptied_stanza(stanza, &mut Vec::new(), &mut removals)
            }
            None if stanza.header.starts_with("vrf ") => {
                // Empty the VRF now, delete it after its BGP instance, or keep it if netns-bound.
                let path = vec![stanza.header.as_str()];
                for line in stanza.lines.iter().rev().filter(|l| !l.starts_with("netns ")) {
                    removals.push(change(stanza, path.clone(), Some(format!("no {line}"))));
                }
                if stanza.netns_line().is_none() {
                    deferred_vrf_deletions.push(change(stanza, Vec::new(), Some(format!("no {}", stanza.header))));
                }
            }
            None => removed_stanza(stanza, &mut Vec::new(), &mut removals),
        }
    }
    removals.extend(deferred_vrf_deletions);

    let mut additions = Vec::new();
    for stanza in &new.stanzas {
        match old.stanzas.iter().find(|s| s.header == stanza.header) {
            Some(kept) => additions_within(kept, stanza, &mut Vec::new(), &mut additions),
            None => added_stanza(stanza, &mut Vec::new(), &mut additions),
        }
    }

    let (node_removals, network_removals): (Vec<_>, Vec<_>) = removals.into_iter().partition(|c| c.owner.is_none());
    let (node_additions, network_additions): (Vec<_>, Vec<_>) = additions.into_iter().partition(|c| c.owner.is_none());
    let mut groups = Vec::new();
    push_group(&mut groups, None, node_additions.iter());
    let mut networks: Vec<&str> = Vec::new();
    for owner in network_removals.iter().chain(&network_additions).filter_map(|c| c.owner) {
        if !networks.contains(&owner) {
            networks.push(owner);
        }
    }
    for network in networks {
        let owned = |c: &&Change| c.owner == Some(network);
        // Route targets are make-before-break: the new ones are in place before the old ones
        // go, so a VRF moving to another VPN never has a moment with nothing to import.
        let route_target_removal =
            |c: &&Change| c.command.as_deref().is_some_and(|c| c.starts_with("no route-target "));
        let removals = network_removals.iter().filter(owned);
        push_group(
            &mut groups,
            Some(network),
            removals
                .clone()
                .filter(|c| !route_target_removal(c))
                .chain(network_additions.iter().filter(owned))
                .chain(removals.filter(route_target_removal)),
        );
    }
    push_group(&mut groups, None, node_removals.iter());
    groups
}

fn change<'a>(stanza: &'a Stanza, path: Vec<&'a str>, command: Option<String>) -> Change<'a> {
    Change { owner: stanza.owner.as_deref(), path, command }
}

/// A setting FRR replaces in place when given a new value: its line without the value.
fn setting_key(line: &str) -> Option<&str> {
    let (key, _value) = line.rsplit_once(' ')?;
    let words: Vec<&str> = key.split(' ').collect();
    let single_valued = matches!(
        words[..],
        ["bgp", "router-id"]
            | ["rd"]
            | ["neighbor", _, "remote-as"]
            | ["neighbor", _, "interface", "remote-as"]
            | ["neighbor", _, "password"]
            | ["neighbor", _, "bfd", "profile"]
            | ["receive-interval"]
            | ["transmit-interval"]
            | ["detect-multiplier"]
            | ["evpn", "mh", "es-id"]
            | ["evpn", "mh", "es-sys-mac"]
            | ["evpn", "mh", "es-df-pref"]
    );
    single_valued.then_some(key)
}

fn removals_within<'a>(old: &'a Stanza, new: &'a Stanza, path: &mut Vec<&'a str>, out: &mut Vec<Change<'a>>) {
    path.push(&old.header);
    for child in old.children.iter().rev() {
        match new.children.iter().find(|c| c.header == child.header) {
            Some(kept) => removals_within(child, kept, path, out),
            None => removed_stanza(child, path, out),
        }
    }
    let replaced = |line: &str| setting_key(line).is_some_and(|k| new.lines.iter().any(|l| setting_key(l) == Some(k)));
    for line in old.lines.iter().rev() {
        if !new.lines.contains(line) && !line.starts_with("netns ") && !replaced(line) {
            out.push(change(old, path.clone(), Some(format!("no {line}"))));
        }
    }
    path.pop();
}

/// The `no` of each line of `stanza`, deepest first; a sub-stanza goes whole, except an
/// address family, which FRR has no `no` for.
fn emptied_stanza<'a>(stanza: &'a Stanza, path: &mut Vec<&'a str>, out: &mut Vec<Change<'a>>) {
    path.push(&stanza.header);
    for child in stanza.children.iter().rev() {
        if child.header.starts_with("address-family ") {
            emptied_stanza(child, path, out);
        } else {
            removed_stanza(child, path, out);
        }
    }
    for line in stanza.lines.iter().rev().filter(|l| !l.starts_with("netns ")) {
        out.push(change(stanza, path.clone(), Some(format!("no {line}"))));
    }
    path.pop();
}

/// `no <header>`, after removing what other owners put inside, so each owner's group says what
/// it lost (a network's `vni` block inside a removed `router bgp`).
fn removed_stanza<'a>(stanza: &'a Stanza, path: &mut Vec<&'a str>, out: &mut Vec<Change<'a>>) {
    fn foreign<'a>(stanza: &'a Stanza, owner: Option<&str>, path: &mut Vec<&'a str>, out: &mut Vec<Change<'a>>) {
        if stanza.owner.as_deref() != owner {
            out.push(change(stanza, path.clone(), Some(format!("no {}", stanza.header))));
            return;
        }
        path.push(&stanza.header);
        for child in stanza.children.iter().rev() {
            foreign(child, owner, path, out);
        }
        path.pop();
    }
    path.push(&stanza.header);
    for child in stanza.children.iter().rev() {
        foreign(child, stanza.owner.as_deref(), path, out);
    }
    path.pop();
    out.push(change(stanza, path.clone(), Some(format!("no {}", stanza.header))));
}

fn additions_within<'a>(old: &'a Stanza, new: &'a Stanza, path: &mut Vec<&'a str>, out: &mut Vec<Change<'a>>) {
    path.push(&new.header);
    for line in new.lines.iter().filter(|l| !old.lines.contains(l)) {
        out.push(change(new, path.clone(), Some(line.clone())));
    }
    for child in &new.children {
        match old.children.iter().find(|c| c.header == child.header) {
            Some(kept) => additions_within(kept, child, path, out),
            None => added_stanza(child, path, out),
        }
    }
    path.pop();
}

fn added_stanza<'a>(stanza: &'a Stanza, path: &mut Vec<&'a str>, out: &mut Vec<Change<'a>>) {
    path.push(&stanza.header);
    if stanza.lines.is_empty() {
        out.push(change(stanza, path.clone(), None));
    }
    for line in &stanza.lines {
        out.push(change(stanza, path.clone(), Some(line.clone())));
    }
    for child in &stanza.children {
        added_stanza(child, path, out);
    }
    path.pop();
}

/// Serialises changes into one group, entering and leaving contexts as the paths require.
fn push_group<'a>(groups: &mut Vec<CommandGroup>, owner: Option<&str>, changes: impl Iterator<Item = &'a Change<'a>>) {
    let mut commands = Vec::new();
    let mut context: Vec<&str> = Vec::new();
    for c in changes {
        let common = context.iter().zip(&c.path).take_while(|(a, b)| a == b).count();
        while context.len() > common {
            if let Some(header) = context.pop() {
                commands.push(exit_command(header).to_owned());
            }
        }
        for header in &c.path[common..] {
            commands.push((*header).to_owned());
            context.push(header);
        }
        commands.extend(c.command.clone());
    }
    while let Some(header) = context.pop() {
        commands.push(exit_command(header).to_owned());
    }
    if !commands.is_empty() {
        groups.push(CommandGroup { owner: owner.map(Into::into), commands });
    }
}

fn exit_command(header: &str) -> &'static str {
    Stanza::new(header, None).exit_command()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frr::render::render;
    use crate::frr::render::tests::{VTEP, ethernet_segment, network, node, opts, segment, underlay_bgp};
    use crate::plan::NodePlan;
    use evpn_crds::nodestate::VrfBackend;

    fn config(plan: &NodePlan, backend: VrfBackend) -> Config {
        render(plan, VTEP, &opts(backend))
    }

    fn two_l2(rt_of_200: &str) -> NodePlan {
        node(
            vec![
                network("blue", Some(segment(100, 1, &["65000:100"], &["65000:100"])), None),
                network("green", Some(segment(200, 2, &[rt_of_200], &["65000:200"])), None),
            ],
            underlay_bgp(),
        )
    }

    fn group(owner: Option<&str>, commands: &str) -> CommandGroup {
        CommandGroup { owner: owner.map(Into::into), commands: commands.lines().map(|l| l.trim().to_owned()).collect() }
    }

    #[test]
    fn unchanged_config_needs_no_commands() {
        let c = config(&two_l2("65000:200"), VrfBackend::KernelVrf);
        assert_eq!(diff(&c, &c), []);
    }

    #[test]
    fn one_vni_route_target_change_touches_only_that_vni() {
        let old = config(&two_l2("65000:200"), VrfBackend::KernelVrf);
        let new = config(&two_l2("65000:201"), VrfBackend::KernelVrf);
        let expected = group(
            Some("green"),
            "router bgp 65001
             address-family l2vpn evpn
             vni 200
             route-target import 65000:201
             no route-target import 65000:200
             exit-vni
             exit-address-family
             exit",
        );
        assert_eq!(diff(&old, &new), [expected]);
    }

    #[test]
    fn adding_a_network_creates_its_stanzas_in_order() {
        let old = config(&node(Vec::new(), underlay_bgp()), VrfBackend::NetnsVrf);
        let new = config(
            &node(vec![network("red", None, Some(segment(4000, 7, &[], &[])))], underlay_bgp()),
            VrfBackend::NetnsVrf,
        );
        let expected = group(
            Some("red"),
            "vrf red
             vni 4000
             netns /run/netns/red
             exit-vrf
             router bgp 65001 vrf red
             bgp router-id 198.18.0.1
             address-family ipv4 unicast
             redistribute connected
             exit-address-family
             address-family ipv6 unicast
             redistribute connected
             exit-address-family
             address-family l2vpn evpn
             advertise ipv4 unicast
             advertise ipv6 unicast
             rd 198.18.0.1:7
             exit-address-family
             exit",
        );
        assert_eq!(diff(&old, &new), [expected]);
    }

    #[test]
    fn removing_layer3_unbinds_the_vni_before_the_bgp_instance_and_keeps_netns() {
        let with_red = node(vec![network("red", None, Some(segment(4000, 7, &[], &[])))], underlay_bgp());
        let old = config(&with_red, VrfBackend::NetnsVrf);
        let without = config(&node(Vec::new(), underlay_bgp()), VrfBackend::NetnsVrf);
        let expected = group(
            Some("red"),
            "vrf red
             no vni 4000
             exit-vrf
             no router bgp 65001 vrf red",
        );
        assert_eq!(diff(&old, &without), std::slice::from_ref(&expected));
        // What the driver keeps as baseline: the netns binding stays and is not touched again.
        let retained = without.retaining_netns_vrfs(&old.stanzas);
        assert_eq!(diff(&old, &retained), [expected]);
        assert_eq!(diff(&retained, &retained.retaining_netns_vrfs(&retained.stanzas)), []);

        let kernel = diff(
            &config(&with_red, VrfBackend::KernelVrf),
            &config(&node(Vec::new(), underlay_bgp()), VrfBackend::KernelVrf),
        );
        assert_eq!(
            kernel[0].commands,
            ["vrf red", "no vni 4000", "exit-vrf", "no router bgp 65001 vrf red", "no vrf red"].map(String::from)
        );
    }

    #[test]
    fn removing_a_network_removes_its_vni_block_only() {
        let old = config(&two_l2("65000:200"), VrfBackend::KernelVrf);
        let new = config(
            &node(vec![network("blue", Some(segment(100, 1, &["65000:100"], &["65000:100"])), None)], underlay_bgp()),
            VrfBackend::KernelVrf,
        );
        let expected = group(
            Some("green"),
            "router bgp 65001
             address-family l2vpn evpn
             no vni 200
             exit-address-family
             exit",
        );
        assert_eq!(diff(&old, &new), [expected]);
    }

    #[test]
    fn node_wide_goes_first_on_additions_and_last_on_removals() {
        let blue = || vec![network("blue", Some(segment(100, 1, &[], &[])), None)];
        let empty = Config { hostname: "n1".into(), stanzas: Vec::new() };
        let full = config(&node(blue(), underlay_bgp()), VrfBackend::KernelVrf);
        let owners = |groups: Vec<CommandGroup>| groups.into_iter().map(|g| g.owner).collect::<Vec<_>>();
        assert_eq!(owners(diff(&empty, &full)), [None, Some("blue".into())]);
        assert_eq!(owners(diff(&full, &empty)), [Some("blue".into()), None]);
        assert_eq!(diff(&full, &empty)[1].commands, ["no router bgp 65001"]);
    }

    /// blue (VNI 100) with the given segments, and an uplink eth1.
    fn multihomed(segments: &[bool]) -> Config {
        let mut blue = network("blue", Some(segment(100, 1, &[], &[])), None);
        blue.ethernet_segments = segments.iter().map(|t| ethernet_segment(*t)).collect();
        let mut o = opts(VrfBackend::KernelVrf);
        o.uplinks.insert("eth1".into());
        render(&node(vec![blue], underlay_bgp()), VTEP, &o)
    }

    #[test]
    fn adding_a_segment_configures_its_interface_and_the_uplinks() {
        let expected = [
            group(None, "interface eth1\nevpn mh uplink\nexit"),
            group(
                Some("blue"),
                "interface bond3
                 evpn mh es-df-pref 100
                 evpn mh es-id 7
                 evpn mh es-sys-mac 02:aa:00:00:00:01
                 exit",
            ),
        ];
        assert_eq!(diff(&multihomed(&[]), &multihomed(&[true])), expected);
        assert_eq!(
            diff(&multihomed(&[true]), &multihomed(&[true, false])),
            [group(Some("blue"), "interface bond1\nevpn mh es-id 00:11:22:33:44:55:66:77:88:99\nexit")]
        );
    }

    #[test]
    fn removing_the_last_segment_empties_the_interfaces_without_deleting_them() {
        let expected = [
            group(
                Some("blue"),
                "interface bond3
                 no evpn mh es-sys-mac 02:aa:00:00:00:01
                 no evpn mh es-id 7
                 no evpn mh es-df-pref 100
                 exit",
            ),
            group(None, "interface eth1\nno evpn mh uplink\nexit"),
        ];
        assert_eq!(diff(&multihomed(&[true]), &multihomed(&[])), expected);
    }

    /// The admin's lines share the underlay instance and `bfd`: removing the agent's leaves both
    /// contexts, emptied of the agent's lines only.
    #[test]
    fn shared_contexts_are_emptied_never_deleted() {
        let mut bgp = underlay_bgp();
        bgp.bfd_profiles.push(evpn_crds::vtep::BfdProfile {
            name: "fast".into(),
            receive_interval: 100,
            transmit_interval: 300,
            detect_multiplier: 3,
        });
        let full =
            config(&node(vec![network("blue", Some(segment(100, 1, &[], &[])), None)], bgp), VrfBackend::KernelVrf);
        let shared = BTreeSet::from(["router bgp 65001".to_owned()]);
        let groups = diff_sharing(&full, &Config::default(), &shared);
        let commands: Vec<&str> = groups.iter().flat_map(|g| g.commands.iter().map(String::as_str)).collect();
        assert!(!commands.contains(&"no router bgp 65001") && !commands.contains(&"no bfd"), "{commands:?}");
        for expected in
            ["no neighbor 198.18.1.1 remote-as 65000", "no bgp router-id 198.18.0.1", "no profile fast", "no vni 100"]
        {
            assert!(commands.contains(&expected), "{expected} missing from {commands:?}");
        }
        let unshared = diff(&full, &Config::default());
        assert!(unshared.iter().any(|g| g.commands.contains(&"no router bgp 65001".to_owned())), "{unshared:?}");
    }

    #[test]
    fn a_changed_esi_is_set_in_place() {
        let type_0 = multihomed(&[false]);
        let mut other = type_0.clone();
        if let Some(s) = other.stanzas.iter_mut().find(|s| s.header == "interface bond1") {
            s.lines = vec!["evpn mh es-id 00:11:22:33:44:55:66:77:88:aa".into()];
        }
        assert_eq!(
            diff(&type_0, &other),
            [group(Some("blue"), "interface bond1\nevpn mh es-id 00:11:22:33:44:55:66:77:88:aa\nexit")]
        );
    }

    #[test]
    fn changed_settings_are_replaced_in_place() {
        let old = config(&two_l2("65000:200"), VrfBackend::KernelVrf);
        let mut bgp = underlay_bgp();
        bgp.neighbors[0].asn = Some(65010);
        let mut plan = two_l2("65000:200");
        if let Some(v) = plan.vtep.as_mut() {
            v.bgp = Some(bgp);
        }
        if let Some(s) = plan.networks[0].mac_vrf.as_mut() {
            s.rd_index = 9;
        }
        let groups = diff(&old, &config(&plan, VrfBackend::KernelVrf));
        assert_eq!(groups[0], group(None, "router bgp 65001\nneighbor 198.18.1.1 remote-as 65010\nexit"));
        assert_eq!(
            groups[1],
            group(
                Some("blue"),
                "router bgp 65001\naddress-family l2vpn evpn\nvni 100\nrd 198.18.0.1:9\nexit-vni\nexit-address-family\nexit"
            )
        );
    }
}
