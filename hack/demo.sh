#!/usr/bin/env bash
# The demo: one command from a fresh clone to two tenants' networks in an EVPN fabric.
#
#   hack/demo.sh [up]    install what is missing, build, start everything, apply the demo's
#                        objects (hack/demo/), wait until they are Ready, show them and a ping matrix
#   hack/demo.sh status  the objects and the ping matrix again, while the demo runs
#   hack/demo.sh down    stop and remove everything `up` made, even half-way, and check that
#                        nothing is left; safe when nothing runs
#
# What runs (as root; all on this machine, nothing listens beyond loopback):
#   - a control plane (etcd + kube-apiserver, hack/control-plane.sh) with the CRDs and RBAC;
#   - evpn-operator: controllers and the admission webhook (TLS with a CA made here, registered
#     through a ValidatingWebhookConfiguration, so a bad object is really refused);
#   - the lab fabric (hack/lab.sh, namespaces $PREFIX-*): an FRR top-of-rack and two nodes with
#     FRR, each node with its own evpn-agent (Kubernetes nodes worker-1 and worker-2);
#   - stand-ins for what OVN-Kubernetes does on the nodes: red's VRF on each node, and "pods" as
#     network namespaces, two per tenant.
#
# Environment: EVPN_DEMO_DIR (everything the demo writes; default /tmp/evpn-demo),
# EVPN_DEMO_PREFIX (of its namespaces; default evd, the test suite's lab uses evl),
# EVPN_DEMO_PORT_BASE (loopback ports base+1..base+5 for etcd, etcd peers, kube-apiserver, the
# webhook and the operator's metrics; default 28440), EVPN_DEMO_TIMEOUT (seconds the objects get
# to become Ready and the pods to reach each other; default 120). `down` takes the prefix and
# ports from the demo directory, so it needs only EVPN_DEMO_DIR.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DEMO_DIR=${EVPN_DEMO_DIR:-/tmp/evpn-demo}
PREFIX=${EVPN_DEMO_PREFIX:-evd}
PORT_BASE=${EVPN_DEMO_PORT_BASE:-28440}
TIMEOUT=${EVPN_DEMO_TIMEOUT:-120}
NODES=(worker-1 worker-2)
# The pods: name, node (1 or 2), tenant, address. Both tenants use 10.100.0.0/16; red, a Layer3
# network, has one /24 per node, whose first address is the gateway in the node's VRF.
PODS=(blue-1 blue-2 red-1 red-2)
declare -A POD_NODE=([blue-1]=1 [blue-2]=2 [red-1]=1 [red-2]=2)
declare -A POD_IP=([blue-1]=10.100.1.11 [blue-2]=10.100.2.11 [red-1]=10.100.1.10 [red-2]=10.100.2.10)
# The apiserver calls the webhook on 127.0.0.1, which a proxy in the environment would swallow.
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY || true

say() { echo "[demo $(date +%T)] $*" >&2; }
die() { say "error: $*"; exit 1; }
now_ms() { local t=${EPOCHREALTIME/./}; echo $((t / 1000)); }
tenant() { echo "${1%-*}"; }

# wait_until SECONDS CMD...: run CMD every 200 ms until it succeeds or the deadline passes.
wait_until() {
  local deadline=$(($(now_ms) + $1 * 1000)); shift
  until "$@" >/dev/null 2>&1; do
    [ "$(now_ms)" -lt "$deadline" ] || return 1
    sleep 0.2
  done
}

