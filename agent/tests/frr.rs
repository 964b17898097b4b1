//! The FRR driver against a real FRR 8.4.4 (zebra + bgpd in a scratch netns, own pathspace).
//!
//! Needs root and Debian's `frr` + `frr-pythontools`; otherwise each test says why it skips.
//! Every wait polls a condition against a deadline. The lab is torn down by a Drop guard, so a
//! failed assertion does not leave daemons or namespaces behind.

use std::net::IpAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use evpn_agent::frr::{Config, Frr, FrrError, RenderOptions, SyncMethod, diff, render};
use evpn_agent::plan::{
    EsiConfig, EthernetSegmentPlan, NetworkPlan, NodePlan, SegmentPlan, SviPlan, VtepPlan, anycast_gateway_mac,
    bridge_name, vxlan_name,
};
use evpn_agent::report::segment_states;
use evpn_crds::RouteTargets;
use evpn_crds::nodestate::VrfBackend;
use evpn_crds::vtep::{BfdProfile, Bgp, BgpNeighbor, VtepMode};
use evpn_tests::admin_frr::{ADMIN_COMMANDS, ArgvWatch, FOREIGN, configure};

const FRR_BINARIES: [&str; 4] = ["/usr/lib/frr/zebra", "/usr/lib/frr/bgpd", "/usr/lib/frr/bfdd", "/usr/bin/vtysh"];
const DAEMONS: [&str; 3] = ["zebra", "bgpd", "bfdd"];
const VTEP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(198, 18, 0, 1));

/// Why this machine cannot run the tests, if it cannot.
fn skip_reason() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let root = status.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"));
    if !root {
        return Some("not running as root (netns and FRR daemons need it)".into());
    }
    FRR_BINARIES.iter().find(|b| !Path::new(b).exists()).map(|b| format!("{b} is not installed"))
}

