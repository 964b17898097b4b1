#!/usr/bin/env bash
# VM lab: Debian's own kernel in a small qemu VM, for the kernel paths this machine's kernel
# lacks (VRF devices, dummy, VLAN, vlan-aware bridges, bonds) and production uses.
#
# The VM has no disk. It boots Debian's linux-image-amd64 (unpacked into the cache, never
# installed as this machine's kernel) with a busybox initramfs, mounts this machine's root
# filesystem read-only over 9p and runs everything from it in a chroot: the same iproute2, FRR,
# test binaries and agents as the host, against the VM's kernel. Writes inside the VM land in
# memory (an overlay on top of the shared root) and vanish with it; only the output directory is
# shared writable, so results come back there.
#
# Usage (as root):
#   vmlab.sh install           qemu, busybox and Debian's kernel (into $EVPN_CACHE/vmlab)
#   vmlab.sh run CMD [ARG...]  boot, run CMD in the VM (in the current directory), power off;
#                              exits with CMD's status. The guest's console goes to stdout.
#
# Environment:
#   EVPN_VMLAB_OUT      output directory, shared writable with the VM (default /tmp/evpn-vmlab);
#                       CMD's status lands in its file `status`
#   EVPN_VMLAB_CPUS     virtual CPUs (default 2)     EVPN_VMLAB_MEM  MiB of memory (default 1536)
#   EVPN_VMLAB_TIMEOUT  seconds before the VM is killed (default 1200)
#   EVPN_VMLAB_ENV      names of variables passed on to CMD (space separated)
#   EVPN_VMLAB_FORWARD  TCP ports of the host's loopback that CMD finds on the VM's loopback
#                       (space separated), e.g. a control plane's apiserver port
#   EVPN_CACHE          cache directory (default ~/.cache/evpn-operator)
#
# Inside the VM the host's loopback is reachable at 10.0.2.2 (qemu user networking), and the
# ports in EVPN_VMLAB_FORWARD are forwarded from the VM's loopback to it, so CMD can use a control
# plane running on the host with the host's kubeconfigs (127.0.0.1, as its certificate says). The
# VM has no other way out (no default route).
#
# Why things are the way they are:
# - Software emulation (TCG), not KVM: KVM guests hang on this machine's hypervisor (with
#   `-cpu host` qemu aborts setting an MSR).
# - mitigations=off: with page-table isolation every system call flushes the emulator's TLB;
#   starting `ip` took 0.38 s instead of 0.13 s.
# - Kernel modules are loaded by this machine's kmod `modprobe -d` from the unpacked package
#   (modules.dep made by `depmod -b`), also when the kernel asks for one itself: the initramfs
#   holds only what mounting the shared root needs.
# - /run is the VM's own: the host's /run/netns files would look like namespaces to `ip netns`.
set -euo pipefail

EVPN_CACHE=${EVPN_CACHE:-$HOME/.cache/evpn-operator}
VM_CACHE=$EVPN_CACHE/vmlab
KROOT=$VM_CACHE/kernel
OUT=${EVPN_VMLAB_OUT:-/tmp/evpn-vmlab}
CPUS=${EVPN_VMLAB_CPUS:-2}
MEM=${EVPN_VMLAB_MEM:-1536}
TIMEOUT=${EVPN_VMLAB_TIMEOUT:-1200}
PACKAGES=(qemu-system-x86 busybox-static cpio kmod iproute2 socat)
# What the initramfs loads to reach the shared root and the network; everything else is loaded
# on demand from the shared root.
BOOT_MODULES=(virtio_pci 9pnet_virtio 9p overlay virtio_net)
export DEBIAN_FRONTEND=noninteractive

say() { echo "[vmlab $(date +%T)] $*" >&2; }
die() { say "error: $*"; exit 1; }

# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

kernel_version() { cat "$KROOT/version" 2>/dev/null; }

