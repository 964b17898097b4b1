#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, lints, unit tests, the integration tests
# against a real kube-apiserver + etcd (installed on first use, then reused from the cache), and
# as root the end-to-end lab suites: in network namespaces here, and on Debian's kernel in a VM.
#
#   hack/test.sh                 everything
#   hack/test.sh -p evpn-crds    extra arguments go to `cargo test`
#
# Needs root only the first time, to install the apt packages the control plane is built from.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { echo "==> $*" >&2; }

step "cargo fmt --check"
cargo fmt --all --check
step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

if [ -z "${EVPN_TEST_CONTROL_PLANE:-}" ]; then
  step "control plane"
  bash hack/control-plane.sh install
  # A run directory and ports of its own, so a developer's running control plane is left alone.
  export EVPN_RUN=${TMPDIR:-/tmp}/evpn-operator/test-suite
  export ETCD_PORT=${TEST_ETCD_PORT:-24790} ETCD_PEER_PORT=${TEST_ETCD_PEER_PORT:-24800} API_PORT=${TEST_API_PORT:-17443}
  bash hack/control-plane.sh clean
  trap 'bash hack/control-plane.sh clean' EXIT
  bash hack/control-plane.sh start
  export EVPN_TEST_CONTROL_PLANE=$EVPN_RUN
fi

if [ "$(id -u)" = 0 ]; then
  # FRR, GoBGP and friends for the agent's FRR tests and the end-to-end lab suite (those skip,
  # saying why, when not run as root).
  step "lab packages"
  bash hack/lab.sh install
  # qemu and Debian's kernel for the VM tier (tests/tests/vmlab.rs).
  step "VM lab packages and kernel"
  bash hack/vmlab.sh install
fi

step "cargo test"
cargo test --workspace --locked "$@"
