#!/usr/bin/env bash
# EVPN lab: a small data-centre fabric built from network namespaces, for the end-to-end tests
# and the demo. Nodes run FRR and are configured by evpn-agent (or by `smoke`, which does by
# hand what the agent does); the top-of-rack runs FRR or GoBGP.
#
#                        evl-tor  (AS 65000, FRR or GoBGP)
#                 bridge "fabric" 198.18.255.1/24, MTU 9000
#                   |                |                 |
#                  n1               n2                n3         <- veth ends in evl-tor
#                   |                |                 |
#                 eth0             eth0              eth0        <- veth ends in the nodes
#            198.18.255.11     198.18.255.12     198.18.255.13
#             +--------+        +--------+        +--------+
#             | evl-n1 |        | evl-n2 |        | evl-n3 |     AS 65001 (all nodes), FRR with
#             +--------+        +--------+        +--------+     zebra -n (netns VRF backend)
#            VTEP 198.18.0.1   VTEP 198.18.0.2   VTEP 198.18.0.3 (/32 on lo, put there by the agent)
#               |      \
#     evl-n1-red      evl-pod1 ...   a VRF "red" of node 1 is netns evl-n1-red (`vrf`); "hosts"
#         |                          hang off a VRF (`host`), "pods" off a bridge (`pod`)
#     evl-host1
#
# VRFs come in two kinds, chosen by EVPN_LAB_VRF at `up` and kept until `down`:
#   netns   (default) a VRF is a network namespace bound into the node's FRR (zebra -n), for
#           kernels without the VRF device, like this machine's;
#   kernel  a VRF is a VRF device in the node's namespace, as OVN-Kubernetes makes it in
#           production (zebra's default VRF backend); needs a kernel with VRF devices, such as
#           Debian's in the VM lab (hack/vmlab.sh). Hosts and pods of a VRF then hang off
#           devices enslaved to it, and the VTEP address goes on a dummy device.
#
# Every address is in 198.18.0.0/15 (RFC 2544 benchmarking range) and only ever exists inside
# our own namespaces; every namespace is called evl-*, so `down` can find all of it.
#
# Usage (run as root):
#   lab.sh install                     the Debian packages the lab needs (FRR, GoBGP, tcpdump, ...)
#   lab.sh up [frr|gobgp] [NODES]      fabric + daemons; TOR kind defaults to frr, NODES to 2 (1-3)
#   lab.sh vrf NODE VRF                netns NODE-VRF becomes VRF VRF of NODE's FRR
#   lab.sh unvrf NODE VRF              takes it away again and deletes the netns
#   lab.sh host NODE VRF NAME ADDR/LEN GW
#                                      netns NAME routed behind VRF VRF of NODE (GW on the VRF side)
#   lab.sh pod NODE NAME BRIDGE ADDR/LEN [GW] [--in-vrf VRF] [--mac MAC] [--mtu MTU]
#                                      netns NAME on bridge BRIDGE of NODE (or of NODE-VRF);
#                                      MAC may also come from $POD_MAC
#   lab.sh move NAME FROM TO BRIDGE [--in-vrf VRF] [--quiet]
#                                      live-migrates pod NAME: its link moves from FROM's bridge to
#                                      bridge BRIDGE of TO (NODE or leaf), keeping MAC and addresses,
#                                      then it announces itself with a gratuitous ARP, as a
#                                      hypervisor does after a migration (not with --quiet)
#   lab.sh mh-host NAME IFNAME SYSMAC ADDR/LEN NODE...
#                                      netns NAME multi-homed: an LACP bond with a leg to each NODE,
#                                      where it ends in a one-leg LACP bond IFNAME with system ID
#                                      SYSMAC (an Ethernet segment's interface; needs bond devices)
#   lab.sh uplink NODE down|up         cuts or restores NODE's link to the TOR (on the node's side)
#   lab.sh leaf                        a leaf switch outside the cluster (FRR TOR only): netns evl-leaf
#                                      on the fabric at 198.18.255.21, AS 65010, VTEP 198.18.0.21,
#                                      configured by hand as a network engineer would; `vrf`,
#                                      `host` and `pod` take `leaf` as NODE for its VRFs and hosts
#   lab.sh leaf-l2vni VNI RT [VRF GATEWAYS MAC]
#                                      a MAC-VRF on the leaf: bridge lbrVNI + VXLAN lvxVNI, route
#                                      target RT; with VRF, the bridge is the SVI in VRF with the
#                                      (comma-separated) gateway addresses and MAC (symmetric IRB)
#   lab.sh leaf-l3vni VRF VNI RT       the leaf's VRF VRF (made with `vrf leaf VRF`) gets L3VNI VNI
#                                      and announces its connected subnets as type-5 routes
#   lab.sh restart-frr NODE            kill NODE's FRR daemons (SIGKILL) and start them again from
#                                      the config they last saved, as after a crash
#   lab.sh vtysh NODE CMD...           vtysh in NODE's (or evl-tor's) FRR
#   lab.sh gobgp ARGS...               gobgp CLI against the GoBGP TOR
#   lab.sh status                      human-readable dump of everything
#   lab.sh env                         KEY="value" lines the tests and the agent need
#   lab.sh down                        stop and remove everything; safe when nothing is up
#   lab.sh smoke [frr|gobgp] [NODES]   up + by-hand agent work + assertions + down
# NODE is evl-nN or nN; NAME gets the evl- prefix when it lacks it. ADDR/LEN and GW of `host`
# and `pod` may be comma-separated lists, for dual-stack: 10.1.0.10/24,fd00:1::10/64.
#
# Environment: EVPN_LAB_DIR (run dir: FRR configs, logs, GoBGP config and pid; default
# /tmp/evpn-lab), EVPN_LAB_PREFIX (prefix of every namespace and FRR pathspace instead of evl,
# so a second lab, such as the demo's, runs beside the test suite's), EVPN_LAB_VRF (netns or
# kernel, read by `up`), EVPN_LAB_TIMEOUT (seconds for every wait; default 30),
# EVPN_LAB_SMOKE_KEEP (smoke leaves the lab up), EVPN_LAB_SMOKE_OUT (where smoke saves the nodes'
# running configs).
#
# The FRR TOR takes any speaker on 198.18.255.0/24 (listen range, remote-as external); the GoBGP
# TOR only the lab's nodes (see below). The nodes start with a minimal FRR config: the agent
# renders and hot-applies BGP and EVPN, and puts the VTEP IP on lo.
#
# Why things are the way they are (FRR 8.4.4, kernel without the VRF device):
# - Each node's FRR uses its own pathspace (-N evl-nN): sockets and pid files under
#   /var/run/frr/evl-nN, config under /etc/frr/evl-nN (a symlink into the run dir, because vtysh
#   and frr-reload.py only know that path and `write memory` writes there).
# - zebra -n treats every file in /run/netns as a VRF, including the other nodes and the pods.
#   So each node's daemons run in a private mount namespace whose /run/netns is the node's own
#   directory /var/run/frr/evl-nN/netns. That directory is a shared mount, and the daemons' copy
#   a slave of it, so a VRF bound into it later appears inside the daemons' namespace too.
# - zebra notices a new netns by inotify and binds it a moment later; `vrf X` configured before
#   that stays "inactive" for good, so `vrf` waits until `show vrf` shows an id.
# - frr.conf must keep the `netns` line of a netns VRF: a reload that removes it sends
#   `no netns`, which FRR cannot undo from config.
# - frr-reload.py -N always ends with `write memory`; removing an L3VNI can take two passes
#   ("Please unconfigure l3vni" on the first).
# - The L3VNI's VXLAN device is created in the node netns and then moved into the VRF netns:
#   its UDP socket stays in the underlay while the device sits in the VRF.
# - All nodes share AS 65001, so a sibling's routes come back through the TOR with 65001 in
#   the path: nodes need `allowas-in origin`. FRR as TOR sends such routes. GoBGP drops a route
#   whose path holds the receiving peer's AS, unless it replaces that AS with its own
#   (`replace-peer-as`, as-override); nodes behind it then see "65000 65000". GoBGP 3.10 does
#   not pass a peer group's as-path-options on to dynamic neighbours, so the GoBGP TOR has one
#   configured neighbour per node instead of a listen range.
# - eBGP rewrites the next hop to the sender. EVPN routes must keep the originating VTEP as next
#   hop: FRR keeps it for l2vpn evpn by itself, GoBGP needs `set-next-hop unchanged`. With the
#   next hop unchanged for IPv4 too, nodes reach each other's VTEP directly across the fabric LAN,
#   so the GoBGP TOR (which programs no kernel routes) needs no static routes.
# - zebra -n may crash on SIGTERM while it tears its VRFs down; that is harmless here.
set -euo pipefail