# Settings are fixed when `up` starts and kept in the demo directory, so `down` and `status`
# find the same namespaces and ports whatever their environment says.
load_settings() {
  if [ -f "$DEMO_DIR/settings" ]; then
    PREFIX=$(sed -n 's/^prefix=//p' "$DEMO_DIR/settings")
    PORT_BASE=$(sed -n 's/^port_base=//p' "$DEMO_DIR/settings")
  fi
  [[ $PREFIX =~ ^[a-z][a-z0-9]{0,4}$ ]] || die "EVPN_DEMO_PREFIX must be 1-5 lowercase letters or digits, not '$PREFIX'"
  if ! [[ $PORT_BASE =~ ^[0-9]{4,5}$ ]] || [ "$PORT_BASE" -lt 1024 ] || [ "$PORT_BASE" -gt 65500 ]; then
    die "EVPN_DEMO_PORT_BASE must be a number between 1024 and 65500, not '$PORT_BASE'"
  fi
  ETCD_PORT=$((PORT_BASE + 1)) ETCD_PEER_PORT=$((PORT_BASE + 2)) API_PORT=$((PORT_BASE + 3))
  WEBHOOK_PORT=$((PORT_BASE + 4)) METRICS_PORT=$((PORT_BASE + 5))
  CP_RUN=$DEMO_DIR/control-plane
  LAB_DIR=$DEMO_DIR/lab
  LOG=$DEMO_DIR/log
  TLS=$DEMO_DIR/tls
  KUBECONFIG_ADMIN=$CP_RUN/admin.kubeconfig
}

k() { kubectl --kubeconfig "$KUBECONFIG_ADMIN" "$@"; }
lab() { EVPN_LAB_PREFIX=$PREFIX EVPN_LAB_DIR=$LAB_DIR bash "$ROOT/hack/lab.sh" "$@"; }
control_plane() {
  EVPN_RUN=$CP_RUN ETCD_PORT=$ETCD_PORT ETCD_PEER_PORT=$ETCD_PEER_PORT API_PORT=$API_PORT \
    NODE_IDENTITIES="${NODES[*]}" bash "$ROOT/hack/control-plane.sh" "$@"
}
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
ports() { echo "$ETCD_PORT" "$ETCD_PEER_PORT" "$API_PORT" "$WEBHOOK_PORT" "$METRICS_PORT"; }

# ---------------------------------------------------------------- processes

# spawn NAME CMD...: runs CMD in a session of its own (not a child of this script), so it
# outlives `up` and a Ctrl-C, with its output in $LOG/NAME.log. The process writes its own pid
# file before it becomes CMD, so `down` finds it however `up` ends.
spawn() {
  local name=$1; shift
  # shellcheck disable=SC2016 # expanded by the inner shell
  setsid -f bash -c 'echo $$ >"$1"; shift; exec "$@"' bash "$DEMO_DIR/$name.pid" "$@" \
    </dev/null >>"$LOG/$name.log" 2>&1
  wait_until 10 test -s "$DEMO_DIR/$name.pid" || die "$name did not start (see $LOG/$name.log)"
}

# Whether PID is one of the demo's long-running processes: one of its four programs (FRR runs
# inside the lab's namespaces, which `lab.sh down` empties), with the demo's directory or
# namespaces on its command line. Keeps `down` away from anything else, such as the test suite's
# own control plane or a pid that was reused.
ours() {
  local comm args
  comm=$(cat "/proc/$1/comm" 2>/dev/null) || return 1
  case $comm in evpn-operator | evpn-agent | etcd | kube-apiserver) ;; *) return 1 ;; esac
  args=$(tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null) || return 1
  [[ $args == *"$DEMO_DIR/"* || $args == *"/run/netns/$PREFIX-"* ]]
}

