#!/usr/bin/env bash
# A real Kubernetes control plane on loopback (etcd + kube-apiserver), from Debian packages only.
#
#   hack/control-plane.sh install   apt packages + kube-apiserver v1.20.2 built from Debian's source
#                                   package + etcd from Debian's etcd-server; cached in $EVPN_CACHE
#   hack/control-plane.sh start     certificates, identities, etcd, kube-apiserver; writes $EVPN_RUN/env
#   hack/control-plane.sh stop      stops what start started
#   hack/control-plane.sh status    exit 0 when the apiserver answers /readyz
#
# Identities written by start (kubeconfigs under $EVPN_RUN):
#   admin.kubeconfig   user "evpn-admin", group system:masters (cluster admin)
#   user.kubeconfig    user "evpn-user", no groups: RBAC decides everything it may do
#   operator.kubeconfig  the operator's service account name (system:serviceaccount:evpn-system:evpn-operator)
#   node-<name>.kubeconfig  system:node:<name> in group system:nodes, for agents ($NODE_IDENTITIES)
#
# With OWNER_PID set, start also arranges for everything to be stopped and removed once that
# process exits (the test harness uses this for control planes it starts itself).
#
# The kube-apiserver build takes about 5 minutes on 2 cores and 1.3 GiB of memory; the binaries are
# reused from $EVPN_CACHE (default ~/.cache/evpn-operator) whenever they are present.
set -euo pipefail

EVPN_CACHE=${EVPN_CACHE:-$HOME/.cache/evpn-operator}
BIN_DIR=$EVPN_CACHE/bin
SRC_DIR=$EVPN_CACHE/src
EVPN_RUN=${EVPN_RUN:-/tmp/evpn-operator/control-plane}
ETCD_PORT=${ETCD_PORT:-23790}
ETCD_PEER_PORT=${ETCD_PEER_PORT:-23800}
API_PORT=${API_PORT:-16443}
# Node identities (system:node:NAME, group system:nodes) for agents in tests and the demo.
NODE_IDENTITIES=${NODE_IDENTITIES:-worker-1 worker-2 worker-3}
# Debian bookworm ships 1.20.2 under this version string; its vendor/ tree makes an offline build possible.
K8S_DEB_VERSION=${K8S_DEB_VERSION:-1.20.5+really1.20.2-1.1+deb12u1}
K8S_TREE=$SRC_DIR/kubernetes-1.20.5+really1.20.2
export DEBIAN_FRONTEND=noninteractive
# The apiserver calls webhooks on 127.0.0.1 directly; a proxy in the environment would swallow that.
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY || true
export NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost

say() { echo "[control-plane $(date +%T)] $*" >&2; }
die() { say "error: $*"; exit 1; }

# wait_until SECONDS CMD...: poll CMD every 100 ms until it succeeds or the deadline passes.
wait_until() {
  local deadline=$(( $(date +%s) + $1 )); shift
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$deadline" ] || return 1
    sleep 0.1
  done
}

# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

enable_deb_src() {
  apt-cache showsrc kubernetes 2>/dev/null | grep -qxF "Version: $K8S_DEB_VERSION" && return 0
  say "enabling source packages for the configured Debian mirror"
  if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    sed -e 's/^Types: .*/Types: deb-src/' /etc/apt/sources.list.d/debian.sources \
      > /etc/apt/sources.list.d/evpn-operator-src.sources
  else
    grep -h '^deb ' /etc/apt/sources.list | sed 's/^deb /deb-src /' > /etc/apt/sources.list.d/evpn-operator-src.list
  fi
  apt-get update -qq
}

build_etcd() {
  [ -x "$BIN_DIR/etcd" ] && return 0
  say "extracting etcd from Debian's etcd-server package (no service is installed)"
  local d; d=$(mktemp -d)
  ( cd "$d" && apt-get download -qq etcd-server >/dev/null 2>&1 && dpkg-deb -x etcd-server_*.deb x )
  install -m 0755 "$d/x/usr/bin/etcd" "$BIN_DIR/etcd"
  rm -rf "$d"
}

