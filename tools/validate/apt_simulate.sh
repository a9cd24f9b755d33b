#!/usr/bin/env bash
# Debian pins resolved for real: `apt-get install --simulate` of every package a role pins to a versions.yml
# variable, inside the debootstrap root ansible_idempotency.sh uses, with every pocket and component the roles enable
# (bookworm, -updates, -security: main, plus the nvidia role's contrib/non-free/non-free-firmware sources). A version
# that is not in Debian's archive, or not in an enabled pocket, makes apt exit non-zero.
# Left out: kubeadm/kubelet/kubectl (pkgs.k8s.io) and NVIDIA's container toolkit (nvidia.github.io): neither
# repository is reachable from CI; check_pins.py checks their upstream tags instead.
#
#   tools/validate/apt_simulate.sh [EXTRA_PACKAGE=VERSION ...]   (extra pins: tests show a wrong one fails)
set -euo pipefail

HERE="$(cd "$(dirname "$0")/../.." && pwd)"
ROOT="$(cd "${FACEGATE_ROOT:-${HERE}}" && pwd)"
VENV="${HERE}/.venv-validate/bin"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"

[[ "$(id -u)" == 0 ]] || { echo "needs root (chroot)" >&2; exit 2; }
command -v debootstrap >/dev/null || { echo "needs debootstrap (apt-get install debootstrap)" >&2; exit 2; }
[[ -x "${VENV}/python" ]] || { echo "missing ${VENV}/python: run make validate-tools" >&2; exit 2; }

# The pins and the sources, read from the roles themselves.
work="$(mktemp -d)"
"${VENV}/python" - "${ROOT}" "${work}" <<'PY'
import re, sys
from pathlib import Path
import yaml

root, work = Path(sys.argv[1]), Path(sys.argv[2])
versions = yaml.safe_load((root / "ansible/group_vars/all/versions.yml").read_text())
# Repositories CI cannot reach: their pins are checked against upstream tags by check_pins.py.
UNREACHABLE = {"kubernetes_apt_version", "nvidia_container_toolkit_version"}
pins = []
for path in sorted((root / "ansible/roles").glob("*/tasks/*.yml")):
    for task in yaml.safe_load(path.read_text()) or []:
        args = task.get("ansible.builtin.apt") or {}
        names = args.get("name", [])
        for name in names if isinstance(names, list) else [names]:
            m = re.fullmatch(r"([\w.+-]+)=\{\{\s*(\w+)\s*\}\}", str(name))
            if m and m.group(2) not in UNREACHABLE:
                pins.append(f"{m.group(1)}={versions[m.group(2)]}")
(work / "pins").write_text("\n".join(sorted(set(pins))) + "\n")
defaults = yaml.safe_load((root / "ansible/roles/nvidia/defaults/main.yml").read_text())
lines = []
# What a Debian 12 install enables (main in each pocket), then the role's extra components.
for uri, suite in (("http://deb.debian.org/debian", "bookworm bookworm-updates"),
                   ("http://deb.debian.org/debian-security", "bookworm-security")):
    lines.append(f"Types: deb\nURIs: {uri}\nSuites: {suite}\nComponents: main\n"
                 "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n")
for source in defaults["nvidia_debian_nonfree_sources"]:
    lines.append(f"Types: deb\nURIs: {source['uri']}\nSuites: {' '.join(source['suites'])}\n"
                 "Components: contrib non-free non-free-firmware\n"
                 "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n")
(work / "facegate.sources").write_text("\n".join(lines))
PY
mapfile -t pins <"${work}/pins"
pins+=("$@")
[[ ${#pins[@]} -gt 0 ]] || { echo "no Debian pins found in the roles" >&2; exit 1; }

# shellcheck source=tools/validate/debian_root.sh
source "${HERE}/tools/validate/debian_root.sh"
TARBALL="$(debian_root_tarball "${HERE}" "${MIRROR}")"
ROOTFS="$(mktemp -d /var/tmp/facegate-apt.XXXXXX)"
trap 'rm -rf "${ROOTFS}" "${work}"' EXIT
tar -C "${ROOTFS}" -xf "${TARBALL}"
cp /etc/resolv.conf "${ROOTFS}/etc/resolv.conf"
rm -f "${ROOTFS}/etc/apt/sources.list"
cp "${work}/facegate.sources" "${ROOTFS}/etc/apt/sources.list.d/facegate.sources"

echo "==> apt-get update (pockets and components the roles enable)"
grep -E '^(URIs|Suites|Components)' "${work}/facegate.sources" | paste - - - | sed 's/^/    /'
chroot "${ROOTFS}" apt-get update -q -o Acquire::Languages=none >"${work}/update.log" 2>&1 \
  || { cat "${work}/update.log" >&2; exit 1; }
echo "==> apt-get install --simulate ${pins[*]}"
if ! chroot "${ROOTFS}" apt-get install --simulate -q --no-install-recommends "${pins[@]}" >"${work}/sim.log" 2>&1; then
  grep -E '^(E|W):' "${work}/sim.log" >&2 || tail -20 "${work}/sim.log" >&2
  echo "Debian pins do not resolve (see above)" >&2
  exit 1
fi
for pin in "${pins[@]}"; do
  grep -q "^Inst ${pin%%=*} (${pin#*=} " "${work}/sim.log" \
    || { echo "apt would not install ${pin}" >&2; grep "^Inst ${pin%%=*} " "${work}/sim.log" >&2; exit 1; }
  grep "^Inst ${pin%%=*} (" "${work}/sim.log" | sed 's/^/    /'
done
echo "Debian pins resolve: ${pins[*]}"
