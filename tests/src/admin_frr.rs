//! The node's FRR as an admin uses it beside the agent: the admin's own configuration, sent the
//! way an admin's tool sends it, and a watch over every process's argv. Shared by the agent's
//! real-FRR test and the lab suite that check the agent leaves the admin's lines alone and
//! passes no password on a command line.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

/// What the admin's configuration looks like in `show running-config`: whole contexts (a prefix
/// list, a route map, a BFD peer, another BGP instance), and a neighbor with its policy inside
/// the very instance the agent runs the underlay in.
pub const FOREIGN: [&str; 6] = [
    "ip prefix-list ADMIN seq 5 permit 10.99.0.0/16\n",
    "route-map ADMIN-IN permit 10\n match ip address prefix-list ADMIN\nexit\n",
    "bfd\n peer 198.18.9.9\n exit\n",
    "router bgp 65001 vrf admin\n bgp router-id 10.99.0.1\n neighbor 10.99.0.2 remote-as 65099\nexit\n",
    " neighbor 198.18.255.99 remote-as 65099\n",
    "  neighbor 198.18.255.99 route-map ADMIN-IN in\n",
];

/// The admin's commands that make [`FOREIGN`].
pub const ADMIN_COMMANDS: &str = "ip prefix-list ADMIN seq 5 permit 10.99.0.0/16
route-map ADMIN-IN permit 10
match ip address prefix-list ADMIN
exit
bfd
peer 198.18.9.9
exit
exit
router bgp 65001 vrf admin
bgp router-id 10.99.0.1
neighbor 10.99.0.2 remote-as 65099
exit
router bgp 65001
neighbor 198.18.255.99 remote-as 65099
address-family ipv4 unicast
neighbor 198.18.255.99 route-map ADMIN-IN in
exit-address-family
exit
";

/// Sends configuration `lines` to the FRR of pathspace `ns` on vtysh's standard input, as an
/// admin's tool would (a password on the command line would be visible to every user), and
/// fails if FRR refuses a line.
pub fn configure(ns: &str, lines: &str) {
    use std::io::Write as _;
    let mut vtysh = std::process::Command::new("vtysh")
        .args(["-N", ns])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("vtysh");
    let mut stdin = vtysh.stdin.take().expect("vtysh's stdin");
    stdin.write_all(format!("configure terminal\n{lines}end\n").as_bytes()).expect("sending the commands");
    drop(stdin);
    let out = vtysh.wait_with_output().expect("vtysh ran");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("% "), "{ns} rejected the configuration:\n{text}");
}

/// Reads every process's argv in a loop until [`ArgvWatch::finish`]: the agents' vtysh runs
/// are short, so only a tight loop over all of /proc sees them.
pub struct ArgvWatch {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<(Vec<String>, usize)>,
}

impl ArgvWatch {
    /// Starts watching for any of `secrets`.
    pub fn start(secrets: &[&str]) -> ArgvWatch {
        let secrets: Vec<String> = secrets.iter().map(|s| (*s).to_owned()).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::spawn({
            let stop = stop.clone();
            move || {
                let (mut seen, mut rounds) = (Vec::new(), 0);
                while !stop.load(Ordering::Relaxed) {
                    rounds += 1;
                    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
                        let Ok(argv) = std::fs::read(entry.path().join("cmdline")) else { continue };
                        let argv = String::from_utf8_lossy(&argv).replace('\0', " ");
                        if secrets.iter().any(|s| argv.contains(s.as_str())) {
                            seen.push(argv);
                        }
                    }
                }
                (seen, rounds)
            }
        });
        ArgvWatch { stop, thread }
    }

    /// Stops watching: the argvs that held a secret, and how many times all of /proc was read.
    pub fn finish(self) -> (Vec<String>, usize) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("the argv watch")
    }
}
