#!/usr/bin/env bash
# The VM lab's test run, from inside the VM (tests/vmlab.rs boots it with `hack/vmlab.sh run`):
# each step runs one test binary or proof against Debian's kernel, with its output on the console
# and in STEPS/NAME.log, its exit status in STEPS/NAME.status and its duration in STEPS/NAME.seconds.
#
#   vmlab-suite.sh STEPS LAB_TEST DATAPLANE_TEST
#
# LAB_TEST is the lab suite's test binary (tests/lab.rs), run with kernel VRF devices; its
# scenarios report to $EVPN_LAB_REPORT. DATAPLANE_TEST is the agent's data-plane test binary
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

# The lab is left up at the end (EVPN_LAB_KEEP) so its logs can be collected; the VM goes anyway.
# Emulation on a shared machine is several times slower than the host: deadlines are longer.
step lab env EVPN_LAB_VRF=kernel EVPN_LAB_KEEP=1 EVPN_LAB_DEADLINE_SECONDS=240 "$lab_test" fabric_with_an_frr_tor --exact --nocapture
cp /tmp/evpn-lab-agent-*.log "$steps/logs/" 2>/dev/null
cp -r /tmp/evpn-lab/log "$steps/logs/frr" 2>/dev/null
for n in evl-n1 evl-n2; do
  vtysh -N "$n" -c "show running-config" >"$steps/logs/$n-running.conf" 2>&1
done
bash "$here/lab.sh" down >/dev/null 2>&1

# The 1,000-network timing is a benchmark, too slow under emulation to be worth it here.
step dataplane "$dataplane_test" --test-threads 1 --skip thousand_l2_networks_timing
exit 0
