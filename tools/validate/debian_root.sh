#!/usr/bin/env bash
# Sourced by ansible_idempotency.sh and apt_simulate.sh: a minimal Debian 12 root made by debootstrap, cached as a
# tarball under .tools/ (built once, reused by both checks).
#   debian_root_tarball HERE MIRROR   -> prints the tarball's path, building it first when missing
debian_root_tarball() {
  local here="$1" mirror="$2" cache tarball build
  cache="${here}/.tools/debootstrap"
  tarball="${cache}/bookworm-minbase.tar"
  if [[ ! -s "${tarball}" ]]; then
    echo "==> debootstrap bookworm (cached in ${tarball})" >&2
    mkdir -p "${cache}"
    build="$(mktemp -d "${cache}/build.XXXXXX")"
    # python3 + python3-apt: what ansible's apt modules need inside the target.
    debootstrap --variant=minbase --include=python3,python3-apt,ca-certificates bookworm "${build}" "${mirror}" \
      >"${cache}/debootstrap.log" 2>&1 || { tail -20 "${cache}/debootstrap.log" >&2; rm -rf "${build}"; return 1; }
    tar -C "${build}" -cf "${tarball}.tmp" . && mv "${tarball}.tmp" "${tarball}"
    rm -rf "${build}"
  fi
  echo "${tarball}"
}