# Every process on the machine that is ours (see above).
our_processes() {
  local p
  for p in /proc/[0-9]*; do
    p=${p#/proc/}
    ! ours "$p" || echo "$p"
  done
}

all_gone() { local p; for p in "$@"; do ! kill -0 "$p" 2>/dev/null || return 1; done; }

# stop PID...: SIGTERM, then SIGKILL what is still there after 10 s.
stop() {
  [ $# -gt 0 ] || return 0
  kill "$@" 2>/dev/null || true
  wait_until 10 all_gone "$@" || kill -9 "$@" 2>/dev/null || true
  wait_until 5 all_gone "$@" || die "processes $* do not die"
}

pid_of() { # NAME: the pid from NAME.pid when that process is alive and ours
  local pid
  pid=$(cat "$DEMO_DIR/$1.pid" 2>/dev/null) || return 1
  ours "$pid" && echo "$pid"
}

# ---------------------------------------------------------------- up

preconditions() {
  [ "$(id -u)" = 0 ] || die "must run as root (network namespaces, FRR, routes)"
  if [ -f "$DEMO_DIR/state" ]; then
    if [ "$(cat "$DEMO_DIR/state")" = up ] && healthy; then
      say "the demo is already running (see: hack/demo.sh status; remove it: hack/demo.sh down)"
      exit 0
    fi
    die "an earlier demo in $DEMO_DIR did not finish or no longer runs ($(cat "$DEMO_DIR/state")): hack/demo.sh down first"
  fi
  [ ! -e "$DEMO_DIR" ] || die "$DEMO_DIR exists but is not a demo's: remove it or set EVPN_DEMO_DIR"
  [ -z "$(ip netns list 2>/dev/null | awk -v p="$PREFIX-" 'index($1, p) == 1')" ] ||
    die "network namespaces $PREFIX-* exist already (another demo or lab?): hack/demo.sh down first"
  local probe=$PREFIX-probe
  ip netns del "$probe" 2>/dev/null || true
  ip netns add "$probe" 2>/dev/null || die "cannot create network namespaces here ('ip netns add' failed: needs CAP_SYS_ADMIN and /run/netns)"
  ip netns del "$probe"
  local p taken=()
  for p in $(ports); do port_free "$p" || taken+=("$p"); done
  [ ${#taken[@]} -eq 0 ] || die "ports already in use on 127.0.0.1: ${taken[*]} (EVPN_DEMO_PORT_BASE moves all five)"
  command -v cargo >/dev/null || die "cargo not found: install Rust (https://rustup.rs) first"
}

# The demo is up and its processes run.
healthy() {
  control_plane status 2>/dev/null || return 1
  pid_of operator >/dev/null || return 1
  local n
  for n in "${NODES[@]}"; do pid_of "agent-$n" >/dev/null || return 1; done
}

install_prerequisites() {
  say "prerequisites: apt packages, kube-apiserver and etcd (cached after the first run)"
  bash "$ROOT/hack/control-plane.sh" install
  bash "$ROOT/hack/lab.sh" install
}

# Debug, not release: from scratch, a release build of the two binaries took 3.3 times the CPU
# time of a debug one here (7 min 20 s against 2 min 12 s, on 2 cores), the test suite has most
# debug dependencies built already, and at two nodes and two networks the binaries' speed does
# not show.
build() {
  say "building evpn-operator and evpn-agent (debug; a cold build takes a few minutes)"
  (cd "$ROOT" && cargo build --locked -p evpn-operator -p evpn-agent --bins)
  local target
  target=$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
  OPERATOR_BIN=$target/debug/evpn-operator
  AGENT_BIN=$target/debug/evpn-agent
  [ -x "$OPERATOR_BIN" ] || die "$OPERATOR_BIN not found after the build"
  [ -x "$AGENT_BIN" ] || die "$AGENT_BIN not found after the build"
}

start_control_plane() {
  say "control plane on 127.0.0.1:$API_PORT"
  control_plane start
  k apply --validate=false -f "$ROOT/config/crd" -f "$ROOT/config/third-party" >/dev/null
  k wait --for condition=Established --timeout=60s -f "$ROOT/config/crd" -f "$ROOT/config/third-party" >/dev/null
  k apply -f "$ROOT/config/rbac" >/dev/null
}

make_certificates() {
  mkdir -p "$TLS"
  (
    cd "$TLS"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 30 -subj "/CN=evpn-demo-ca" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -keyout tls.key -out tls.csr -subj "/CN=127.0.0.1" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >tls.ext
    openssl x509 -req -in tls.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out tls.crt -days 30 -extfile tls.ext 2>/dev/null
    chmod 600 ./*.key
  )
}

webhook_ready() { curl -fs --cacert "$TLS/ca.crt" "https://127.0.0.1:$WEBHOOK_PORT/readyz"; }
# The apiserver sends EVPNs to the webhook: the bad sample, as a dry run, is refused by it.
webhook_refuses() {
  local out
  out=$(k apply --dry-run=server -f "$ROOT/hack/demo/bad-evpn.yaml" 2>&1) && return 1
  [[ $out == *'admission webhook "evpns.evpn.k8s.ovn.org" denied'* ]]
}

start_operator() {
  say "evpn-operator: controllers, and the webhook on https://127.0.0.1:$WEBHOOK_PORT"
  make_certificates
  spawn operator env KUBECONFIG="$CP_RUN/operator.kubeconfig" NO_COLOR=1 "$OPERATOR_BIN" \
    --webhook-listen "127.0.0.1:$WEBHOOK_PORT" --tls-cert-file "$TLS/tls.crt" --tls-key-file "$TLS/tls.key" \
    --metrics-listen "127.0.0.1:$METRICS_PORT"
  wait_until 60 webhook_ready || die "the webhook did not become ready (see $LOG/operator.log)"
  sed -e "s|WEBHOOK_URL|https://127.0.0.1:$WEBHOOK_PORT|" -e "s|CA_BUNDLE|$(base64 -w0 "$TLS/ca.crt")|" \
    "$ROOT/hack/demo/webhook.yaml" | k apply -f - >/dev/null
  # A new webhook configuration takes a moment to reach the apiserver's admission chain.
  wait_until 60 webhook_refuses || die "the apiserver does not call the webhook (see $LOG/operator.log)"
}

# The fabric and what OVN-Kubernetes would do for the Layer3 network red on the nodes: its VRF
# on every node and a routed subnet per node with a pod in it (blue's pods need the bridge the
# agent makes, so they come later). It needs no API, so it runs beside the control plane's start
# (`up` runs it as `demo.sh _fabric`).
cmd_fabric() {
  load_settings
  local i p
  lab up frr "${#NODES[@]}"
  for i in "${!NODES[@]}"; do lab vrf "n$((i + 1))" red; done
  for p in "${PODS[@]}"; do
    [ "$(tenant "$p")" = red ] || continue
    lab host "n${POD_NODE[$p]}" red "$p" "${POD_IP[$p]}/24" "10.100.${POD_NODE[$p]}.1"
  done
}

# Starts cmd_fabric in a session of its own: a Ctrl-C at the terminal does not reach it, so
# on_exit stops it as a whole before `up` ends, and nothing keeps building after `down`.
start_fabric() {
  say "fabric: FRR top-of-rack and two FRR nodes in namespaces $PREFIX-* (log $LOG/lab.log)"
  setsid bash "$0" _fabric </dev/null >>"$LOG/lab.log" 2>&1 &
  FABRIC_PID=$!
}

wait_fabric() {
  local status=0
  wait "$FABRIC_PID" || status=$?
  FABRIC_PID=
  [ "$status" = 0 ] || die "the fabric did not come up (see $LOG/lab.log)"
}

start_agents() {
  local env i n args
  k apply -f "$ROOT/hack/demo/nodes.yaml" >/dev/null
  env=$(lab env)
  for i in "${!NODES[@]}"; do
    n=${NODES[$i]}
    args=$(sed -n "s/^EVPN_LAB_N$((i + 1))_AGENT_ARGS=\"\(.*\)\"$/\1/p" <<<"$env")
    [ -n "$args" ] || die "lab.sh env gave no agent arguments for node $((i + 1))"
    # shellcheck disable=SC2086 # the lab's arguments are words without spaces
    spawn "agent-$n" env KUBECONFIG="$CP_RUN/node-$n.kubeconfig" NO_COLOR=1 RUST_LOG=info \
      "$AGENT_BIN" --node-name "$n" $args
  done
  say "evpn-agent on ${NODES[*]}"
}

blue_pods() {
  local vni p
  vni=$(k get evpn blue -o jsonpath='{.status.macVRF.vni}')
  [ -n "$vni" ] || die "EVPN blue has no MAC-VNI in its status"
  for p in "${PODS[@]}"; do
    [ "$(tenant "$p")" = blue ] || continue
    lab pod "n${POD_NODE[$p]}" "$p" "evb$vni" "${POD_IP[$p]}/16" 2>>"$LOG/lab.log"
  done
}

# The webhook judges from what its watches have seen, a moment behind the apiserver: an EVPN
# applied right after its network can be refused because the network "does not exist" yet.
apply_evpns() { k apply -f "$ROOT/hack/demo/evpns.yaml" >/dev/null 2>"$DEMO_DIR/apply.err"; }

# One line per EVPN: NAME|READY-NODES|READY-CONDITION|GENERATION|OBSERVED-GENERATION, where
# fields the operator has not written yet are empty.
evpn_lines() {
  k get evpn -o jsonpath='{range .items[*]}{.metadata.name}|{.status.readyNodes}|{.status.conditions[?(@.type=="Ready")].status}|{.metadata.generation}|{.status.observedGeneration}{"\n"}{end}' 2>/dev/null
}

wait_ready() {
  local t0 deadline lines progress last="" tty=0 name nodes ready gen seen all
  t0=$(now_ms); deadline=$((t0 + TIMEOUT * 1000))
  [ -t 2 ] && tty=1
  while :; do
    lines=$(evpn_lines || true)
    progress="" all=1
    while IFS='|' read -r name nodes ready gen seen; do
      [ -n "$name" ] || continue
      progress+="${progress:+, }$name "
      if [ -n "$nodes" ]; then progress+="$nodes nodes ready"; else progress+=pending; fi
      if [ "$ready" != True ] || [ "$gen" != "$seen" ]; then all=0; fi
    done <<<"$lines"
    [ -n "$progress" ] || all=0
    progress="waiting for Ready: ${progress:-no status yet} ($(( ($(now_ms) - t0) / 1000 ))s)"
    if [ "$tty" = 1 ]; then
      printf '\r\033[K[demo %s] %s' "$(date +%T)" "$progress" >&2
    elif [ "${progress% (*}" != "${last% (*}" ]; then
      say "$progress"
    fi
    last=$progress
    if [ "$all" = 1 ]; then
      [ "$tty" = 0 ] || echo >&2
      say "both EVPNs Ready on every node after $(( ($(now_ms) - t0) / 1000 ))s"
      return 0
    fi
    if [ "$(now_ms)" -ge "$deadline" ]; then
      [ "$tty" = 0 ] || echo >&2
      not_ready_report
      die "not Ready within ${TIMEOUT}s"
    fi
    sleep 0.5
  done
}

not_ready_report() {
  say "what the objects say:"
  k get vtep,evpn,evpnnodestates >&2 || true
  k get evpn -o jsonpath='{range .items[*]}{"\nEVPN "}{.metadata.name}{":\n"}{range .status.conditions[*]}{"  "}{.type}={.status} {.reason}: {.message}{"\n"}{end}{range .status.failedNodes[*]}{"  failed on "}{.node}: {.reason}: {.message}{"\n"}{end}{end}' >&2 || true
  echo >&2
  logs_hint
}

logs_hint() {
  say "logs: operator $LOG/operator.log, agents $LOG/agent-<node>.log, FRR $LAB_DIR/log/, control plane $CP_RUN/*.log"
  say "remove everything: hack/demo.sh down"
}

ping_ok() { ip netns exec "$PREFIX-$1" ping -c1 -W1 "${POD_IP[$2]}" >/dev/null 2>&1; }

# Pods of a tenant reach each other once the routes are in: wait for that, with a deadline.
wait_pings() {
  local a b t0
  t0=$(now_ms)
  for a in "${PODS[@]}"; do
    for b in "${PODS[@]}"; do
      if [ "$a" = "$b" ] || [ "$(tenant "$a")" != "$(tenant "$b")" ]; then continue; fi
      wait_until "$TIMEOUT" ping_ok "$a" "$b" || { logs_hint; die "$a does not reach $b (${POD_IP[$b]})"; }
    done
  done
  say "every pod reaches the other pod of its tenant after $(( ($(now_ms) - t0) / 1000 ))s"
}

cmd_up() {
  local t0; t0=$(now_ms)
  FABRIC_PID=
  load_settings
  preconditions
  # The settings file marks the directory as the demo's: `down` removes no other.
  mkdir -p "$(dirname "$DEMO_DIR")"
  mkdir -m 755 "$DEMO_DIR" # 755: FRR's user must reach the lab's files below it
  printf 'prefix=%s\nport_base=%s\n' "$PREFIX" "$PORT_BASE" >"$DEMO_DIR/settings"
  echo starting >"$DEMO_DIR/state"
  mkdir "$LOG"
  trap 'on_exit $?' EXIT
  trap 'say "interrupted"; exit 130' INT TERM
  install_prerequisites
  build
  local t_built; t_built=$(now_ms)
  start_fabric
  start_control_plane
  start_operator
  wait_fabric
  start_agents
  say "applying hack/demo/: the VTEP, the networks blue and red, an EVPN for each"
  k apply -f "$ROOT/hack/demo/vtep.yaml" -f "$ROOT/hack/demo/networks.yaml" >/dev/null
  wait_until 30 apply_evpns || die "the EVPNs were refused: $(cat "$DEMO_DIR/apply.err")"
  wait_ready
  blue_pods
  wait_pings
  echo up >"$DEMO_DIR/state"
  show
  echo
  echo "up in $(( ($(now_ms) - t0) / 1000 ))s ($(( ($(now_ms) - t_built) / 1000 ))s after the build)"
}

on_exit() {
  if [ -n "${FABRIC_PID:-}" ]; then
    kill -TERM -- "-$FABRIC_PID" 2>/dev/null || true
    wait "$FABRIC_PID" 2>/dev/null || true
  fi
  [ "$1" = 0 ] && return 0
  [ "$(cat "$DEMO_DIR/state" 2>/dev/null)" = up ] && return 0
  echo failed >"$DEMO_DIR/state" 2>/dev/null || true
  say "up did not finish; what it started is still there: hack/demo.sh down removes it"
}

# ---------------------------------------------------------------- status

show() {
  echo
  echo "\$ kubectl get vtep,evpn,evpnnodestates"
  k get vtep,evpn,evpnnodestates
  echo
  echo "\$ kubectl apply -f hack/demo/bad-evpn.yaml --dry-run=server   # blue-copy wants red's VNI 20100"
  (cd "$ROOT" && k apply --dry-run=server -f hack/demo/bad-evpn.yaml 2>&1) || true
  echo
  ping_matrix
  echo
  echo "Look around: export KUBECONFIG=$KUBECONFIG_ADMIN; kubectl get evpn blue -o yaml"
  echo "             ip netns exec $PREFIX-blue-1 ping ${POD_IP[blue-2]}"
  echo "             EVPN_LAB_PREFIX=$PREFIX EVPN_LAB_DIR=$LAB_DIR hack/lab.sh vtysh n1 show bgp l2vpn evpn route"
  echo "Logs:        $LOG/"
  echo "Tear down:   hack/demo.sh down"
}

# row LABEL CELL...: one line of the ping matrix.
row() {
  local line
  line=$(printf '  %-20s' "$1"); shift
  line+=$(printf '%-14s' "$@")
  echo "${line%"${line##*[! ]}"}"
}

# Every pod pings every other pod's address, all at once; prints who reaches whom and checks it
# against what EVPN promises: within a tenant a reply, across tenants never.
ping_matrix() {
  local dir a b want cell cells ips=() table pids=()
  dir=$(mktemp -d "$DEMO_DIR/ping.XXXXXX")
  for a in "${PODS[@]}"; do
    ips+=("${POD_IP[$a]}")
    for b in "${PODS[@]}"; do
      [ "$a" != "$b" ] || continue
      (ip netns exec "$PREFIX-$a" ping -c3 -i0.2 -W1 "${POD_IP[$b]}" >/dev/null 2>&1 && echo reply || echo "no reply") >"$dir/$a.$b" &
      pids+=($!)
    done
  done
  wait "${pids[@]}"
  table=$(
    row "from \\ to" "${PODS[@]}"
    row "" "${ips[@]}"
    for a in "${PODS[@]}"; do
      cells=()
      for b in "${PODS[@]}"; do
        if [ "$a" = "$b" ]; then cells+=(-); continue; fi
        want="no reply"
        [ "$(tenant "$a")" != "$(tenant "$b")" ] || want=reply
        cell=$(cat "$dir/$a.$b")
        [ "$cell" = "$want" ] || cell="$cell!" # marks what breaks the promise
        cells+=("$cell")
      done
      row "$a (worker-${POD_NODE[$a]})" "${cells[@]}"
    done
  )
  rm -rf "$dir"
  echo "Ping matrix: each pod (row) pings each other pod (column) 3 times."
  echo "  blue: Layer2 network 10.100.0.0/16, EVPN MAC-VRF, VNI $(k get evpn blue -o jsonpath='{.status.macVRF.vni}')"
  echo "  red:  Layer3 network 10.100.0.0/16 (a /24 per node), EVPN IP-VRF, VNI $(k get evpn red -o jsonpath='{.status.ipVRF.vni}')"
  echo
  echo "$table"
  echo
  if [[ $table == *'!'* ]]; then
    echo "UNEXPECTED: the matrix breaks tenant isolation or connectivity (marked with !)."
    return 1
  fi
  echo "Each tenant reaches its own pods across the fabric and never the other tenant's, though"
  echo "both use 10.100.0.0/16."
}

cmd_status() {
  load_settings
  [ "$(cat "$DEMO_DIR/state" 2>/dev/null)" = up ] || die "no demo is up in $DEMO_DIR (hack/demo.sh up)"
  [ "$(id -u)" = 0 ] || die "must run as root (the pings enter network namespaces)"
  healthy || die "the demo in $DEMO_DIR does not run any more: hack/demo.sh down, then up"
  show
}

# ---------------------------------------------------------------- down

cmd_down() {
  load_settings
  [ "$(id -u)" = 0 ] || die "must run as root (network namespaces, mounts)"
  if [ -d "$DEMO_DIR" ] && [ ! -f "$DEMO_DIR/settings" ]; then
    # Empty: `up` was stopped right after making it. Anything else is not ours to remove.
    rmdir "$DEMO_DIR" 2>/dev/null || die "$DEMO_DIR is not a demo's directory (no settings file): left alone"
  fi
  local name pids=() pid
  for name in operator "${NODES[@]/#/agent-}"; do
    pid=$(pid_of "$name") && pids+=("$pid")
  done
  [ ${#pids[@]} -eq 0 ] || { say "stopping the operator and the agents (pids ${pids[*]})"; stop "${pids[@]}"; }
  lab down 2>&1 | sed 's/^/  /' >&2 || die "hack/lab.sh down failed"
  control_plane clean 2>&1 | sed 's/^/  /' >&2 || die "hack/control-plane.sh clean failed"
  # Whatever an interrupted `up` started without getting to record it.
  mapfile -t pids < <(our_processes)
  [ ${#pids[@]} -eq 0 ] || { say "stopping leftover processes ${pids[*]}"; stop "${pids[@]}"; }
  rm -rf "$DEMO_DIR"
  check_clean
}

# Nothing of the demo may be left: each kind of thing checked on its own.
check_clean() {
  local bad=() p
  [ -z "$(ip netns list 2>/dev/null | awk -v p="$PREFIX-" 'index($1, p) == 1')" ] || bad+=("namespaces $PREFIX-*")
  [ -z "$(our_processes)" ] || bad+=("processes $(our_processes | tr '\n' ' ')")
  # Lab devices live in the namespaces; the agent's devices carry its alias and evb/evx names.
  ! ip -o link show 2>/dev/null | grep -qE ': ev[bx][0-9]+[@:]|alias evpn-agent:' || bad+=("devices in the host namespace")
  ! grep -qE " (/var)?/run/frr/$PREFIX-| $DEMO_DIR(/| )" /proc/self/mountinfo || bad+=("mounts")
  ! ls -d "$DEMO_DIR" /var/run/frr/"$PREFIX"-* /etc/frr/"$PREFIX"-* >/dev/null 2>&1 || bad+=("files")
  for p in $(ports); do port_free "$p" || bad+=("port $p in use"); done
  [ ${#bad[@]} -eq 0 ] || die "left behind: ${bad[*]}"
  say "down: no namespaces, processes, devices, mounts or files of the demo left, ports $(ports | tr ' ' ',') free"
}

case ${1:-up} in
  up) cmd_up ;;
  _fabric) cmd_fabric ;;
  status) cmd_status ;;
  down) cmd_down ;;
  -h | --help | help) sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//' ;;
  *) echo "usage: $0 [up|status|down]" >&2; exit 2 ;;
esac
