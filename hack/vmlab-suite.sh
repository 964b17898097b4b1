#!/usr/bin/env bash
# The VM lab's test run, from inside the VM (tests/vmlab.rs boots it with `hack/vmlab.sh run`):
# each step runs one test binary or proof against Debian's kernel, with its output on the console
# and in STEPS/NAME.log, its exit status in STEPS/NAME.status and its duration in STEPS/NAME.seconds.
#
#   vmlab-suite.sh STEPS LAB_TEST DATAPLANE_TEST
#
# LAB_TEST is the lab suite's test binary (tests/lab.rs), run with kernel VRF devices; its
# scenarios report to $EVPN_LAB_REPORT. The bond step proves the multi-homing data plane (an
# external host on an LACP bond to two nodes). DATAPLANE_TEST is the agent's data-plane test binary
# (agent/tests/dataplane.rs), whose kernel-VRF tests skip on kernels without VRF devices. The
# logs of the lab's agents and FRR land in STEPS/logs.
set -u
[ $# -eq 3 ] || { echo "usage: vmlab-suite.sh STEPS LAB_TEST DATAPLANE_TEST" >&2; exit 2; }
steps=$1 lab_test=$2 dataplane_test=$3
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$steps/logs"

now_ms() { local t=${EPOCHREALTIME/./}; echo $((t / 1000)); }

step() { # NAME CMD...
  local name=$1 t0 rc
  shift
  echo "=== step $name: $*"
  t0=$(now_ms)
  "$@" 2>&1 | tee "$steps/$name.log"
  rc=${PIPESTATUS[0]}
  echo "$rc" >"$steps/$name.status"
  echo "$(( $(now_ms) - t0 ))" | awk '{printf "%.1f\n", $1 / 1000}' >"$steps/$name.seconds"
  echo "=== step $name: exit $rc after $(cat "$steps/$name.seconds") s"
}

# One test of the lab suite with kernel VRFs as step NAME; the agents' and FRR's logs and the
# running configurations go to LOGS. The lab is left up at the end (EVPN_LAB_KEEP) so they can be
# collected, then taken down. Emulation on a shared machine is several times slower than the
# host: deadlines are longer.
lab_step() { # NAME TEST LOGS
  local name=$1 test=$2 logs=$3 n
  # The VM sees the host's /tmp: old agent logs there must not mix with this run's.
  rm -f /tmp/evpn-lab-agent-*.log
  step "$name" env EVPN_LAB_VRF=kernel EVPN_LAB_KEEP=1 EVPN_LAB_DEADLINE_SECONDS=240 "$lab_test" "$test" --exact --nocapture
  mkdir -p "$logs"
  cp /tmp/evpn-lab-agent-*.log "$logs/" 2>/dev/null
  cp -r /tmp/evpn-lab/log "$logs/frr" 2>/dev/null
  for n in evl-n1 evl-n2 evl-tor; do
    vtysh -N "$n" -c "show running-config" >"$logs/$n-running.conf" 2>&1
  done
  bash "$here/lab.sh" down >/dev/null 2>&1
}

lab_step lab fabric_with_an_frr_tor "$steps/logs"

# Multi-homing's data plane: an external host on an LACP bond with one leg to each of two nodes.
# Each node has a one-leg bond with the same LACP system ID (as an EVPN Ethernet segment has on
# every node that shares it), so the host sees one partner and aggregates both legs. The bond is
# a port of a bridge on each node; a veth between the two bridges stands in for the overlay that
# makes the segment one Layer2 network, so the host's broadcasts reach both nodes whichever leg
# carries them.
bond_proof() {
  local n i sysmac=02:00:5e:10:00:01 deadline
  ip netns add mh-host
  ip -n mh-host link add bond0 type bond mode 802.3ad lacp_rate fast miimon 100
  for i in 1 2; do
    n=mh-n$i
    ip netns add $n
    ip -n $n link add es1 type bond mode 802.3ad lacp_rate fast miimon 100 ad_actor_system $sysmac
    ip -n $n link add br0 type bridge stp_state 0
    ip link add leg$i netns mh-host type veth peer name eth0 netns $n
    ip -n $n link set eth0 master es1
    ip -n mh-host link set leg$i master bond0
    ip -n $n link set es1 master br0
    ip -n $n addr add 10.99.0.$i/24 dev br0
    ip -n $n link set es1 up
    ip -n $n link set br0 up
  done
  ip link add overlay netns mh-n1 type veth peer name overlay netns mh-n2
  for n in mh-n1 mh-n2; do ip -n $n link set overlay master br0 up; done
  ip -n mh-host addr add 10.99.0.100/24 dev bond0
  ip -n mh-host link set bond0 up
  # Both legs in one aggregator, with the segment's system ID as partner, within 30 s.
  deadline=$(( $(now_ms) + 30000 ))
  until ip netns exec mh-host grep -A5 'Active Aggregator Info' /proc/net/bonding/bond0 >"$steps/bond.aggregator" &&
    grep -q 'Number of ports: 2' "$steps/bond.aggregator" && grep -q "Partner Mac Address: $sysmac" "$steps/bond.aggregator"; do
    [ "$(now_ms)" -lt "$deadline" ] || { ip netns exec mh-host cat /proc/net/bonding/bond0; return 1; }
    sleep 0.2
  done
  echo "ok   both legs aggregated with partner $sysmac"
  ip netns exec mh-host cat /proc/net/bonding/bond0 | grep -E "Aggregator ID|Number of ports|Partner Mac|Slave Interface"
  for i in 1 2; do
    deadline=$(( $(now_ms) + 30000 ))
    until ip netns exec mh-host ping -c1 -W1 10.99.0.$i >/dev/null; do
      [ "$(now_ms)" -lt "$deadline" ] || { echo "FAIL the host does not reach node $i over the bond"; return 1; }
    done
    echo "ok   the host reaches node $i over the bond"
  done
}
step bond bond_proof

# Multi-homing with the agent: Ethernet segments are bonds, which only this kernel makes.
lab_step multihoming fabric_with_a_multihomed_host "$steps/logs/multihoming"

# The 1,000-network timing is a benchmark, too slow under emulation to be worth it here.
step dataplane "$dataplane_test" --test-threads 1 --skip thousand_l2_networks_timing
exit 0