fn sh(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program).args(args).output().map_err(|e| format!("{program}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn wait_for(what: &str, deadline: Duration, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < deadline, "timed out after {deadline:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// zebra, bgpd and bfdd of pathspace `name` in netns `name`; removed with everything else on drop.
struct Lab {
    name: String,
    /// With the netns VRF backend: the directory zebra sees as /run/netns (see `start_netns`).
    vrf_dir: Option<String>,
}

impl Lab {
    fn start(tag: &str) -> Lab {
        Lab::setup(tag, false)
    }

    /// zebra with the netns VRF backend (`-n`). It turns every file in /run/netns into a VRF, so
    /// the daemons run in a private mount namespace whose /run/netns is this lab's own directory,
    /// a shared mount so VRFs bound later show up inside (the recipe of the reference lab).
    fn start_netns(tag: &str) -> Lab {
        Lab::setup(tag, true)
    }

    fn setup(tag: &str, netns_vrfs: bool) -> Lab {
        let name = format!("evpnt-{tag}-{}", std::process::id());
        // The guard exists before the first resource, so a failing setup is cleaned up too.
        let mut lab = Lab { name, vrf_dir: None };
        let n = lab.name.clone();
        let n = n.as_str();
        sh("ip", &["netns", "add", n]).expect("netns");
        sh("ip", &["-n", n, "link", "set", "lo", "up"]).expect("lo up");
        sh("ip", &["-n", n, "addr", "add", "198.18.0.1/32", "dev", "lo"]).expect("VTEP address");
        let conf_dir = format!("/etc/frr/{n}");
        std::fs::create_dir_all(&conf_dir).expect("config dir");
        let header = format!("frr defaults datacenter\nhostname {n}\nservice integrated-vtysh-config\n");
        std::fs::write(format!("{conf_dir}/frr.conf"), &header).expect("frr.conf");
        std::fs::write(format!("{conf_dir}/vtysh.conf"), format!("service integrated-vtysh-config\nhostname {n}\n"))
            .expect("vtysh.conf");
        sh("chown", &["-R", "frr:frr", &conf_dir]).expect("chown config");
        sh("install", &["-d", "-o", "frr", "-g", "frr", &lab.run_dir()]).expect("run dir");
        if netns_vrfs {
            let dir = format!("{}/netns", lab.run_dir());
            sh("install", &["-d", "-o", "frr", "-g", "frr", &dir]).expect("VRF dir");
            lab.vrf_dir = Some(dir.clone());
            sh("mount", &["--bind", &dir, &dir]).expect("bind VRF dir");
            sh("mount", &["--make-shared", &dir]).expect("share VRF dir");
        }
        lab.start_daemons();
        lab
    }

    /// Binds a fresh netns as VRF `vrf` of this FRR and waits until zebra has bound it.
    async fn add_vrf(&self, frr: &Frr, vrf: &str) {
        let dir = self.vrf_dir.as_deref().expect("a netns VRF lab");
        let netns = format!("{}-{vrf}", self.name);
        sh("ip", &["netns", "add", &netns]).expect("VRF netns");
        let target = format!("{dir}/{vrf}");
        std::fs::write(&target, "").expect("VRF mount point");
        sh("mount", &["--bind", &format!("/run/netns/{netns}"), &target]).expect("bind VRF netns");
        let start = Instant::now();
        while !frr.vrf_active(vrf).await.expect("show vrf") {
            assert!(start.elapsed() < Duration::from_secs(20), "zebra did not bind netns VRF {vrf}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn run_dir(&self) -> String {
        format!("/var/run/frr/{}", self.name)
    }

    /// The L3VNI's VXLAN device and bridge in the VRF's netns. The VXLAN device is created in
    /// the node's netns and then moved, so its UDP socket stays in the underlay.
    fn add_l3vni_devices(&self, vrf: &str, vni: u32) {
        let (node, vrf_netns) = (self.name.as_str(), format!("{}-{vrf}", self.name));
        let (vxlan, bridge, vni) = (vxlan_name(vni), bridge_name(vni), vni.to_string());
        let ip = |args: &[&str]| sh("ip", args).expect("L3VNI devices");
        ip(&[
            "-n",
            node,
            "link",
            "add",
            &vxlan,
            "type",
            "vxlan",
            "id",
            &vni,
            "local",
            "198.18.0.1",
            "dstport",
            "4789",
            "nolearning",
        ]);
        ip(&["-n", node, "link", "set", &vxlan, "netns", &vrf_netns]);
        ip(&["-n", &vrf_netns, "link", "add", &bridge, "type", "bridge", "stp_state", "0"]);
        ip(&["-n", &vrf_netns, "link", "set", &vxlan, "master", &bridge]);
        for device in ["lo", vxlan.as_str(), bridge.as_str()] {
            ip(&["-n", &vrf_netns, "link", "set", device, "up"]);
        }
    }

    fn pid(&self, daemon: &str) -> Option<String> {
        std::fs::read_to_string(format!("{}/{daemon}.pid", self.run_dir())).ok().map(|p| p.trim().to_owned())
    }

    fn start_daemons(&self) {
        let n = self.name.as_str();
        let commands: Vec<String> = DAEMONS
            .iter()
            .map(|daemon| {
                let vrf_backend = if *daemon == "zebra" && self.vrf_dir.is_some() { " -n" } else { "" };
                format!("/usr/lib/frr/{daemon} -d -N {n}{vrf_backend} -P 0 -i {}/{daemon}.pid", self.run_dir())
            })
            .collect();
        match &self.vrf_dir {
            Some(dir) => {
                let script = format!("mount --rbind {dir} /run/netns\n{}", commands.join("\n"));
                let args = ["netns", "exec", n, "unshare", "-m", "--propagation", "slave", "sh", "-ec", &script];
                sh("ip", &args).expect("daemons in a private mount namespace");
            }
            None => {
                for command in &commands {
                    let mut args = vec!["netns", "exec", n];
                    args.extend(command.split(' '));
                    sh("ip", &args).expect("daemon");
                }
            }
        }
        wait_for("vtysh to reach the daemons", Duration::from_secs(20), || {
            ["show zebra", "show bgp summary", "show bfd peers"]
                .iter()
                .all(|c| sh("vtysh", &["-N", n, "-c", c]).is_ok())
        });
    }

    fn stop_daemons(&self) {
        let pids: Vec<String> = DAEMONS.iter().filter_map(|d| self.pid(d)).collect();
        for pid in &pids {
            let _ = sh("kill", &[pid]);
        }
        let start = Instant::now();
        while pids.iter().any(|p| Path::new(&format!("/proc/{p}")).exists())
            && start.elapsed() < Duration::from_secs(10)
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        for pid in &pids {
            let _ = sh("kill", &["-9", pid]);
        }
    }

    fn restart_daemons(&self) {
        let before = (self.pid("zebra"), self.pid("bgpd"));
        self.stop_daemons();
        self.start_daemons();
        assert_ne!(before, (self.pid("zebra"), self.pid("bgpd")), "FRR came back with the same pids");
    }

    fn running_config(&self) -> String {
        sh("vtysh", &["-N", &self.name, "-c", "show running-config"]).expect("show running-config")
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.stop_daemons();
        if let Some(dir) = &self.vrf_dir {
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let vrf = entry.file_name().to_string_lossy().into_owned();
                let _ = sh("umount", &["-l", &entry.path().to_string_lossy()]);
                let _ = sh("ip", &["netns", "del", &format!("{}-{vrf}", self.name)]);
            }
            let _ = sh("umount", &["-l", dir]);
        }
        let _ = sh("ip", &["netns", "del", &self.name]);
        let _ = std::fs::remove_dir_all(format!("/etc/frr/{}", self.name));
        let _ = std::fs::remove_dir_all(self.run_dir());
    }
}

fn l2_network(evpn: &str, vni: u32, import: &str) -> NetworkPlan {
    let segment = SegmentPlan {
        vni,
        bridge: bridge_name(vni),
        vxlan: vxlan_name(vni),
        route_targets: RouteTargets { import: vec![import.into()], export: vec![format!("65000:{vni}")] },
        rd_index: vni,
    };
    NetworkPlan {
        evpn: evpn.into(),
        generation: 1,
        vrf: evpn.into(),
        mac_vrf: Some(segment),
        ip_vrf: None,
        svi: None,
        ethernet_segments: Vec::new(),
    }
}

fn l3_network(evpn: &str, ip_vni: u32, mac_vni: Option<u32>) -> NetworkPlan {
    let segment = |vni: u32| SegmentPlan {
        vni,
        bridge: bridge_name(vni),
        vxlan: vxlan_name(vni),
        route_targets: RouteTargets { import: vec![format!("65000:{vni}")], export: vec![format!("65000:{vni}")] },
        rd_index: vni,
    };
    let svi = mac_vni.map(|_| SviPlan { addresses: vec!["10.100.0.1/16".into()], mac: anycast_gateway_mac(ip_vni) });
    NetworkPlan {
        evpn: evpn.into(),
        generation: 1,
        vrf: evpn.into(),
        mac_vrf: mac_vni.map(segment),
        ip_vrf: Some(segment(ip_vni)),
        svi,
        ethernet_segments: Vec::new(),
    }
}

fn underlay() -> Bgp {
    let neighbor = BgpNeighbor {
        address: Some("198.18.1.1".into()),
        interface: None,
        asn: Some(65000),
        dynamic_asn: None,
        password_secret: None,
        bfd_profile: None,
    };
    Bgp { asn: 65001, neighbors: vec![neighbor], bfd_profiles: Vec::new() }
}

fn node(networks: Vec<NetworkPlan>) -> NodePlan {
    node_with(networks, underlay())
}

fn node_with(networks: Vec<NetworkPlan>, bgp: Bgp) -> NodePlan {
    NodePlan {
        vtep: Some(VtepPlan {
            name: "fabric".into(),
            mode: VtepMode::Managed,
            ip: Some(VTEP),
            cidrs: vec!["198.18.0.0/24".into()],
            udp_port: 4789,
            mtu: None,
            bgp: Some(bgp),
        }),
        networks,
        rejected: Vec::new(),
    }
}

fn options(lab: &Lab) -> RenderOptions {
    RenderOptions {
        hostname: lab.name.clone(),
        vrf_backend: VrfBackend::KernelVrf,
        vrf_netns_dir: "/run/netns".into(),
        passwords: Default::default(),
        uplinks: Default::default(),
    }
}

fn config(lab: &Lab, networks: Vec<NetworkPlan>) -> Config {
    render(&node(networks), VTEP, &options(lab))
}

/// The lines of `vni <vni>`'s block in a running configuration.
fn vni_block(running: &str, vni: u32) -> String {
    let start = format!("  vni {vni}\n");
    running
        .split_once(&start)
        .and_then(|(_, rest)| rest.split_once("  exit-vni"))
        .map(|(b, _)| b.to_owned())
        .unwrap_or_default()
}

#[tokio::test(flavor = "current_thread")]
async fn syncs_incrementally_isolates_failures_and_reloads_after_restart() {
    if let Some(reason) = skip_reason() {
        eprintln!("skipping: {reason}");
        return;
    }
    let lab = Lab::start("sync");
    let mut frr = Frr::new(Some(lab.name.clone()));

    // First sync: no baseline, a full sync against the running configuration.
    let two = || vec![l2_network("blue", 100, "65000:100"), l2_network("green", 200, "65000:200")];
    let report = frr.sync(&config(&lab, two())).await;
    assert_eq!(report.method, SyncMethod::Full);
    assert!(report.is_ok(), "{report:?}");
    let running = lab.running_config();
    for line in [
        "router bgp 65001\n",
        " neighbor 198.18.1.1 remote-as 65000\n",
        "  neighbor 198.18.1.1 allowas-in origin\n",
        "  advertise-all-vni\n",
    ] {
        assert!(running.contains(line), "{line:?} missing from\n{running}");
    }
    assert_eq!(
        vni_block(&running, 100),
        "   rd 198.18.0.1:100\n   route-target import 65000:100\n   route-target export 65000:100\n"
    );
    assert_eq!(frr.sync(&config(&lab, two())).await.method, SyncMethod::NoChange);

    // One VNI's route target: an incremental change of that VNI only.
    let changed = || vec![l2_network("blue", 100, "65000:100"), l2_network("green", 200, "65000:201")];
    let report = frr.sync(&config(&lab, changed())).await;
    assert_eq!(report.method, SyncMethod::Incremental);
    assert!(report.is_ok(), "{report:?}");
    let running = lab.running_config();
    assert_eq!(
        vni_block(&running, 200),
        "   rd 198.18.0.1:200\n   route-target import 65000:201\n   route-target export 65000:200\n"
    );
    assert!(vni_block(&running, 100).contains("import 65000:100"));

    // A route target FRR rejects fails its network alone; another network's change still lands.
    let with_bad = || {
        vec![
            l2_network("blue", 100, "65000:101"),
            l2_network("green", 200, "65000:201"),
            l2_network("bad", 300, "70000:70000"),
        ]
    };
    let report = frr.sync(&config(&lab, with_bad())).await;
    assert_eq!(report.method, SyncMethod::Incremental);
    assert!(matches!(report.result(Some("bad")), Some(Err(FrrError::CommandFailed { .. }))), "{report:?}");
    assert!(matches!(report.result(Some("blue")), Some(Ok(()))), "{report:?}");
    assert!(matches!(report.result(None), Some(Ok(()))), "{report:?}");
    assert!(vni_block(&lab.running_config(), 100).contains("route-target import 65000:101"));
    assert!(
        !frr.baseline().is_some_and(|b| b.owners().contains(&Some("bad".into()))),
        "the baseline claims a failed network"
    );
    // Still failing on retry; removing the network then cleans what the failed group left.
    let report = frr.sync(&config(&lab, with_bad())).await;
    assert!(report.result(Some("bad")).is_some_and(|r| r.is_err()), "{report:?}");
    let without_bad = || vec![l2_network("blue", 100, "65000:101"), l2_network("green", 200, "65000:201")];
    let report = frr.sync(&config(&lab, without_bad())).await;
    assert!(report.is_ok(), "{report:?}");
    assert!(!lab.running_config().contains("  vni 300\n"), "the failed network's partial VNI block stayed");

    // FRR restarted: the baseline is stale, the next sync reloads fully.
    lab.restart_daemons();
    let report = frr.sync(&config(&lab, without_bad())).await;
    assert_eq!(report.method, SyncMethod::Full);
    assert!(report.is_ok(), "{report:?}");
    let running = lab.running_config();
    assert!(vni_block(&running, 200).contains("route-target import 65000:201"), "{running}");
    assert_eq!(frr.sync(&config(&lab, without_bad())).await.method, SyncMethod::NoChange);

    // State readers on live output.
    let sessions = frr.bgp_sessions().await.expect("bgp sessions");
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    assert_eq!(sessions[0].neighbor, "198.18.1.1");
    assert_ne!(sessions[0].state, "Established");
    assert!(frr.vnis().await.expect("vnis").is_empty(), "no VXLAN devices, so zebra knows no VNI");
    assert!(!frr.vrf_active("red").await.expect("show vrf"));
}

fn multihomed(evpn: &str, vni: u32, segments: Vec<EthernetSegmentPlan>) -> NetworkPlan {
    let mut n = l2_network(evpn, vni, &format!("65000:{vni}"));
    n.ethernet_segments = segments;
    n
}

fn type_0(interface: &str, esi: &str) -> EthernetSegmentPlan {
    EthernetSegmentPlan {
        name: interface.into(),
        interface: interface.into(),
        esi: esi.into(),
        esi_config: EsiConfig::Type0,
        df_preference: None,
    }
}

/// The `evpn mh` lines as FRR 8.4.4's zebra takes them, read back from `show evpn es`. zebra
/// 8.4.4 makes only bonds (and interfaces it has not seen yet) Ethernet segments, and this
/// kernel has no bonds: the segments here are on interfaces that do not exist yet, and a veth
/// shows how FRR refuses any other kind.
#[tokio::test(flavor = "current_thread")]
async fn applies_and_removes_ethernet_segments() {
    if let Some(reason) = skip_reason() {
        eprintln!("skipping: {reason}");
        return;
    }
    let lab = Lab::start("mh");
    sh("ip", &["-n", &lab.name, "link", "add", "uplink0", "type", "veth", "peer", "name", "veth-es"]).expect("veths");
    let mut frr = Frr::new(Some(lab.name.clone()));
    let mut opts = options(&lab);
    opts.uplinks.insert("uplink0".into());
    let type_3 = EthernetSegmentPlan {
        name: "s3".into(),
        interface: "bond3".into(),
        esi: "03:02:aa:00:00:00:01:00:00:07".into(),
        esi_config: EsiConfig::Type3 { system_mac: [2, 0xaa, 0, 0, 0, 1], discriminator: 7 },
        df_preference: Some(100),
    };
    let both = || vec![type_0("bond1", "00:11:22:33:44:55:66:77:88:99"), type_3.clone()];
    let report = frr.sync(&render(&node(vec![multihomed("blue", 100, both())]), VTEP, &opts)).await;
    assert_eq!(report.method, SyncMethod::Full);
    assert!(report.is_ok(), "{report:?}");
    let running = lab.running_config();
    for expected in [
        "interface bond1\n evpn mh es-id 00:11:22:33:44:55:66:77:88:99\nexit",
        "interface bond3\n evpn mh es-df-pref 100\n evpn mh es-id 7\n evpn mh es-sys-mac 02:aa:00:00:00:01\nexit",
        "interface uplink0\n evpn mh uplink\nexit",
    ] {
        assert!(running.contains(expected), "{expected:?} missing from\n{running}");
    }
    let segments = frr.ethernet_segments().await.expect("show evpn es");
    let local: Vec<(&str, Option<&str>)> =
        segments.iter().filter(|s| s.local).map(|s| (s.esi.as_str(), s.interface.as_deref())).collect();
    assert_eq!(
        local,
        [("00:11:22:33:44:55:66:77:88:99", Some("bond1")), ("03:02:aa:00:00:00:01:00:00:07", Some("bond3"))]
    );
    // Neither interface exists, nor a VXLAN device that would give zebra its VTEP address: the
    // segments are down and zebra has not elected a designated forwarder.
    let states = segment_states(&[multihomed("blue", 100, both())], &segments);
    let reported: Vec<_> = states.iter().map(|s| (s.name.as_str(), s.role, s.state.as_deref())).collect();
    assert_eq!(reported, [("bond1", None, Some("Down")), ("s3", None, Some("Down"))]);

    // One segment goes: its interface is emptied incrementally, the other one stays.
    let report = frr.sync(&render(&node(vec![multihomed("blue", 100, vec![type_3.clone()])]), VTEP, &opts)).await;
    assert_eq!(report.method, SyncMethod::Incremental);
    assert!(report.is_ok(), "{report:?}");
    let esis: Vec<String> = frr.ethernet_segments().await.expect("show evpn es").into_iter().map(|s| s.esi).collect();
    assert_eq!(esis, ["03:02:aa:00:00:00:01:00:00:07"]);

    // A veth is no Ethernet segment for zebra 8.4.4: that network fails, the other is kept.
    let with_veth = || {
        vec![
            multihomed("blue", 100, vec![type_3.clone()]),
            multihomed("green", 200, vec![type_0("veth-es", "00:11:22:33:44:55:66:77:88:aa")]),
        ]
    };
    let report = frr.sync(&render(&node(with_veth()), VTEP, &opts)).await;
    match report.result(Some("green")) {
        Some(Err(FrrError::CommandFailed { output, .. })) => {
            assert!(output.contains("ESI cannot be associated with this interface type"), "{output}")
        }
        other => panic!("green should fail: {other:?}"),
    }
    assert!(matches!(report.result(Some("blue")), Some(Ok(()))), "{report:?}");

    // The last segment goes: the uplink line goes with it.
    let report = frr.sync(&render(&node(vec![l2_network("blue", 100, "65000:100")]), VTEP, &opts)).await;
    assert!(report.is_ok(), "{report:?}");
    let running = lab.running_config();
    assert!(!running.contains("evpn mh"), "{running}");
    assert!(frr.ethernet_segments().await.expect("show evpn es").is_empty());
}

/// Layer3, IRB, BFD and passwords as FRR takes them (kernel VRF backend: the VRFs stay inactive
/// without devices, which is enough for the configuration; the netns backend needs zebra -n in a
/// private mount namespace, which the lab script covers).
#[tokio::test(flavor = "current_thread")]
async fn applies_and_removes_layer3_irb_bfd_and_passwords() {
    if let Some(reason) = skip_reason() {
        eprintln!("skipping: {reason}");
        return;
    }
    let lab = Lab::start("l3");
    let mut frr = Frr::new(Some(lab.name.clone()));
    let mut bgp = underlay();
    bgp.neighbors[0].bfd_profile = Some("fast".into());
    bgp.bfd_profiles.push(BfdProfile {
        name: "fast".into(),
        receive_interval: 100,
        transmit_interval: 300,
        detect_multiplier: 5,
    });
    let mut opts = options(&lab);
    opts.passwords.insert("198.18.1.1".into(), "s3cret".into());
    let both = || vec![l3_network("red", 4000, None), l3_network("green", 5000, Some(200))];
    let report = frr.sync(&render(&node_with(both(), bgp.clone()), VTEP, &opts)).await;
    assert_eq!(report.method, SyncMethod::Full);
    assert!(report.is_ok(), "{report:?}");
    let running = lab.running_config();
    for expected in [
        "vrf red\n vni 4000\nexit-vrf",
        "vrf green\n vni 5000\nexit-vrf",
        " neighbor 198.18.1.1 bfd profile fast\n",
        " neighbor 198.18.1.1 password s3cret\n",
        "bfd\n profile fast\n  detect-multiplier 5\n  receive-interval 100\n",
        "router bgp 65001 vrf red\n bgp router-id 198.18.0.1\n",
        "  advertise ipv4 unicast\n  advertise ipv6 unicast\n  rd 198.18.0.1:4000\n  route-target import 65000:4000\n",
        "  vni 200\n   rd 198.18.0.1:200\n",
    ] {
        assert!(running.contains(expected), "{expected:?} missing from\n{running}");
    }

    let sessions = frr.bgp_sessions().await.expect("bgp sessions");
    assert!(sessions.iter().all(|s| s.bfd.is_some()), "BFD runs on the session: {sessions:?}");

    // Removing the Layer3 network: its VRF's VNI, then its BGP instance, then the VRF.
    let report = frr.sync(&render(&node_with(vec![l3_network("green", 5000, Some(200))], bgp), VTEP, &opts)).await;
    assert_eq!(report.method, SyncMethod::Incremental);
    assert!(report.is_ok(), "{report:?}");
    let running = lab.running_config();
    assert!(!running.contains("vrf red") && !running.contains("4000"), "{running}");
    assert!(running.contains("router bgp 65001 vrf green\n"), "{running}");
    assert!(!frr.vrf_active("green").await.expect("show vrf"), "no VRF device, so zebra has not bound it");

    // A new ASN replaces every BGP instance: a full sync, removals first.
    let mut bgp = underlay();
    bgp.asn = 65002;
    let report = frr.sync(&render(&node_with(vec![l3_network("green", 5000, Some(200))], bgp), VTEP, &opts)).await;
    assert_eq!(report.method, SyncMethod::Full);
    assert!(report.is_ok(), "{report:?}");
    let running = lab.running_config();
    assert!(running.contains("router bgp 65002\n") && running.contains("router bgp 65002 vrf green\n"), "{running}");
    assert!(!running.contains("65001"), "{running}");
}

async fn wait_for_l3vni_up(frr: &Frr, vni: u32) {
    let start = Instant::now();
    loop {
        let vnis = frr.vnis().await.expect("vnis");
        if vnis.iter().any(|v| v.vni == vni && v.type_ == "L3" && v.up) {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "L3VNI {vni} not up: {vnis:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A netns-VRF lab with VRF red bound and its L3VNI 4000's devices in place, not configured yet.
async fn netns_lab_with_red(tag: &str) -> (Lab, Frr, RenderOptions) {
    let lab = Lab::start_netns(tag);
    let frr = Frr::new(Some(lab.name.clone()));
    lab.add_vrf(&frr, "red").await;
    lab.add_l3vni_devices("red", 4000);
    let mut opts = options(&lab);
    opts.vrf_backend = VrfBackend::NetnsVrf;
    (lab, frr, opts)
}

/// The netns VRF traps of FRR 8.4.4, with a live L3VNI (its VXLAN device and bridge in the VRF):
/// the VRF is configured only once zebra bound its netns; removing the network unbinds the VNI
/// before deleting the VRF's BGP instance, and keeps the `vrf` stanza with its `netns` line so the
/// network can come back (a VRF unbound from its netns cannot be bound again: "Invalid NSID").
#[tokio::test(flavor = "current_thread")]
async fn netns_vrf_survives_removal_and_comes_back() {
    if let Some(reason) = skip_reason() {
        eprintln!("skipping: {reason}");
        return;
    }
    let (lab, mut frr, opts) = netns_lab_with_red("ns").await;
    let with_red = || render(&node(vec![l3_network("red", 4000, None)]), VTEP, &opts);
    let without_red = || render(&node(Vec::new()), VTEP, &opts);
    let assert_removed = |frr_vrf_active: bool| {
        let running = lab.running_config();
        assert!(running.contains("vrf red\n netns /run/netns/red\nexit-vrf"), "{running}");
        assert!(!running.contains("4000") && !running.contains("vrf red\n bgp"), "{running}");
        assert!(frr_vrf_active, "the VRF lost its netns");
    };

    let report = frr.sync(&with_red()).await;
    assert!(report.is_ok(), "{report:?}");
    let running = lab.running_config();
    assert!(running.contains("vrf red\n vni 4000\n netns /run/netns/red\nexit-vrf"), "{running}");
    assert!(running.contains("router bgp 65001 vrf red\n"), "{running}");
    wait_for_l3vni_up(&frr, 4000).await;

    let report = frr.sync(&without_red()).await;
    assert_eq!(report.method, SyncMethod::Incremental);
    assert!(report.is_ok(), "{report:?}");
    assert_removed(frr.vrf_active("red").await.expect("show vrf"));

    let report = frr.sync(&with_red()).await;
    assert_eq!(report.method, SyncMethod::Incremental);
    assert!(report.is_ok(), "{report:?}");
    wait_for_l3vni_up(&frr, 4000).await;

    // The same removal by a full sync (e.g. after an agent restart): the binding stays too.
    frr.forget_baseline();
    let report = frr.sync(&without_red()).await;
    assert_eq!(report.method, SyncMethod::Full);
    assert!(report.is_ok(), "{report:?}");
    assert_removed(frr.vrf_active("red").await.expect("show vrf"));

    let report = frr.sync(&with_red()).await;
    assert_eq!(report.method, SyncMethod::Incremental);
    assert!(report.is_ok(), "{report:?}");
    wait_for_l3vni_up(&frr, 4000).await;
}

/// The repair of a VRF whose routes lost their router MAC: the L3VNI is detached and attached
/// again, and the configuration is as before. With no remote routes nothing is stranded.
#[tokio::test(flavor = "current_thread")]
async fn reattaches_an_l3vni() {
    if let Some(reason) = skip_reason() {
        eprintln!("skipping: {reason}");
        return;
    }
    let (lab, mut frr, opts) = netns_lab_with_red("re").await;
    let report = frr.sync(&render(&node(vec![l3_network("red", 4000, None)]), VTEP, &opts)).await;
    assert!(report.is_ok(), "{report:?}");
    wait_for_l3vni_up(&frr, 4000).await;
    let l3vnis = [("red".to_owned(), 4000)].into();
    let stranded = frr.stranded_vteps(&l3vnis).await.expect("routes and next hops");
    assert!(stranded.is_empty(), "no remote routes, nothing stranded: {stranded:?}");

    frr.reattach_l3vni("red", "red", 4000).await.expect("re-attaching");
    wait_for_l3vni_up(&frr, 4000).await;
    let running = lab.running_config();
    assert!(running.contains("vrf red\n vni 4000\n"), "{running}");
    let report = frr.sync(&render(&node(vec![l3_network("red", 4000, None)]), VTEP, &opts)).await;
    assert_eq!(report.method, SyncMethod::NoChange, "the baseline still holds: {report:?}");
}

async fn sync(frr: &mut Frr, networks: Vec<NetworkPlan>, opts: &RenderOptions) -> evpn_agent::frr::SyncReport {
    frr.sync(&render(&node(networks), VTEP, opts)).await
}

/// FRR shared with the admin: the admin's configuration stays byte for byte through the
/// agent's first sync, networks added and removed, a password change, FRR restarting from the
/// admin's saved file, an agent restart, and the agent taking all of its own out (the node left
/// the VTEP). Meanwhile no process's argv ever holds a password.
#[tokio::test(flavor = "current_thread")]
async fn shares_frr_with_the_admin_and_passes_no_password_in_argv() {
    if let Some(reason) = skip_reason() {
        eprintln!("skipping: {reason}");
        return;
    }
    let lab = Lab::start("share");
    configure(&lab.name, ADMIN_COMMANDS);
    sh("vtysh", &["-N", &lab.name, "-c", "write memory"]).expect("the admin saves");
    let foreign_intact = |when: &str| {
        let running = lab.running_config();
        for block in FOREIGN {
            assert!(running.contains(block), "{when}: the admin's {block:?} is gone from\n{running}");
        }
    };
    foreign_intact("before the agent");

    // A neighbor with a password; a watcher reads every process's argv while the agent works.
    let secrets = ["s3cret-first", "s3cret-second"];
    let watcher = ArgvWatch::start(&secrets);
    let mut frr = Frr::new(Some(lab.name.clone()));
    let mut opts = options(&lab);
    opts.passwords.insert("198.18.1.1".into(), secrets[0].into());
    let blue = || vec![l2_network("blue", 100, "65000:100")];
    let report = sync(&mut frr, Vec::new(), &opts).await;
    assert_eq!(report.method, SyncMethod::Full);
    assert!(report.is_ok(), "{report:?}");
    foreign_intact("after the agent's first sync");
    assert!(lab.running_config().contains(&format!(" neighbor 198.18.1.1 password {}\n", secrets[0])));

    let report = sync(&mut frr, blue(), &opts).await;
    assert_eq!((report.method, report.is_ok()), (SyncMethod::Incremental, true), "{report:?}");
    opts.passwords.insert("198.18.1.1".into(), secrets[1].into());
    let report = sync(&mut frr, blue(), &opts).await;
    assert_eq!((report.method, report.is_ok()), (SyncMethod::Incremental, true), "{report:?}");
    assert!(lab.running_config().contains(&format!(" neighbor 198.18.1.1 password {}\n", secrets[1])));
    foreign_intact("after a network was added and the password changed");
    // A line break in a value from outside would smuggle in a command of its own: not sent.
    let mut smuggling = opts.clone();
    smuggling.passwords.insert("198.18.1.1".into(), "x\nno router bgp 65001 vrf admin".into());
    let report = sync(&mut frr, blue(), &smuggling).await;
    let refused = report.result(None).and_then(|r| r.as_ref().err()).map(ToString::to_string).unwrap_or_default();
    assert!(refused.contains("control character; not sent"), "{report:?}");
    foreign_intact("after a password with a line break");
    let report = sync(&mut frr, blue(), &opts).await;
    assert_eq!((report.method, report.is_ok()), (SyncMethod::Full, true), "{report:?}");
    let report = sync(&mut frr, Vec::new(), &opts).await;
    assert!(report.is_ok(), "{report:?}");
    assert!(!lab.running_config().contains("vni 100"), "{}", lab.running_config());
    foreign_intact("after the network was removed");

    // FRR restarts from the admin's saved file, which lacks the agent's lines.
    lab.restart_daemons();
    sh("vtysh", &["-N", &lab.name, "-b"]).expect("FRR loads its saved file");
    let report = sync(&mut frr, blue(), &opts).await;
    assert_eq!((report.method, report.is_ok()), (SyncMethod::Full, true), "{report:?}");
    foreign_intact("after FRR restarted");
    assert!(lab.running_config().contains("  vni 100\n"), "{}", lab.running_config());

    // The agent restarts; meanwhile the network went away. Its lines are still the agent's.
    let mut frr = Frr::new(Some(lab.name.clone()));
    let report = sync(&mut frr, Vec::new(), &opts).await;
    assert_eq!((report.method, report.is_ok()), (SyncMethod::Full, true), "{report:?}");
    assert!(!lab.running_config().contains("vni 100"), "{}", lab.running_config());
    foreign_intact("after the agent restarted");

    // The node leaves the VTEP: the agent takes out all of its own, the admin's stays.
    let report = frr.sync(&Config::default()).await;
    assert!(report.is_ok(), "{report:?}");
    let running = lab.running_config();
    for ours in ["198.18.1.1", "advertise-all-vni", "198.18.0.1"] {
        assert!(!running.contains(ours), "the agent's {ours} stayed:\n{running}");
    }
    foreign_intact("after the agent removed its configuration");
    let (seen, _) = watcher.finish();
    assert!(seen.is_empty(), "a password in a process's argv: {seen:?}");
}

/// Timing of one incremental one-VNI change against a full sync, with ~1000 L2VNIs.
/// `cargo test -p evpn-agent --test frr -- --ignored --nocapture`
#[tokio::test(flavor = "current_thread")]
#[ignore = "benchmark: takes about a minute"]
async fn one_vni_change_with_1000_vnis_incremental_vs_full_sync() {
    if let Some(reason) = skip_reason() {
        eprintln!("skipping: {reason}");
        return;
    }
    let lab = Lab::start("bench");
    let mut frr = Frr::new(Some(lab.name.clone()));
    let networks = |changed_rt: &str| -> Vec<NetworkPlan> {
        (1..=1000)
            .map(|i| l2_network(&format!("net{i}"), 10_000 + i, if i == 500 { changed_rt } else { "65000:1" }))
            .collect()
    };
    let report = frr.sync(&config(&lab, Vec::new())).await;
    assert!(report.is_ok(), "{report:?}");
    let start = Instant::now();
    let report = frr.sync(&config(&lab, networks("65000:1"))).await;
    println!("adding 1000 networks at once (one vtysh session, 1000 groups): {:?}", start.elapsed());
    assert_eq!(report.method, SyncMethod::Incremental);
    assert!(report.is_ok(), "{report:?}");
    frr.forget_baseline();
    let start = Instant::now();
    let report = frr.sync(&config(&lab, networks("65000:1"))).await;
    println!("full sync of the same 1000 VNIs, nothing to change: {:?}", start.elapsed());
    assert!(report.is_ok(), "{report:?}");

    let rounds = 5;
    let mut incremental = Vec::new();
    let mut full = Vec::new();
    for round in 0..rounds {
        let rt = format!("65000:{}", 2 + round);
        let start = Instant::now();
        let report = frr.sync(&config(&lab, networks(&rt))).await;
        incremental.push(start.elapsed());
        assert_eq!(report.method, SyncMethod::Incremental);
        assert!(report.is_ok(), "{report:?}");

        let rt = format!("65000:{}", 100 + round);
        frr.forget_baseline();
        let start = Instant::now();
        let report = frr.sync(&config(&lab, networks(&rt))).await;
        full.push(start.elapsed());
        assert_eq!(report.method, SyncMethod::Full);
        assert!(report.is_ok(), "{report:?}");
    }
    // The floor of any vtysh-based change: starting vtysh (it builds every daemon's command
    // tree), and the pure part of the driver's work.
    let mut bare = Vec::new();
    for _ in 0..rounds {
        let start = Instant::now();
        sh("vtysh", &["-N", &lab.name, "-c", "show version"]).expect("vtysh");
        bare.push(start.elapsed());
    }
    let (a, b) = (config(&lab, networks("65000:1")), config(&lab, networks("65000:2")));
    let start = Instant::now();
    let groups = diff(&a, &b);
    let diff_time = start.elapsed();
    assert_eq!(groups.len(), 1);
    for timings in [&mut incremental, &mut full, &mut bare] {
        timings.sort();
    }
    println!("one-VNI change with 1000 VNIs, {rounds} rounds (sync() incl. render input, min / median / max):");
    println!(
        "  incremental vtysh: {:?} / {:?} / {:?}",
        incremental[0],
        incremental[rounds / 2],
        incremental[rounds - 1]
    );
    println!("  full sync:         {:?} / {:?} / {:?}", full[0], full[rounds / 2], full[rounds - 1]);
    println!("  bare `vtysh -c 'show version'`: {:?} / {:?} / {:?}", bare[0], bare[rounds / 2], bare[rounds - 1]);
    println!("  diff() of the two 1000-VNI configs: {diff_time:?}");
}
