# shellcheck shell=bash
# Shell helpers shared by the hack/ scripts; sourced, never run. The caller defines `say`.

# Installs the Debian packages of "$@" that are missing (one apt-get update, only when needed).
apt_install() {
  local missing=() p
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}