LAB_DIR=${EVPN_LAB_DIR:-/tmp/evpn-lab}
TIMEOUT=${EVPN_LAB_TIMEOUT:-30}
FRR_RUN=/var/run/frr
FRR_ETC=/etc/frr
FRR_LIB=/usr/lib/frr
PREFIX=${EVPN_LAB_PREFIX:-evl}
TOR=$PREFIX-tor
TOR_ADDR=198.18.255.1
FABRIC_PREFIX=198.18.255
TOR_ASN=65000
NODE_ASN=65001
LEAF=$PREFIX-leaf
LEAF_ADDR=$FABRIC_PREFIX.21
LEAF_VTEP=198.18.0.21
LEAF_ASN=65010
GOBGP_API=127.0.0.1:50051
PACKAGES=(frr frr-pythontools gobgpd iproute2 iputils-ping iputils-arping procps tcpdump python3)

say() { echo "[lab $(date +%T)] $*" >&2; }
die() { say "error: $*"; exit 1; }
nsx() { local ns=$1; shift; ip netns exec "$ns" "$@"; }
now_ms() { local t=${EPOCHREALTIME/./}; echo $((t / 1000)); }

# wait_until SECONDS CMD...: run CMD every 100 ms until it succeeds or the deadline passes.
wait_until() {
  local deadline=$(($(now_ms) + $1 * 1000)); shift
  until "$@" >/dev/null 2>&1; do
    [ "$(now_ms)" -lt "$deadline" ] || return 1
    sleep 0.1
  done
}

# "n1", "evl-n1" -> "evl-n1"; "pod1" -> "evl-pod1" (with the default prefix)
ns_name() { case $1 in "$PREFIX"-*) echo "$1" ;; *) echo "$PREFIX-$1" ;; esac; }
node_index() { local n; n=$(ns_name "$1"); [[ $n =~ ^$PREFIX-n([1-3])$ ]] || die "not a node: $1"; echo "${BASH_REMATCH[1]}"; }
# A switch of the fabric with its own FRR and VRFs: a node or the leaf.
need_switch() {
  if [ "$1" = "$LEAF" ]; then netns_exists "$LEAF" || die "the leaf is not up (lab.sh leaf)"
  else node_index "$1" >/dev/null; fi
}
nodes() { local i; for ((i = 1; i <= $(cat "$LAB_DIR/nodes"); i++)); do echo "$PREFIX-n$i"; done; }
# Names of this lab's namespaces, and nothing else's.
lab_netns() { ip netns list 2>/dev/null | awk -v p="$PREFIX-" 'index($1, p) == 1 {print $1}'; }
tor_kind() { cat "$LAB_DIR/tor" 2>/dev/null || true; }
vrf_kind() { cat "$LAB_DIR/vrf" 2>/dev/null || echo netns; }
# zebra's VRF backend: netns VRFs need -n.
zebra_opts() { [ "$(vrf_kind)" = kernel ] || printf %s -n; }
netns_exists() { [ -e "/run/netns/$1" ]; }
is_up() { [ -f "$LAB_DIR/tor" ] && [ -f "$LAB_DIR/nodes" ] && netns_exists "$TOR"; }
need_up() { is_up || die "the lab is not up (lab.sh up)"; }
vtysh_ns() { local ns=$1; shift; vtysh -N "$ns" -c "$*"; }
gob() { nsx "$TOR" gobgp -u "${GOBGP_API%:*}" -p "${GOBGP_API#*:}" "$@"; }

# ---------------------------------------------------------------- preconditions

# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

preconditions() { # VRF-KIND
  [ "$(id -u)" = 0 ] || die "must run as root (namespaces, mounts, daemons)"
  command -v dpkg >/dev/null && apt_install "${PACKAGES[@]}"
  local b
  for b in zebra bgpd frr-reload.py; do [ -x "$FRR_LIB/$b" ] || die "$FRR_LIB/$b missing (frr, frr-pythontools)"; done
  for b in vtysh gobgpd gobgp unshare tcpdump python3; do command -v "$b" >/dev/null || die "$b not found"; done
  getent passwd frr >/dev/null || die "user frr missing (frr package)"
  # One throw-away namespace proves netns, veth, bridge and vxlan work on this kernel.
  local p=$PREFIX-probe
  ip netns del "$p" 2>/dev/null || true
  ip netns add "$p" 2>/dev/null || die "'ip netns add' does not work here (need CAP_SYS_ADMIN and /run/netns)"
  local why=""
  ip -n "$p" link add name pa type veth peer name pb 2>/dev/null || why="veth"
  [ -n "$why" ] || ip -n "$p" link add name pbr type bridge 2>/dev/null || why="bridge"
  [ -n "$why" ] || ip -n "$p" link add name pvx type vxlan id 1 local 127.0.0.1 dstport 4789 nolearning 2>/dev/null || why="vxlan"
  [ -n "$why" ] || [ "$1" != kernel ] || ip -n "$p" link add name pvrf type vrf table 1 2>/dev/null || why="vrf"
  ip netns del "$p"
  [ -z "$why" ] || die "the kernel cannot create $why devices (module missing?)"
}

# ---------------------------------------------------------------- FRR

# Start zebra, bgpd and bfdd for pathspace NS inside netns NS, from the integrated config in
# $LAB_DIR/NS/frr.conf. ZEBRA_OPTS: extra zebra options (-n for the nodes).
frr_start() {
  local ns=$1 zopts=$2 dir=$LAB_DIR/$1 run=$FRR_RUN/$1
  install -d -o frr -g frr "$run" "$run/netns"
  chown -R frr:frr "$dir"
  ln -sfn "$dir" "$FRR_ETC/$ns"
  # The node's VRF directory: a shared mount, so later binds reach the daemons' slave copy.
  if ! mountpoint -q "$run/netns"; then
    mount --bind "$run/netns" "$run/netns"
    mount --make-shared "$run/netns"
  fi
  # Own mount namespace (private /run/netns) and UTS namespace (BGP hostname = node name).
  # shellcheck disable=SC2016 # expanded by the inner shell
  nsx "$ns" unshare --mount --uts --propagation slave sh -ec '
    hostname "$1"
    mount --rbind "$2/netns" /run/netns
    for d in zebra bgpd bfdd; do
      opts=""; [ "$d" = zebra ] && opts=$4
      # shellcheck disable=SC2086
      '"$FRR_LIB"'/$d -d -F datacenter -N "$1" -P 0 $opts -i "$2/$d.pid" \
        --log "file:$3/$1-$d.log" >>"$3/$1-start.log" 2>&1
    done' sh "$ns" "$run" "$LAB_DIR/log" "$zopts"
  wait_until "$TIMEOUT" test -S "$run/zebra.vty" -a -S "$run/bgpd.vty" -a -S "$run/bfdd.vty" ||
    die "FRR of $ns did not open its vty sockets (see $LAB_DIR/log/$ns-*.log)"
  vtysh -N "$ns" -b >>"$LAB_DIR/log/$ns-start.log" 2>&1 || die "vtysh -b failed for $ns"
  wait_until "$TIMEOUT" vtysh_ns "$ns" "show bgp summary" || die "bgpd of $ns does not answer vtysh"
}