build_apiserver() {
  [ -x "$BIN_DIR/kube-apiserver" ] && return 0
  enable_deb_src
  apt_install golang-1.19-go golang-github-modern-go-reflect2-dev dpkg-dev make rsync
  if [ ! -d "$K8S_TREE/vendor" ]; then
    say "fetching the kubernetes $K8S_DEB_VERSION source package"
    ( cd "$SRC_DIR" && apt-get source -qq "kubernetes=$K8S_DEB_VERSION" >/dev/null 2>&1 ) \
      || die "apt-get source kubernetes=$K8S_DEB_VERSION failed"
  fi
  cd "$K8S_TREE"
  # reflect2 1.0.1 (vendored) corrupts maps under Go >= 1.18; Debian packages the fixed 1.0.2.
  local r=vendor/github.com/modern-go/reflect2
  if [ ! -f "$r/go_above_118.go" ]; then
    rm -f "$r"/*.go "$r"/*.s
    cp /usr/share/gocode/src/github.com/modern-go/reflect2/*.go /usr/share/gocode/src/github.com/modern-go/reflect2/*.s "$r/"
  fi
  cat > "$SRC_DIR/version.env" <<'EOF'
KUBE_GIT_COMMIT='faecb196815e248d3ecfb03c680a4507229c2a56'
KUBE_GIT_TREE_STATE='clean'
KUBE_GIT_VERSION='v1.20.2'
KUBE_GIT_MAJOR='1'
KUBE_GIT_MINOR='20'
EOF
  mkdir -p .go/src/k8s.io "$EVPN_CACHE/gohome"
  ln -sfn ../../.. .go/src/k8s.io/kubernetes
  say "building kube-apiserver v1.20.2 (about 5 minutes on 2 cores)"
  env PATH="/usr/lib/go-1.19/bin:$PATH" GOPATH="$K8S_TREE/.go" CGO_ENABLED=0 HOME="$EVPN_CACHE/gohome" \
    KUBE_GIT_VERSION_FILE="$SRC_DIR/version.env" make WHAT=cmd/kube-apiserver >"$SRC_DIR/build.log" 2>&1 \
    || { tail -30 "$SRC_DIR/build.log" >&2; die "kube-apiserver build failed (log: $SRC_DIR/build.log)"; }
  install -m 0755 _output/bin/kube-apiserver "$BIN_DIR/kube-apiserver"
  # The source tree and Go caches are 2+ GiB and only needed to rebuild; keep the binary only.
  rm -rf "$K8S_TREE" "$EVPN_CACHE/gohome"
}

cmd_install() {
  local t0; t0=$(date +%s)
  mkdir -p "$BIN_DIR" "$SRC_DIR"
  apt_install openssl curl ca-certificates
  command -v kubectl >/dev/null || apt_install kubernetes-client
  build_etcd
  build_apiserver
  say "kube-apiserver $("$BIN_DIR/kube-apiserver" --version | awk '{print $2}'), etcd $("$BIN_DIR/etcd" --version | awk 'NR==1{print $3}') ready in $(( $(date +%s) - t0 ))s"
}

make_pki() {
  local p=$EVPN_RUN/pki
  [ -f "$p/done" ] && return 0
  mkdir -p "$p"
  (
    cd "$p"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 365 -subj "/CN=evpn-local-ca" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr -subj "/CN=kube-apiserver" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc\nextendedKeyUsage=serverAuth\n' > apiserver.ext
    openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out apiserver.crt -days 365 \
      -extfile apiserver.ext 2>/dev/null
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
    # Static bearer tokens; the file format is token,user,uid,"group1,group2".
    {
      printf '%s,evpn-admin,uid-evpn-admin,"system:masters"\n' "$(openssl rand -hex 16)"
      printf '%s,evpn-user,uid-evpn-user\n' "$(openssl rand -hex 16)"
      printf '%s,system:serviceaccount:evpn-system:evpn-operator,uid-evpn-operator,"system:serviceaccounts,system:serviceaccounts:evpn-system"\n' \
        "$(openssl rand -hex 16)"
      for node in $NODE_IDENTITIES; do
        printf '%s,system:node:%s,uid-node-%s,"system:nodes"\n' "$(openssl rand -hex 16)" "$node" "$node"
      done
    } > tokens.csv
    chmod 600 ./*.key tokens.csv
    touch done
  )
}

token_of() { awk -F, -v u="$1" '$2==u{print $1}' "$EVPN_RUN/pki/tokens.csv"; }

# kubeconfig FILE USER TOKEN
kubeconfig() {
  cat > "$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: https://127.0.0.1:$API_PORT
    certificate-authority: $EVPN_RUN/pki/ca.crt
contexts:
- name: local
  context: {cluster: local, user: $2}
current-context: local
users:
- name: $2
  user:
    token: $3
EOF
  chmod 600 "$1"
}

apiserver_ready() {
  curl -fs --cacert "$EVPN_RUN/pki/ca.crt" -H "Authorization: Bearer $1" "https://127.0.0.1:$API_PORT/readyz"
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

cmd_start() {
  [ -x "$BIN_DIR/kube-apiserver" ] && [ -x "$BIN_DIR/etcd" ] || die "binaries missing in $BIN_DIR: run '$0 install' first"
  mkdir -p "$EVPN_RUN"
  make_pki
  local admin_token user_token
  admin_token=$(token_of evpn-admin)
  user_token=$(token_of evpn-user)
  if [ -f "$EVPN_RUN/kube-apiserver.pid" ] && apiserver_ready "$admin_token" >/dev/null 2>&1; then
    say "already running; source $EVPN_RUN/env"
    return 0
  fi
  local port
  for port in "$ETCD_PORT" "$ETCD_PEER_PORT" "$API_PORT"; do
    port_free "$port" || die "port $port on 127.0.0.1 is taken (stale run? try '$0 stop', or set ETCD_PORT/API_PORT)"
  done
  local t0; t0=$(date +%s%N)
  "$BIN_DIR/etcd" --name evpn-local --data-dir "$EVPN_RUN/etcd-data" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "evpn-local=http://127.0.0.1:$ETCD_PEER_PORT" \
    >"$EVPN_RUN/etcd.log" 2>&1 &
  echo $! > "$EVPN_RUN/etcd.pid"
  wait_until 30 curl -fs "http://127.0.0.1:$ETCD_PORT/health" || { tail -20 "$EVPN_RUN/etcd.log" >&2; die "etcd did not become healthy"; }
  local t1; t1=$(date +%s%N)
  # --insecure-port=0: v1.20 would otherwise also serve an unauthenticated port on 127.0.0.1:8080.
  "$BIN_DIR/kube-apiserver" \
    --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$API_PORT" --insecure-port=0 \
    --cert-dir="$EVPN_RUN/pki" --tls-cert-file="$EVPN_RUN/pki/apiserver.crt" --tls-private-key-file="$EVPN_RUN/pki/apiserver.key" \
    --client-ca-file="$EVPN_RUN/pki/ca.crt" --token-auth-file="$EVPN_RUN/pki/tokens.csv" \
    --authorization-mode=RBAC --anonymous-auth=false \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$EVPN_RUN/pki/sa.pub" --service-account-signing-key-file="$EVPN_RUN/pki/sa.key" \
    --service-cluster-ip-range=10.96.0.0/24 --endpoint-reconciler-type=none \
    --disable-admission-plugins=ServiceAccount --profiling=false \
    >"$EVPN_RUN/kube-apiserver.log" 2>&1 &
  echo $! > "$EVPN_RUN/kube-apiserver.pid"
  wait_until 120 apiserver_ready "$admin_token" || { tail -30 "$EVPN_RUN/kube-apiserver.log" >&2; die "kube-apiserver did not become ready"; }
  local t2; t2=$(date +%s%N)
  kubeconfig "$EVPN_RUN/admin.kubeconfig" evpn-admin "$admin_token"
  kubeconfig "$EVPN_RUN/user.kubeconfig" evpn-user "$user_token"
  kubeconfig "$EVPN_RUN/operator.kubeconfig" evpn-operator "$(token_of system:serviceaccount:evpn-system:evpn-operator)"
  local node
  for node in $NODE_IDENTITIES; do
    kubeconfig "$EVPN_RUN/node-$node.kubeconfig" "node-$node" "$(token_of "system:node:$node")"
  done
  cat > "$EVPN_RUN/env" <<EOF
export KUBECONFIG=$EVPN_RUN/admin.kubeconfig
export EVPN_KUBECONFIG_ADMIN=$EVPN_RUN/admin.kubeconfig
export EVPN_KUBECONFIG_USER=$EVPN_RUN/user.kubeconfig
EOF
  if [ -n "${OWNER_PID:-}" ]; then
    # Tests that start their own control plane pass their PID: tear it down once they exit,
    # however they exit.
    setsid bash -c "tail --pid=$OWNER_PID -f /dev/null; EVPN_RUN=$EVPN_RUN '$0' clean" </dev/null >/dev/null 2>&1 &
  fi
  say "etcd healthy in $(( (t1 - t0) / 1000000 )) ms, kube-apiserver ready $(( (t2 - t1) / 1000000 )) ms later"
  say "use it: source $EVPN_RUN/env"
}

cmd_stop() {
  local name pid
  for name in kube-apiserver etcd; do
    [ -f "$EVPN_RUN/$name.pid" ] || continue
    pid=$(cat "$EVPN_RUN/$name.pid")
    if kill "$pid" 2>/dev/null; then
      wait_until 10 bash -c "! kill -0 $pid" || kill -9 "$pid" 2>/dev/null || true
      say "stopped $name ($pid)"
    fi
    rm -f "$EVPN_RUN/$name.pid"
  done
}

cmd_status() {
  local token
  token=$(token_of evpn-admin 2>/dev/null) || exit 1
  apiserver_ready "$token" >/dev/null
}

case "${1:-}" in
  install) cmd_install ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  clean) cmd_stop; rm -rf "$EVPN_RUN" ;;
  *) echo "usage: $0 install|start|stop|status|clean" >&2; exit 2 ;;
esac
