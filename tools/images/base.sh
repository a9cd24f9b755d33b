#!/usr/bin/env bash
# Local stand-ins for the two upstream images the Dockerfiles start from, for machines that reach no container
# registry (CI here reaches Debian's mirror and PyPI only). Idempotent; prints nothing when both exist.
#   localhost/facegate-base:bookworm  Debian 12 minbase + python3 (3.11) + ca-certificates, made by debootstrap, in
#                                     place of python:3.11-slim-*. The root tarball is the one the Ansible
#                                     and apt checks cache (tools/validate/debian_root.sh), made once for all.
#   localhost/facegate-uv:0.13.9      /uv from uv 0.13.9's PyPI wheel (the Makefile's .uv), in place of
#                                     ghcr.io/astral-sh/uv:0.13.9.
set -euo pipefail
HERE="$(cd "$(dirname "$0")/../.." && pwd)"
PODMAN="${HERE}/tools/images/podman.sh"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
BASE="${FACEGATE_BASE_IMAGE:-localhost/facegate-base:bookworm}"
UV_VERSION="$("${HERE}/.uv/bin/uv" --version | awk '{print $2}')"
UV_IMAGE="localhost/facegate-uv:${UV_VERSION}"

if ! "${PODMAN}" image exists "${BASE}"; then
  [[ "$(id -u)" == 0 ]] || { echo "debootstrap needs root" >&2; exit 2; }
  # shellcheck source=tools/validate/debian_root.sh
  source "${HERE}/tools/validate/debian_root.sh"
  TARBALL="$(debian_root_tarball "${HERE}" "${MIRROR}")"
  echo "==> podman import ${BASE}"
  root="$(mktemp -d /var/tmp/facegate-base.XXXXXX)"
  trap 'rm -rf "${root}"' EXIT
  tar -C "${root}" -xf "${TARBALL}"
  # What the slim Python images leave out too: apt's package lists and caches, docs, man pages, translations.
  rm -rf "${root}"/var/lib/apt/lists/* "${root}"/var/cache/apt/* "${root}"/usr/share/doc/* "${root}"/usr/share/man/* \
    "${root}"/usr/share/locale/* "${root}"/var/log/* "${root}"/etc/resolv.conf
  tar -C "${root}" -c . | "${PODMAN}" import -q --change 'CMD ["/bin/bash"]' --change 'ENV LANG=C.UTF-8' - "${BASE}" >/dev/null
fi

if ! "${PODMAN}" image exists "${UV_IMAGE}"; then
  echo "==> ${UV_IMAGE} from .uv/bin/uv"
  ctx="$(mktemp -d)"
  cp "${HERE}/.uv/bin/uv" "${ctx}/uv"
  printf 'FROM scratch\nCOPY uv /uv\n' >"${ctx}/Containerfile"
  "${PODMAN}" build -q --format docker -t "${UV_IMAGE}" "${ctx}" >/dev/null
  rm -rf "${ctx}"
fi
