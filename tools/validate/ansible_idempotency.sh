#!/usr/bin/env bash
# Idempotency of the `common` and `containerd` roles, for real: a fresh Debian 12 root made by debootstrap (cached as
# a tarball under .tools/), both roles applied twice through ansible's community.general.chroot connection, and the
# second run must report changed=0. Needs root (chroot, mounts) and debootstrap; reaches only Debian's mirror.
#
# Skipped tags, and why:
#   kernel    modprobe, sysctl --system, swapoff and systemd units act on the running kernel/init; in a chroot
#             they would act on the host's. The files that persist the same settings are still written and checked.
#   k8s_repo  pkgs.k8s.io is not reachable from CI (only Debian's mirror is).
#   upstream_download  github.com (the containerd release tarball) is not reachable from CI either; its tag is
#             checked by tools/validate/check_pins.py.
set -euo pipefail

HERE="$(cd "$(dirname "$0")/../.." && pwd)"
VENV="${HERE}/.venv-validate/bin"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"

[[ "$(id -u)" == 0 ]] || { echo "needs root (chroot and mounts)" >&2; exit 2; }
command -v debootstrap >/dev/null || { echo "needs debootstrap (apt-get install debootstrap)" >&2; exit 2; }
[[ -x "${VENV}/ansible-playbook" ]] || { echo "missing ${VENV}/ansible-playbook: run make validate-tools" >&2; exit 2; }

# shellcheck source=tools/validate/debian_root.sh
source "${HERE}/tools/validate/debian_root.sh"
TARBALL="$(debian_root_tarball "${HERE}" "${MIRROR}")"

ROOTFS="$(mktemp -d /var/tmp/facegate-root.XXXXXX)"
cleanup() {
  umount "${ROOTFS}/proc" 2>/dev/null || true
  rm -rf "${ROOTFS}"
}
trap cleanup EXIT
tar -C "${ROOTFS}" -xf "${TARBALL}"
mount -t proc proc "${ROOTFS}/proc"
cp /etc/resolv.conf "${ROOTFS}/etc/resolv.conf"
# No service may start inside the chroot (package postinst scripts would try): Debian's policy-rc.d convention.
printf '#!/bin/sh\nexit 101\n' >"${ROOTFS}/usr/sbin/policy-rc.d"
chmod 0755 "${ROOTFS}/usr/sbin/policy-rc.d"

work="$(mktemp -d)"
trap 'cleanup; rm -rf "${work}"' EXIT
printf 'debian_root:\n  hosts:\n    %s:\n      ansible_connection: community.general.chroot\n      ansible_python_interpreter: /usr/bin/python3\n' \
  "${ROOTFS}" >"${work}/inventory.yml"

export ANSIBLE_ROLES_PATH="${HERE}/ansible/roles" ANSIBLE_HOME="${HERE}/.tools/ansible" ANSIBLE_NOCOLOR=1
export ANSIBLE_LOCAL_TEMP="${work}/tmp" ANSIBLE_REMOTE_TEMP=/tmp ANSIBLE_RETRY_FILES_ENABLED=false
run() {
  "${VENV}/ansible-playbook" -i "${work}/inventory.yml" "${HERE}/tools/validate/idempotency-playbook.yml" \
    -e "@${HERE}/ansible/group_vars/all/versions.yml" -e "@${HERE}/ansible/group_vars/all/main.yml" \
    --skip-tags kernel,k8s_repo,upstream_download | tee "${work}/run-$1.log"
}

echo "==> first run (installs)"
run 1
changed_first="$(sed -n 's/.* changed=\([0-9]*\).*/\1/p' "${work}/run-1.log" | tail -1)"
echo "==> second run (must change nothing)"
run 2
changed="$(sed -n 's/.* changed=\([0-9]*\).*/\1/p' "${work}/run-2.log" | tail -1)"
failed="$(sed -n 's/.* failed=\([0-9]*\).*/\1/p' "${work}/run-2.log" | tail -1)"
echo "first run changed=${changed_first}; second run changed=${changed} failed=${failed}"
if [[ "${changed_first}" == 0 ]]; then
  echo "the first run changed nothing: the roles were not applied to a fresh root" >&2
  exit 1
fi
if [[ "${changed}" != 0 || "${failed}" != 0 ]]; then
  echo "NOT idempotent: the second run changed ${changed} task(s):" >&2
  grep -E '^changed:' "${work}/run-2.log" >&2 || true
  exit 1
fi
echo "idempotent: common + containerd on Debian bookworm, second run changed=0"