# Daemons the lab started, from their pid files (checked against the process name, so a stale
# pid file never hits an unrelated process).
lab_pids() {
  local f pid d
  for f in "$FRR_RUN/$PREFIX"-*/zebra.pid "$FRR_RUN/$PREFIX"-*/bgpd.pid "$FRR_RUN/$PREFIX"-*/bfdd.pid \
    "$LAB_DIR/gobgpd.pid"; do
    pid=$(cat "$f" 2>/dev/null) || continue
    d=$(basename "$f" .pid)
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$d" ] && echo "$pid"
  done
  return 0
}
all_gone() { local p; for p in "$@"; do ! kill -0 "$p" 2>/dev/null || return 1; done; }

write_node_base_conf() {
  local ns=$1 dir=$LAB_DIR/$1
  mkdir -p "$dir"
  cat >"$dir/frr.conf" <<EOF
frr defaults datacenter
hostname $ns
log file $LAB_DIR/log/$ns.log informational
service integrated-vtysh-config
!
EOF
  # vtysh adds its own hostname to `show running-config`: without this it is the machine's.
  printf 'service integrated-vtysh-config\nhostname %s\n' "$ns" >"$dir/vtysh.conf"
}

write_tor_frr_conf() {
  write_node_base_conf "$TOR"
  cat >>"$LAB_DIR/$TOR/frr.conf" <<EOF
router bgp $TOR_ASN
 bgp router-id $TOR_ADDR
 neighbor nodes peer-group
 neighbor nodes remote-as external
 neighbor nodes bfd profile fabric
 bgp listen range $FABRIC_PREFIX.0/24 peer-group nodes
 !
 address-family ipv4 unicast
  neighbor nodes activate
 exit-address-family
 !
 address-family l2vpn evpn
  neighbor nodes activate
 exit-address-family
!
bfd
 profile fabric
  transmit-interval 300
  receive-interval 300
  detect-multiplier 3
 exit
exit
!
EOF
}

# ---------------------------------------------------------------- GoBGP TOR

write_gobgp_conf() { # NODES
  local i
  cat >"$LAB_DIR/gobgpd.toml" <<EOF
# GoBGP TOR: eBGP with every lab node (AS $NODE_ASN) for IPv4 and EVPN.
[global.config]
  as = $TOR_ASN
  router-id = "$TOR_ADDR"
  local-address-list = ["$TOR_ADDR"]
  [global.apply-policy.config]
    export-policy-list = ["next-hop-unchanged"]
    default-export-policy = "accept-route"
    default-import-policy = "accept-route"

# EVPN next hop must stay the originating VTEP; IPv4 too, so VTEPs are reached across the LAN.
[[policy-definitions]]
  name = "next-hop-unchanged"
  [[policy-definitions.statements]]
    name = "all"
    [policy-definitions.statements.actions]
      route-disposition = "accept-route"
      [policy-definitions.statements.actions.bgp-actions]
        set-next-hop = "unchanged"
EOF
  # One neighbour per node rather than a dynamic range: GoBGP 3.10 does not carry a peer
  # group's as-path-options over to dynamic neighbours, and without replace-peer-as it never
  # sends a node the routes of its siblings (they carry the node's own AS).
  for ((i = 1; i <= $1; i++)); do
    cat >>"$LAB_DIR/gobgpd.toml" <<EOF

[[neighbors]]
  [neighbors.config]
    neighbor-address = "$FABRIC_PREFIX.1$i"
    peer-as = $NODE_ASN
  [neighbors.as-path-options.config]
    replace-peer-as = true
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv4-unicast"
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "l2vpn-evpn"
EOF
  done
}

gobgp_start() {
  write_gobgp_conf "$1"
  # Own UTS namespace: GoBGP announces its hostname to the nodes.
  # shellcheck disable=SC2016 # expanded by the inner shell
  nsx "$TOR" unshare --uts sh -c 'hostname "$5"
    gobgpd -f "$1" -p --pprof-disable --api-hosts "$2" >"$3" 2>&1 & echo $! >"$4"' \
    sh "$LAB_DIR/gobgpd.toml" "$GOBGP_API" "$LAB_DIR/log/$TOR-gobgpd.log" "$LAB_DIR/gobgpd.pid" "$TOR"
  wait_until "$TIMEOUT" gob global || die "gobgpd does not answer (see $LAB_DIR/log/$TOR-gobgpd.log)"
}

# ---------------------------------------------------------------- up / down

new_netns() {
  local ns=$1
  netns_exists "$ns" || ip netns add "$ns"
  ip -n "$ns" link set lo up
  nsx "$ns" sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1
}

cmd_up() {
  [[ ${1:-} =~ ^[0-9]+$ ]] && set -- frr "$1" # `up 3` = `up frr 3`
  local kind=${1:-frr} count=${2:-2} i n t0
  t0=$(now_ms)
  case $kind in frr | gobgp) ;; *) die "TOR kind must be frr or gobgp, not $kind" ;; esac
  [[ $count =~ ^[1-3]$ ]] || die "NODES must be 1, 2 or 3"
  local vrf=${EVPN_LAB_VRF:-netns}
  case $vrf in netns | kernel) ;; *) die "EVPN_LAB_VRF must be netns or kernel, not $vrf" ;; esac
  if is_up; then
    if [ "$(tor_kind)" != "$kind" ] || [ "$(cat "$LAB_DIR/nodes")" != "$count" ] || [ "$(vrf_kind)" != "$vrf" ]; then
      die "the lab is already up with a $(tor_kind) TOR, $(cat "$LAB_DIR/nodes") nodes and $(vrf_kind) VRFs: lab.sh down first"
    fi
    say "already up ($kind TOR, $count nodes)"
    return 0
  fi
  [ -z "$(lab_netns)" ] || die "$PREFIX-* namespaces left from an earlier lab: lab.sh down first"
  preconditions "$vrf"
  say "creating the fabric ($kind TOR, $count nodes, $vrf VRFs) in $LAB_DIR"
  mkdir -p "$LAB_DIR/log"
  echo "$vrf" >"$LAB_DIR/vrf"
  chmod 755 "$LAB_DIR"
  chown frr:frr "$LAB_DIR/log"
  runuser -u frr -- test -w "$LAB_DIR/log" ||
    die "user frr cannot write $LAB_DIR/log (every parent of EVPN_LAB_DIR must be searchable)"

  new_netns "$TOR"
  ip -n "$TOR" link add fabric mtu 9000 type bridge stp_state 0
  ip -n "$TOR" addr add "$TOR_ADDR/24" dev fabric
  ip -n "$TOR" link set fabric up
  for ((i = 1; i <= count; i++)); do
    n=$PREFIX-n$i
    new_netns "$n"
    ip link add eth0 netns "$n" mtu 9000 type veth peer name "n$i" netns "$TOR" mtu 9000
    ip -n "$TOR" link set "n$i" master fabric up
    ip -n "$n" addr add "$FABRIC_PREFIX.1$i/24" dev eth0
    ip -n "$n" link set eth0 up
  done

  say "starting FRR on the nodes (minimal config; the agent renders the rest)"
  for ((i = 1; i <= count; i++)); do
    write_node_base_conf "$PREFIX-n$i"
    frr_start "$PREFIX-n$i" "$(zebra_opts)"
  done
  if [ "$kind" = frr ]; then
    say "starting FRR on $TOR"
    write_tor_frr_conf
    frr_start "$TOR" ""
  else
    say "starting GoBGP on $TOR"
    gobgp_start "$count"
  fi
  echo "$count" >"$LAB_DIR/nodes"
  echo "$kind" >"$LAB_DIR/tor" # written last: "up" is complete
  say "up in $(($(now_ms) - t0)) ms"
}

