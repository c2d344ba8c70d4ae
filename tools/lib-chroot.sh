# shellcheck shell=bash disable=SC2034
# Shared helpers for tools/mkroot, tools/clone-root and tools/boot-probe (sourced, not run).
# Callers set `set -euo pipefail` and PROG (used in messages) before sourcing.

VFIOINIT_CACHE=${VFIOINIT_CACHE:-$HOME/.cache/vfioinit}
ROOTS_DIR=$VFIOINIT_CACHE/roots
TOOLS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
FLAVOURS="initramfs-tools dracut mkinitcpio multi mkinitcpio-uki mkinitcpio-systemd dracut-uki grub kinstall-uki kinstall-bls ostree"

die() { echo "$PROG: $*" >&2; exit 1; }
say() { echo "$PROG: $*" >&2; }

valid_flavour() {
  case " $FLAVOURS " in *" $1 "*) return 0 ;; esac
  return 1
}

# Run a command chrooted into ROOT inside a private mount namespace, with /proc, /sys and /dev
# mounted there. The mounts belong to the namespace: they vanish when the command ends, however
# it ends, so nothing is ever left mounted on the host.
#   chroot_run ROOT CMD [ARG...]
chroot_run() {
  local r=$1; shift
  [ -d "$r" ] || die "chroot_run: $r is not a directory"
  unshare --mount --propagation private -- /bin/sh -c '
    r=$1; shift
    mount -t proc proc "$r/proc" || exit 97
    mount --rbind /sys "$r/sys" || exit 97
    mount --rbind /dev "$r/dev" || exit 97
    exec chroot "$r" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
      TERM=dumb DEBIAN_FRONTEND=noninteractive "$@"
  ' chroot_run "$r" "$@"
}

# Timing of steps: `step NAME CMD...` runs CMD and prints how long it took (stderr), and keeps
# "NAME seconds" lines in $TIMINGS (a file) when that is set.
now() { date +%s.%N; }
step() {
  local name=$1; shift
  local t0 t1 secs
  t0=$(now)
  say "step $name ..."
  "$@"
  t1=$(now)
  secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
  say "step $name: ${secs}s"
  if [ -n "${TIMINGS:-}" ]; then echo "$name $secs" >>"$TIMINGS"; fi
}

# Kernel versions installed in ROOT (those with both modules and a /boot/vmlinuz-KVER), sorted.
root_kernels() {
  local r=$1 d k
  for d in "$r"/lib/modules/*/; do
    [ -d "$d" ] || continue
    k=$(basename "$d")
    [ -e "$r/boot/vmlinuz-$k" ] && echo "$k"
  done | sort
}

# Path (inside root) of the image the flavour's generator builds for KVER.
image_for() {
  case $1 in
    mkinitcpio|mkinitcpio-systemd) echo "/boot/initramfs-$2.img" ;;
    mkinitcpio-uki) echo "/efi/EFI/Linux/arch-$2.efi" ;;
    ostree) echo "/usr/lib/modules/$2/initramfs.img" ;;
    dracut-uki) echo "/boot/efi/EFI/Linux/linux-$2-Default.efi" ;;
    kinstall-uki) echo "/boot/efi/EFI/Linux/debian-$2.efi" ;;
    kinstall-bls) echo "/boot/efi/debian/$2/initrd.img-$2" ;;
    *) echo "/boot/initrd.img-$2" ;;
  esac
}