# Debian's current kernel package, unpacked into the cache: the image and its modules.
install_kernel() {
  [ -n "$(kernel_version)" ] && return 0
  local pkg tmp kv
  pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ {print $2; exit}')
  if [ -z "$pkg" ]; then
    apt-get update -qq
    pkg=$(apt-cache depends linux-image-amd64 | awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ {print $2; exit}')
  fi
  [ -n "$pkg" ] || die "cannot tell which package linux-image-amd64 stands for"
  say "unpacking $pkg into $KROOT (not installed as this machine's kernel)"
  tmp=$(mktemp -d)
  (cd "$tmp" && apt-get download -qq "$pkg" >/dev/null 2>&1) || die "apt-get download $pkg failed"
  rm -rf "$KROOT"
  dpkg-deb -x "$tmp"/*.deb "$KROOT"
  rm -rf "$tmp"
  kv=$(basename "$(ls -d "$KROOT"/lib/modules/*)")
  depmod -b "$KROOT" "$kv"
  echo "$kv" >"$KROOT/version"
}

cmd_install() {
  [ "$(id -u)" = 0 ] || die "must run as root (apt)"
  apt_install "${PACKAGES[@]}"
  mkdir -p "$VM_CACHE"
  install_kernel
  say "kernel $(kernel_version), $(qemu-system-x86_64 --version | head -1)"
}

# The initramfs: busybox, the boot modules in load order, and the init below.
make_initramfs() {
  local kv=$1 dir=$OUT/initramfs line m n=0
  rm -rf "$dir"
  mkdir -p "$dir"/{bin,mods,proc,sys,dev,lower,rw,root}
  cp /bin/busybox "$dir/bin/busybox"
  : >"$dir/mods/order"
  while read -r line; do
    case $line in
      insmod\ *)
        m=${line#insmod }; m=${m%% *}
        n=$((n + 1))
        cp "$m" "$dir/mods/$n.ko"
        echo "$n.ko" >>"$dir/mods/order" ;;
    esac
  done < <(modprobe -a -D -d "$KROOT" -S "$kv" "${BOOT_MODULES[@]}")
  cat >"$dir/init" <<EOF
#!/bin/busybox sh
KROOT=$KROOT
OUT=$OUT
EOF
  cat >>"$dir/init" <<'EOF'
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
fail() { echo "vmlab init: $*"; poweroff -f; }
# insmod refuses a module twice (shared dependencies): only the first load counts.
for m in $(cat /mods/order); do insmod /mods/$m 2>/dev/null; done
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose hostroot /lower || fail "no shared root"
mount -t tmpfs -o mode=755 rw /rw && mkdir /rw/upper /rw/work
mount -t overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work root /root || fail "no overlay"
for d in proc sys dev run; do mount --make-private /root/$d 2>/dev/null; done
mount -t proc proc /root/proc; mount -t sysfs sys /root/sys; mount -t devtmpfs dev /root/dev
mkdir -p /root/dev/pts /root/dev/shm; mount -t devpts devpts /root/dev/pts; mount -t tmpfs shm /root/dev/shm
# What udev would make: bash's process substitution needs /dev/fd.
ln -s /proc/self/fd /root/dev/fd; ln -s fd/0 /root/dev/stdin; ln -s fd/1 /root/dev/stdout; ln -s fd/2 /root/dev/stderr
mount -t tmpfs -o mode=755 run /root/run
mkdir -p /root$OUT && mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 out /root$OUT || fail "no output share"
# Modules the kernel asks for come from the unpacked package, through the host's kmod.
printf '#!/bin/sh\nexec chroot /root /sbin/modprobe -d %s "$@"\n' "$KROOT" >/bin/modprobe-host
chmod +x /bin/modprobe-host; echo /bin/modprobe-host >/proc/sys/kernel/modprobe
echo "vmlab: booted in $(cut -d' ' -f1 /proc/uptime) s"
chroot /root /bin/bash $OUT/guest.sh
echo $? >/root$OUT/status
sync
poweroff -f
EOF
  chmod +x "$dir/init"
  (cd "$dir" && find . | cpio -o -H newc 2>/dev/null | gzip -1) >"$OUT/initramfs.gz"
}

# guest.sh: the guest's side of `run`: network, environment, CMD.
write_guest_script() {
  local v
  {
    echo 'set -u'
    echo 'export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root'
    for v in ${EVPN_VMLAB_ENV:-}; do
      [ -n "${!v+x}" ] && printf 'export %s=%q\n' "$v" "${!v}"
    done
    echo 'ip link set lo up'
    # Renamed: on this kernel `ip link add eth0 netns X` clashes with an eth0 in the caller's
    # namespace, and the labs name their veths eth0.
    echo 'ip link set eth0 name vmnet0 && ip link set vmnet0 up && ip addr add 10.0.2.15/24 dev vmnet0'
    # listening PORT: polled until socat listens, for up to 20 s.
    echo 'listening() { local i; for i in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }'
    for v in ${EVPN_VMLAB_FORWARD:-}; do
      [[ $v =~ ^[0-9]+$ ]] || die "EVPN_VMLAB_FORWARD: not a port: $v"
      echo "socat TCP-LISTEN:$v,bind=127.0.0.1,fork,reuseaddr TCP:10.0.2.2:$v &"
      echo "listening $v || { echo 'vmlab: port $v not forwarded'; exit 1; }"
    done
    printf 'cd %q\n' "$PWD"
    printf '%q ' "$@"
    echo
  } >"$OUT/guest.sh"
}

cmd_run() {
  [ $# -ge 1 ] || die "usage: vmlab.sh run CMD [ARG...]"
  [ "$(id -u)" = 0 ] || die "must run as root"
  local kv t0 rc
  kv=$(kernel_version)
  [ -n "$kv" ] || die "no kernel in $KROOT: run 'vmlab.sh install' first"
  command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 missing: run 'vmlab.sh install' first"
  mkdir -p "$OUT"
  rm -f "$OUT/status"
  make_initramfs "$kv"
  write_guest_script "$@"
  t0=$(date +%s%N)
  say "booting Debian's kernel $kv ($CPUS CPUs, $MEM MiB, TCG)"
  rc=0
  timeout "$TIMEOUT" qemu-system-x86_64 -accel tcg,thread=multi -smp "$CPUS" -m "$MEM" \
    -display none -monitor none -serial stdio -no-reboot -nodefaults \
    -kernel "$KROOT/boot/vmlinuz-$kv" -initrd "$OUT/initramfs.gz" \
    -append "console=ttyS0 quiet panic=-1 mitigations=off" \
    -virtfs local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap \
    -virtfs "local,path=$OUT,mount_tag=out,security_model=none" \
    -netdev user,id=net0 -device virtio-net-pci,netdev=net0 \
    </dev/null || rc=$?
  say "VM ran for $(( ($(date +%s%N) - t0) / 1000000 )) ms"
  [ "$rc" = 124 ] && die "the VM did not finish within ${TIMEOUT}s"
  [ -f "$OUT/status" ] || die "the VM stopped without a result (qemu exit $rc)"
  return "$(cat "$OUT/status")"
}

usage() { sed -n '/^# Usage/,/^# Environment/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit "${1:-2}"; }

case ${1:-} in
  install) cmd_install ;;
  run) shift; cmd_run "$@" ;;
  -h | --help | help) usage 0 ;;
  *) usage ;;
esac