cmd_down() {
  local ns left pids
  mapfile -t pids < <(lab_pids)
  if [ ${#pids[@]} -gt 0 ]; then
    say "stopping daemons (pids ${pids[*]})"
    kill "${pids[@]}" 2>/dev/null || true
    wait_until 10 all_gone "${pids[@]}" || kill -9 "${pids[@]}" 2>/dev/null || true
    wait_until 5 all_gone "${pids[@]}" || die "daemons still running: ${pids[*]}"
  fi
  # Anything else still running inside one of the lab's namespaces was started for the lab
  # (pods' pings, captures, agents under test); it would keep the namespace alive after
  # `ip netns del`.
  for ns in $(lab_netns); do
    left=$(ip netns pids "$ns" 2>/dev/null | tr '\n' ' ')
    if [ -n "$left" ]; then
      say "killing processes left in $ns: $left"
      # shellcheck disable=SC2086
      kill -9 $left 2>/dev/null || true
    fi
  done
  # VRF binds first, then the per-node directories (deepest mount point first).
  local run; run=$(realpath -m "$FRR_RUN")
  awk -v p="$run/$PREFIX-" 'index($5, p) == 1 {print length($5), $5}' /proc/self/mountinfo | sort -rn |
    while read -r _ m; do umount -l "$m" 2>/dev/null || true; done
  for ns in $(lab_netns); do
    ip netns del "$ns"
  done
  rm -rf "$FRR_RUN/$PREFIX"-* "$LAB_DIR"
  for ns in "$FRR_ETC/$PREFIX"-*; do [ -L "$ns" ] && rm -f "$ns"; done
  # Verify: nothing of ours may be left.
  local bad=""
  [ -z "$(lab_netns)" ] || bad+=" namespaces"
  grep -qF " $run/$PREFIX-" /proc/self/mountinfo && bad+=" mounts"
  ls -d "$FRR_ETC/$PREFIX"-* >/dev/null 2>&1 && bad+=" /etc/frr links"
  [ -z "$bad" ] || die "left behind:$bad"
  say "down: no $PREFIX-* namespaces, mounts, daemons or files left"
}

# A crashed and restarted FRR comes back with whatever frr.conf last saved, not with the changes
# made since through vtysh: what the agent must notice and repair.
cmd_restart_frr() {
  [ $# -eq 1 ] || die "usage: lab.sh restart-frr NODE"
  need_up
  local n f pid pids=()
  n=$(ns_name "$1")
  node_index "$n" >/dev/null
  for f in "$FRR_RUN/$n/zebra.pid" "$FRR_RUN/$n/bgpd.pid" "$FRR_RUN/$n/bfdd.pid"; do
    pid=$(cat "$f" 2>/dev/null) || continue
    pids+=("$pid")
  done
  say "killing FRR of $n (pids ${pids[*]:-none})"
  [ ${#pids[@]} -eq 0 ] || kill -9 "${pids[@]}" 2>/dev/null || true
  wait_until "$TIMEOUT" all_gone "${pids[@]}" || die "FRR of $n did not die"
  rm -f "$FRR_RUN/$n"/*.pid "$FRR_RUN/$n"/*.vty
  frr_start "$n" "$(zebra_opts)"
  say "FRR of $n restarted"
}

# ---------------------------------------------------------------- VRFs, hosts, pods

# VRF of NODE's FRR: netns NODE-VRF, bound as $FRR_RUN/NODE/netns/VRF (= /run/netns/VRF for zebra),
# or with kernel VRFs the VRF device VRF in NODE.
vrf_bound() { vtysh_ns "$1" "show vrf" | grep -qE "^vrf $2 id [0-9]+"; }

# The routing table of a new kernel VRF: one above the highest one of NODE's VRFs (OVN-Kubernetes
# allocates its own; any unused number does here).
next_vrf_table() {
  ip -n "$1" -d link show type vrf | awk '$1 == "vrf" && $2 == "table" {if ($3 > t) t = $3} END {print (t ? t + 1 : 1001)}'
}

cmd_vrf() {
  [ $# -eq 2 ] || die "usage: lab.sh vrf NODE VRF"
  need_up
  local node vrf=$2 vns f
  node=$(ns_name "$1"); need_switch "$node"
  if [ "$(vrf_kind)" = kernel ]; then
    if ! ip -n "$node" link show "$vrf" type vrf >/dev/null 2>&1; then
      say "creating VRF device $vrf in $node"
      ip -n "$node" link add "$vrf" type vrf table "$(next_vrf_table "$node")"
      ip -n "$node" link set "$vrf" up
    fi
    wait_until "$TIMEOUT" vrf_bound "$node" "$vrf" || die "zebra of $node does not show VRF $vrf within ${TIMEOUT}s"
    say "VRF $vrf is known to zebra of $node"
    return 0
  fi
  vns=$node-$vrf; f=$FRR_RUN/$node/netns/$vrf
  new_netns "$vns"
  if ! mountpoint -q "$f"; then
    say "binding netns $vns as VRF $vrf of $node"
    touch "$f"
    mount --bind "/run/netns/$vns" "$f"
  fi
  wait_until "$TIMEOUT" vrf_bound "$node" "$vrf" || die "zebra of $node did not bind VRF $vrf within ${TIMEOUT}s"
  say "VRF $vrf is bound in zebra of $node"
}

cmd_unvrf() {
  [ $# -eq 2 ] || die "usage: lab.sh unvrf NODE VRF"
  need_up
  local node vrf=$2 f
  node=$(ns_name "$1"); need_switch "$node"
  if [ "$(vrf_kind)" = kernel ]; then
    say "removing VRF device $vrf of $node"
    ! ip -n "$node" link show "$vrf" >/dev/null 2>&1 || ip -n "$node" link del "$vrf"
    return 0
  fi
  f=$FRR_RUN/$node/netns/$vrf
  say "removing VRF $vrf of $node (netns $node-$vrf)"
  if mountpoint -q "$f"; then umount -l "$f"; fi # lazy: zebra holds the netns open
  rm -f "$f"
  ! netns_exists "$node-$vrf" || ip netns del "$node-$vrf"
  wait_until "$TIMEOUT" sh -c "! vtysh -N '$node' -c 'show vrf' | grep -qE '^vrf $vrf id [0-9]+'" ||
    die "zebra of $node still has VRF $vrf bound"
}

# Host side of a veth: a name derived from the namespace it leads to, at most 15 characters.
peer_ifname() {
  local name="$1-${2#"$PREFIX"-}"
  [ ${#name} -le 15 ] || die "name too long for an interface: $name (shorten $2)"
  echo "$name"
}

cmd_host() {
  [ $# -eq 5 ] || die "usage: lab.sh host NODE VRF NAME ADDR/LEN GW"
  need_up
  local node vrf=$2 name addr=$4 gw=$5 vns ifn
  node=$(ns_name "$1"); name=$(ns_name "$3"); vns=$node-$vrf
  if [ "$(vrf_kind)" = kernel ]; then
    vns=$node
    ip -n "$node" link show "$vrf" type vrf >/dev/null 2>&1 || die "no VRF $vrf on $node (lab.sh vrf $node $vrf)"
  fi
  netns_exists "$vns" || die "no VRF $vrf on $node (lab.sh vrf $node $vrf)"
  ifn=$(peer_ifname h "$name")
  if netns_exists "$name" && ip -n "$name" link show eth0 >/dev/null 2>&1; then
    say "host $name exists"
    return 0
  fi
  say "host $name ($addr, gateway $gw) behind VRF $vrf of $node"
  new_netns "$name"
  ip link add eth0 netns "$name" type veth peer name "$ifn" netns "$vns"
  [ "$(vrf_kind)" != kernel ] || ip -n "$vns" link set "$ifn" master "$vrf"
  local a g i addrs gws
  IFS=, read -ra addrs <<<"$addr"
  IFS=, read -ra gws <<<"$gw"
  [ ${#addrs[@]} = ${#gws[@]} ] || die "one gateway per address: $addr / $gw"
  for i in "${!addrs[@]}"; do
    a=${addrs[i]} g=${gws[i]}
    [[ $a == */* ]] || die "ADDR must have a prefix length: $a"
    add_address "$vns" "$ifn" "$g/${a#*/}"
    add_address "$name" eth0 "$a"
  done
  ip -n "$vns" link set "$ifn" up
  ip -n "$name" link set eth0 up
  for g in "${gws[@]}"; do ip -n "$name" route add default via "$g"; done
}

# IPv6 addresses skip duplicate address detection: usable at once, and the lab plans its addresses.
add_address() { # NETNS DEV ADDR/LEN
  if [[ $3 == *:* ]]; then ip -n "$1" addr add "$3" dev "$2" nodad
  else ip -n "$1" addr add "$3" dev "$2"; fi
}

bridge_exists() { ip -n "$1" link show "$2" type bridge >/dev/null 2>&1; }

cmd_pod() {
  local args=() vrf="" mac=${POD_MAC:-} mtu=""
  while [ $# -gt 0 ]; do
    case $1 in
      --in-vrf) vrf=${2:?--in-vrf needs a VRF}; shift 2 ;;
      --mac) mac=${2:?--mac needs a MAC}; shift 2 ;;
      --mtu) mtu=${2:?--mtu needs a number}; shift 2 ;;
      *) args+=("$1"); shift ;;
    esac
  done
  if [ ${#args[@]} -lt 4 ] || [ ${#args[@]} -gt 5 ]; then
    die "usage: lab.sh pod NODE NAME BRIDGE ADDR/LEN [GW] [--in-vrf VRF] [--mac MAC] [--mtu MTU]"
  fi
  need_up
  local node name br=${args[2]} addr=${args[3]} gw=${args[4]:-} where ifn
  node=$(ns_name "${args[0]}"); name=$(ns_name "${args[1]}")
  # With kernel VRFs the bridge stays in the node's namespace, enslaved to the VRF.
  where=$node; [ -z "$vrf" ] || [ "$(vrf_kind)" = kernel ] || where=$node-$vrf
  netns_exists "$where" || die "no netns $where"
  ifn=$(peer_ifname p "$name")
  if netns_exists "$name" && ip -n "$name" link show eth0 >/dev/null 2>&1; then
    say "pod $name exists"
    return 0
  fi
  if ! bridge_exists "$where" "$br"; then
    say "waiting up to ${TIMEOUT}s for bridge $br in $where"
    wait_until "$TIMEOUT" bridge_exists "$where" "$br" || die "bridge $br did not appear in $where"
  fi
  say "pod $name ($addr${mac:+, $mac}) on bridge $br of $where"
  new_netns "$name"
  ip link add eth0 netns "$name" ${mac:+address "$mac"} ${mtu:+mtu "$mtu"} type veth \
    peer name "$ifn" netns "$where" ${mtu:+mtu "$mtu"}
  ip -n "$where" link set "$ifn" master "$br" up
  local a g
  for a in ${addr//,/ }; do
    [[ $a == */* ]] || die "ADDR must have a prefix length: $a"
    add_address "$name" eth0 "$a"
  done
  ip -n "$name" link set eth0 up
  for g in ${gw//,/ }; do ip -n "$name" route add default via "$g"; done
}

# The pod's link is its veth's far end: moving that end to another switch's bridge is a live
# migration as the network sees it (the pod keeps MAC, addresses and routes, the link blinks).
cmd_move() {
  local args=() vrf="" announce=1
  while [ $# -gt 0 ]; do
    case $1 in
      --in-vrf) vrf=${2:?--in-vrf needs a VRF}; shift 2 ;;
      --quiet) announce=""; shift ;;
      *) args+=("$1"); shift ;;
    esac
  done
  [ ${#args[@]} -eq 4 ] || die "usage: lab.sh move NAME FROM TO BRIDGE [--in-vrf VRF] [--quiet]"
  need_up
  local name from to br=${args[3]} old new ifn addr
  name=$(ns_name "${args[0]}"); from=$(ns_name "${args[1]}"); to=$(ns_name "${args[2]}")
  need_switch "$from"; need_switch "$to"
  old=$from new=$to
  if [ -n "$vrf" ] && [ "$(vrf_kind)" != kernel ]; then old=$from-$vrf new=$to-$vrf; fi
  ifn=$(peer_ifname p "$name")
  ip -n "$old" link show "$ifn" >/dev/null 2>&1 || die "$name is not attached to $from ($ifn not in $old)"
  bridge_exists "$new" "$br" || die "no bridge $br in $new"
  say "moving $name from $from to bridge $br of $to"
  ip -n "$old" link set "$ifn" netns "$new"
  ip -n "$new" link set "$ifn" master "$br" up
  addr=$(ip -n "$name" -4 -o addr show dev eth0 | awk '{print $4; exit}')
  [ -z "$announce" ] || [ -z "$addr" ] || nsx "$name" arping -q -U -c 1 -I eth0 "${addr%/*}" || true
}

# Multi-homing: the host's bond aggregates its legs only when every node's end presents the same
# LACP system ID, the Ethernet segment's system MAC (FRR's es-sys-mac), as one switch would.
cmd_mh_host() {
  [ $# -ge 5 ] || die "usage: lab.sh mh-host NAME IFNAME SYSMAC ADDR/LEN NODE..."
  need_up
  local name ifname=$2 sysmac=$3 addr=$4 node leg i=0
  name=$(ns_name "$1"); shift 4
  [[ $addr == */* ]] || die "ADDR must have a prefix length: $addr"
  [ ${#ifname} -le 13 ] || die "IFNAME must be at most 13 characters (its leg is IFNAME-l): $ifname"
  if netns_exists "$name"; then
    say "multi-homed host $name exists"
    return 0
  fi
  new_netns "$name"
  ip -n "$name" link add bond0 type bond mode 802.3ad lacp_rate fast miimon 100 2>/dev/null ||
    die "the kernel cannot create bond devices (module bonding missing?)"
  for node in "$@"; do
    node=$(ns_name "$node"); node_index "$node" >/dev/null
    i=$((i + 1)); leg=$ifname-l
    say "multi-homed host $name: leg $i to $node's $ifname (LACP system $sysmac)"
    ip -n "$node" link add "$ifname" type bond mode 802.3ad lacp_rate fast miimon 100 ad_actor_system "$sysmac"
    ip link add "leg$i" netns "$name" type veth peer name "$leg" netns "$node"
    ip -n "$node" link set "$leg" master "$ifname"
    ip -n "$name" link set "leg$i" master bond0
    ip -n "$node" link set "$ifname" up
  done
  ip -n "$name" addr add "$addr" dev bond0
  ip -n "$name" link set bond0 up
}

cmd_uplink() {
  [ $# -eq 2 ] || die "usage: lab.sh uplink NODE down|up"
  need_up
  local node; node=$(ns_name "$1"); node_index "$node" >/dev/null
  case $2 in
    down | up) ip -n "$node" link set eth0 "$2" ;;
    *) die "usage: lab.sh uplink NODE down|up" ;;
  esac
}

# ---------------------------------------------------------------- the leaf

# A leaf switch of the data centre that is not a Kubernetes node: it runs EVPN on its own, for
# "legacy" hosts, with its own AS, and is configured the way a network engineer would.
write_leaf_frr_conf() {
  write_node_base_conf "$LEAF"
  cat >>"$LAB_DIR/$LEAF/frr.conf" <<EOF
router bgp $LEAF_ASN
 bgp router-id $LEAF_VTEP
 neighbor $TOR_ADDR remote-as $TOR_ASN
 !
 address-family ipv4 unicast
  network $LEAF_VTEP/32
 exit-address-family
 !
 address-family l2vpn evpn
  neighbor $TOR_ADDR activate
  advertise-all-vni
 exit-address-family
exit
!
EOF
}

cmd_leaf() {
  need_up
  [ "$(tor_kind)" = frr ] || die "the leaf needs the FRR TOR (the GoBGP TOR only knows the lab's nodes)"
  if netns_exists "$LEAF"; then say "the leaf is up"; return 0; fi
  say "leaf $LEAF: $LEAF_ADDR on the fabric, AS $LEAF_ASN, VTEP $LEAF_VTEP"
  new_netns "$LEAF"
  ip link add eth0 netns "$LEAF" mtu 9000 type veth peer name leaf netns "$TOR" mtu 9000
  ip -n "$TOR" link set leaf master fabric up
  ip -n "$LEAF" addr add "$LEAF_ADDR/24" dev eth0
  ip -n "$LEAF" link set eth0 up
  ip -n "$LEAF" addr add "$LEAF_VTEP/32" dev lo
  write_leaf_frr_conf
  frr_start "$LEAF" "$(zebra_opts)"
}

leaf_conf() { # vtysh configuration lines, one argument each
  local a=(-c "configure terminal") l
  for l in "$@"; do a+=(-c "$l"); done
  vtysh -N "$LEAF" "${a[@]}" >/dev/null || die "the leaf's FRR refused: $*"
}

# Bridge lbrVNI with VXLAN port lvxVNI, in the leaf or in VRF VRF. With netns VRFs the VXLAN
# device is made in the leaf and moved, so its UDP socket stays in the underlay. Prints where.
leaf_vni_devices() { # VNI [VRF]
  local vni=$1 vrf=${2:-} where=$LEAF br=lbr$1 vx=lvx$1
  ip -n "$LEAF" link add "$vx" mtu 8950 type vxlan id "$vni" local "$LEAF_VTEP" dstport 4789 nolearning
  if [ -n "$vrf" ] && [ "$(vrf_kind)" != kernel ]; then
    where=$LEAF-$vrf
    ip -n "$LEAF" link set "$vx" netns "$where"
  fi
  ip -n "$where" link add "$br" type bridge stp_state 0 mcast_snooping 0
  [ -z "$vrf" ] || [ "$(vrf_kind)" != kernel ] || ip -n "$where" link set "$br" master "$vrf"
  ip -n "$where" link set "$vx" master "$br"
  ip -n "$where" link set "$vx" type bridge_slave learning off neigh_suppress on
  ip -n "$where" link set "$vx" up
  ip -n "$where" link set "$br" up
  echo "$where"
}

cmd_leaf_l2vni() {
  [ $# -eq 2 ] || [ $# -eq 5 ] || die "usage: lab.sh leaf-l2vni VNI RT [VRF GATEWAYS MAC]"
  need_up; need_switch "$LEAF"
  local vni=$1 rt=$2 vrf=${3:-} gateways=${4:-} mac=${5:-} where a
  if ip -n "$LEAF${vrf:+-$vrf}" link show "lbr$vni" >/dev/null 2>&1; then say "leaf MAC-VRF $vni exists"; return 0; fi
  say "leaf MAC-VRF: VNI $vni, route target $rt${vrf:+, SVI in VRF $vrf with $gateways ($mac)}"
  where=$(leaf_vni_devices "$vni" "$vrf")
  if [ -n "$vrf" ]; then
    ip -n "$where" link set "lbr$vni" address "$mac"
    for a in ${gateways//,/ }; do add_address "$where" "lbr$vni" "$a"; done
  fi
  leaf_conf "router bgp $LEAF_ASN" "address-family l2vpn evpn" "vni $vni" \
    "route-target import $rt" "route-target export $rt"
}

cmd_leaf_l3vni() {
  [ $# -eq 3 ] || die "usage: lab.sh leaf-l3vni VRF VNI RT"
  need_up; need_switch "$LEAF"
  local vrf=$1 vni=$2 rt=$3
  vrf_bound "$LEAF" "$vrf" || die "no VRF $vrf on the leaf (lab.sh vrf leaf $vrf)"
  say "leaf VRF $vrf: L3VNI $vni, route target $rt, connected subnets as type-5 routes"
  leaf_vni_devices "$vni" "$vrf" >/dev/null
  leaf_conf "vrf $vrf" "vni $vni"
  leaf_conf "router bgp $LEAF_ASN vrf $vrf" "bgp router-id $LEAF_VTEP" \
    "address-family ipv4 unicast" "redistribute connected" "exit-address-family" \
    "address-family ipv6 unicast" "redistribute connected" "exit-address-family" \
    "address-family l2vpn evpn" "advertise ipv4 unicast" "advertise ipv6 unicast" \
    "route-target import $rt" "route-target export $rt"
}

# ---------------------------------------------------------------- env / status

cmd_env() {
  need_up
  local n i list
  list=$(nodes | tr '\n' ' '); list=${list% }
  cat <<EOF
EVPN_LAB_DIR="$LAB_DIR"
EVPN_LAB_TOR_KIND="$(tor_kind)"
EVPN_LAB_VRF="$(vrf_kind)"
EVPN_LAB_TOR_NETNS="/run/netns/$TOR"
EVPN_LAB_TOR_ADDR="$TOR_ADDR"
EVPN_LAB_TOR_ASN="$TOR_ASN"
EVPN_LAB_NODE_ASN="$NODE_ASN"
EVPN_LAB_NODES="$list"
EOF
  for n in $(nodes); do
    i=$(node_index "$n")
    cat <<EOF
EVPN_LAB_N${i}_NETNS="/run/netns/$n"
EVPN_LAB_N${i}_FRR_PATHSPACE="$n"
EVPN_LAB_N${i}_FRR_CONF="$FRR_ETC/$n/frr.conf"
EVPN_LAB_N${i}_VRF_NETNS_DIR="$FRR_RUN/$n/netns"
EVPN_LAB_N${i}_UNDERLAY_ADDR="$FABRIC_PREFIX.1$i"
EVPN_LAB_N${i}_VTEP_IP="198.18.0.$i"
EOF
    # Every node's agent runs on this host, so each takes a free port for its metrics (it logs it).
    if [ "$(vrf_kind)" = kernel ]; then
      echo "EVPN_LAB_N${i}_AGENT_ARGS=\"--netns /run/netns/$n --frr-pathspace $n --vrf-backend kernel --metrics-listen 127.0.0.1:0\""
    else
      echo "EVPN_LAB_N${i}_AGENT_ARGS=\"--netns /run/netns/$n --frr-pathspace $n --vrf-backend netns --vrf-netns-dir $FRR_RUN/$n/netns --metrics-listen 127.0.0.1:0\""
    fi
  done
}

cmd_status() {
  if ! is_up; then echo "lab is down"; return 0; fi
  local n
  echo "== lab: $(tor_kind) TOR, $(vrf_kind) VRFs, nodes: $(nodes | tr '\n' ' ')  (run dir $LAB_DIR)"
  echo "== namespaces"; lab_netns | sed 's/^/  /'
  echo "== $TOR"
  ip -n "$TOR" -br addr
  if [ "$(tor_kind)" = gobgp ]; then
    gob neighbor || true
    gob global rib -a evpn || true
  else
    vtysh_ns "$TOR" "show bgp summary" || true
    vtysh_ns "$TOR" "show bgp l2vpn evpn route" || true
  fi
  for n in $(nodes) $(netns_exists "$LEAF" && echo "$LEAF"); do
    echo "== $n"
    ip -n "$n" -br addr
    ip -n "$n" -d link show type vxlan | grep -E '^[0-9]+:|vxlan id' || true
    vtysh_ns "$n" "show bgp summary" || true
    vtysh_ns "$n" "show vrf" || true
    vtysh_ns "$n" "show evpn vni" || true
  done
}

# ---------------------------------------------------------------- smoke test

PASS=0
FAIL=0
# check DESC CMD...: poll CMD until it succeeds (pass) or $TIMEOUT passes (fail).
check() {
  local desc=$1 t0; shift
  t0=$(now_ms)
  if wait_until "$TIMEOUT" "$@"; then
    PASS=$((PASS + 1)); printf 'ok   %-64s %6d ms\n' "$desc" "$(($(now_ms) - t0))"
  else
    FAIL=$((FAIL + 1)); printf 'FAIL %-64s (after %ss)\n' "$desc" "$TIMEOUT"
  fi
}

bgp_established() { # NODE AFI: the session to the TOR is Established for that family
  vtysh_ns "$1" "show bgp $2 summary json" | python3 -c '
import json, sys
peers = json.load(sys.stdin).get("peers", {})
sys.exit(0 if peers and all(p.get("state") == "Established" for p in peers.values()) else 1)'
}
vtysh_has() { vtysh_ns "$1" "$2" | grep -qF -- "$3"; }
tor_has_evpn() { # FRR-TOR-TEXT GOBGP-TEXT: an EVPN route is in the TOR's table
  if [ "$(tor_kind)" = gobgp ]; then gob global rib -a evpn | grep -qF -- "$2"
  else vtysh_ns "$TOR" "show bgp l2vpn evpn route" | grep -qF -- "$1"; fi
}
tor_has_all_imet() {
  local n i
  for n in $(nodes); do
    i=$(node_index "$n")
    tor_has_evpn "[3]:[0]:[32]:[198.18.0.$i]" "[type:multicast][rd:198.18.0.$i:" || return 1
  done
}
route_has() { ip -n "$1" route show "$2" | grep -qE -- "$3"; }
vrf_route_has() { # NODE VRF PREFIX REGEX: a route in the VRF, whichever kind it is
  if [ "$(vrf_kind)" = kernel ]; then ip -n "$1" route show vrf "$2" "$3" | grep -qE -- "$4"
  else route_has "$1-$2" "$3" "$4"; fi
}
fdb_has() { bridge -n "$1" fdb show dev "$2" | grep -qE -- "$3"; }
ping1() { nsx "$1" ping -c1 -W1 "$2"; }

# What the agent does for a node: VTEP IP, L2VNI devices, BGP + EVPN config.
smoke_node_l2() {
  local n=$1 i=$2
  ip -n "$n" addr replace "198.18.0.$i/32" dev lo
  ip -n "$n" link add evb10100 type bridge stp_state 0 mcast_snooping 0
  ip -n "$n" link add evx10100 type vxlan id 10100 local "198.18.0.$i" dstport 4789 nolearning
  ip -n "$n" link set evx10100 master evb10100
  ip -n "$n" link set evx10100 type bridge_slave learning off neigh_suppress on
  ip -n "$n" link set evx10100 up
  ip -n "$n" link set evb10100 up
}
smoke_node_l3() {
  local n=$1 i=$2 v=$1-red
  ip -n "$n" link add evx20100 type vxlan id 20100 local "198.18.0.$i" dstport 4789 nolearning
  if [ "$(vrf_kind)" = kernel ]; then
    ip -n "$n" link add evb20100 type bridge stp_state 0
    ip -n "$n" link set evb20100 master red
    ip -n "$n" link set evx20100 master evb20100
    ip -n "$n" link set evx20100 type bridge_slave learning off
    ip -n "$n" link set evx20100 up
    ip -n "$n" link set evb20100 up
    return 0
  fi
  ip -n "$n" link set evx20100 netns "$v"
  ip -n "$v" link add evb20100 type bridge stp_state 0
  ip -n "$v" link set evx20100 master evb20100
  ip -n "$v" link set evx20100 type bridge_slave learning off
  ip -n "$v" link set evx20100 up
  ip -n "$v" link set evb20100 up
}
smoke_frr_conf() { # NODE INDEX WITH_L3
  local n=$1 i=$2
  cat <<EOF
frr defaults datacenter
hostname $n
log file $LAB_DIR/log/$n.log informational
service integrated-vtysh-config
!
EOF
  [ "$3" = 1 ] && cat <<EOF
vrf red
 vni 20100
$([ "$(vrf_kind)" = kernel ] || echo " netns /run/netns/red")
exit-vrf
!
EOF
  cat <<EOF
router bgp $NODE_ASN
 bgp router-id 198.18.0.$i
 neighbor $TOR_ADDR remote-as $TOR_ASN
 !
 address-family ipv4 unicast
  network 198.18.0.$i/32
  neighbor $TOR_ADDR allowas-in origin
 exit-address-family
 !
 address-family l2vpn evpn
  neighbor $TOR_ADDR activate
  neighbor $TOR_ADDR allowas-in origin
  advertise-all-vni
 exit-address-family
!
EOF
  [ "$3" = 1 ] && cat <<EOF
router bgp $NODE_ASN vrf red
 bgp router-id 198.18.0.$i
 !
 address-family ipv4 unicast
  redistribute connected
 exit-address-family
 !
 address-family l2vpn evpn
  advertise ipv4 unicast
 exit-address-family
!
EOF
  return 0
}
# Hot-apply a config the way the agent's direct driver does (no daemon restart).
frr_apply() {
  local n=$1 f=$2 pass
  for pass in 1 2; do
    "$FRR_LIB/frr-reload.py" --reload -N "$n" --stdout "$f" >>"$LAB_DIR/log/$n-reload.log" 2>&1 && return 0
    say "frr-reload pass $pass on $n failed, retrying"
  done
  die "frr-reload failed on $n (see $LAB_DIR/log/$n-reload.log)"
}

# One VXLAN packet of VNI seen on the TOR's port towards node 1 while FROM pings TO. The port,
# not the bridge "fabric": a bridge device only sees frames for its own stack or flooded ones,
# not unicast it switches between two ports. Called by `check`, which retries it, so its own
# waits are short.
capture_vni() {
  local vni=$1 from=$2 to=$3 out=$LAB_DIR/capture pid ok=1
  : >"$out.err"
  nsx "$TOR" timeout 5 tcpdump -nn -p -l -c 1 -i n1 \
    "udp dst port 4789 and (udp[8] & 0x08) != 0 and (udp[12:4] >> 8) = $vni" >"$out" 2>"$out.err" &
  pid=$!
  if wait_until 5 grep -q 'listening on' "$out.err"; then
    ping1 "$from" "$to" >/dev/null || true
    wait_until 5 all_gone "$pid" && grep -q "VXLAN.* vni $vni\$" "$out" && ok=0
  fi
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  return "$ok"
}

cmd_smoke() {
  local kind=${1:-frr} count=${2:-2} i n t0 t_up
  [ "$count" -ge 2 ] || die "smoke needs at least 2 nodes"
  t0=$(now_ms)
  ! is_up || die "the lab is up: lab.sh down first (smoke builds and removes its own)"
  [ -n "${EVPN_LAB_SMOKE_KEEP:-}" ] || trap 'cmd_down' EXIT
  cmd_up "$kind" "$count"
  t_up=$(($(now_ms) - t0))
  echo "== smoke: $kind TOR, $count nodes (up took $t_up ms)"

  # -- L2VNI 10100 with one pod per node
  for n in $(nodes); do
    i=$(node_index "$n")
    smoke_node_l2 "$n" "$i"
    smoke_frr_conf "$n" "$i" 0 >"$LAB_DIR/$n/smoke-l2.conf"
    frr_apply "$n" "$LAB_DIR/$n/smoke-l2.conf"
    cmd_pod "$n" "pod$i" evb10100 "198.19.100.1$i/24" --mac "02:00:c6:13:64:1$i"
  done
  for n in $(nodes); do
    check "$n: IPv4 session to the TOR Established" bgp_established "$n" "ipv4 unicast"
    check "$n: EVPN session to the TOR Established" bgp_established "$n" "l2vpn evpn"
  done
  check "TOR has type-3 of every node" tor_has_all_imet
  check "TOR has type-2 of pod1" tor_has_evpn "[2]:[0]:[48]:[02:00:c6:13:64:11]" "[mac:02:00:c6:13:64:11]"
  check "$PREFIX-n1: route to the VTEP of n2, learned through the TOR" route_has "$PREFIX-n1" 198.18.0.2 "via $FABRIC_PREFIX"
  check "$PREFIX-n1: evx10100 flood entry to 198.18.0.2" fdb_has "$PREFIX-n1" evx10100 "^00:00:00:00:00:00 dst 198.18.0.2"
  check "$PREFIX-n1: evx10100 fdb has pod2's MAC via 198.18.0.2" fdb_has "$PREFIX-n1" evx10100 "^02:00:c6:13:64:12 dst 198.18.0.2"
  check "pod1 -> pod2 ping over L2VNI 10100" ping1 "$PREFIX-pod1" 198.19.100.12
  check "underlay carries VXLAN VNI 10100 (tcpdump on $TOR port n1)" capture_vni 10100 "$PREFIX-pod1" 198.19.100.12

  # -- L3VNI 20100 in VRF red with one routed host subnet per node
  for n in $(nodes); do
    i=$(node_index "$n")
    cmd_vrf "$n" red
    smoke_node_l3 "$n" "$i"
    cmd_host "$n" red "host$i" "198.19.1$i.10/24" "198.19.1$i.1"
    smoke_frr_conf "$n" "$i" 1 >"$LAB_DIR/$n/smoke-l3.conf"
    frr_apply "$n" "$LAB_DIR/$n/smoke-l3.conf"
  done
  check "$PREFIX-n1: L3VNI 20100 up in VRF red" vtysh_has "$PREFIX-n1" "show evpn vni 20100" "State: Up"
  check "TOR has type-5 198.19.11.0/24 of n1" tor_has_evpn "[5]:[0]:[24]:[198.19.11.0]" "[prefix:198.19.11.0/24]"
  check "TOR has type-5 198.19.12.0/24 of n2" tor_has_evpn "[5]:[0]:[24]:[198.19.12.0]" "[prefix:198.19.12.0/24]"
  check "$PREFIX-n1, VRF red: route to 198.19.12.0/24 via VTEP 198.18.0.2" vrf_route_has "$PREFIX-n1" red 198.19.12.0/24 "via 198.18.0.2 dev evb20100"
  check "host1 -> host2 ping over L3VNI 20100" ping1 "$PREFIX-host1" 198.19.12.10
  check "underlay carries VXLAN VNI 20100 (tcpdump on $TOR port n1)" capture_vni 20100 "$PREFIX-host1" 198.19.12.10

  # The node config the agent's renderer has to produce, as FRR itself prints it.
  local out=${EVPN_LAB_SMOKE_OUT:-/tmp/evpn-lab-smoke/$kind}
  mkdir -p "$out"
  for n in $(nodes); do vtysh_ns "$n" "show running-config" >"$out/$n.conf" 2>&1 || true; done
  if [ -n "${EVPN_LAB_SMOKE_KEEP:-}" ]; then
    say "EVPN_LAB_SMOKE_KEEP set: leaving the lab up"
  else
    trap - EXIT
    cmd_down
  fi
  say "running configs of the nodes in $out"
  echo "smoke ($kind) took $(($(now_ms) - t0)) ms"
  echo "$PASS passed, $FAIL failed"
  [ "$FAIL" = 0 ]
}

# ---------------------------------------------------------------- main

usage() { sed -n '/^# Usage/,/^# NODE is/p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-2}"; }

main() {
  local cmd=${1:-}
  # Short and plain: it goes into interface, namespace and path names, and into patterns.
  [[ $PREFIX =~ ^[a-z][a-z0-9]{0,4}$ ]] || die "EVPN_LAB_PREFIX must be 1-5 lowercase letters or digits, not '$PREFIX'"
  [ $# -eq 0 ] || shift
  case $cmd in
    install) apt_install "${PACKAGES[@]}" ;;
    up) cmd_up "$@" ;;
    down) cmd_down ;;
    vrf) cmd_vrf "$@" ;;
    unvrf) cmd_unvrf "$@" ;;
    host) cmd_host "$@" ;;
    pod) cmd_pod "$@" ;;
    mh-host) cmd_mh_host "$@" ;;
    uplink) cmd_uplink "$@" ;;
    move) cmd_move "$@" ;;
    leaf) cmd_leaf "$@" ;;
    leaf-l2vni) cmd_leaf_l2vni "$@" ;;
    leaf-l3vni) cmd_leaf_l3vni "$@" ;;
    restart-frr) cmd_restart_frr "$@" ;;
    vtysh)
      [ $# -ge 2 ] || die "usage: lab.sh vtysh NODE CMD..."
      local n; n=$(ns_name "$1"); shift
      vtysh_ns "$n" "$*" ;;
    gobgp) [ "$(tor_kind)" = gobgp ] || die "the TOR is not GoBGP"; gob "$@" ;;
    status) cmd_status ;;
    env) cmd_env ;;
    smoke) cmd_smoke "$@" ;;
    -h | --help | help) usage 0 ;;
    *) usage ;;
  esac
}

main "$@"
