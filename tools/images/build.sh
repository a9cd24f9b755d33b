#!/usr/bin/env bash
# Build the images with podman: `build.sh serve`, `build.sh pipeline-cpu`, `build.sh pipeline` (CUDA; needs a
# registry for its base), or several; with no argument, the serve image and the pipeline image (its CUDA variant
# where the registry answers, else its CPU variant). Prints one JSON line per image (size, build seconds, load).
#
# Without a reachable registry (FACEGATE_LOCAL_BASE=1; by default when Docker Hub does not answer) the upstream
# images are replaced by the local ones of tools/images/base.sh, and torch for the CPU pipeline image comes from a PyPI-style index served on
# 127.0.0.1 from pip's find-links folder when that folder holds the wheel (download.pytorch.org is unreachable on
# this machine kind); elsewhere from https://download.pytorch.org/whl/cpu. Each build runs with --network host so
# the build can reach that index, PyPI and Debian's mirror.
set -euo pipefail
HERE="$(cd "$(dirname "$0")/../.." && pwd)"
cd "${HERE}"
PODMAN="${HERE}/tools/images/podman.sh"
VERSION="$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -n1)"
REVISION="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
LOCAL_BASE="${FACEGATE_LOCAL_BASE:-}"
if [[ -z "${LOCAL_BASE}" ]]; then  # any HTTP answer (401 included) means the registry is reachable
  if python3 -c "import urllib.request as u, urllib.error as e
try: u.urlopen('https://registry-1.docker.io/v2/', timeout=5)
except e.HTTPError: pass" 2>/dev/null; then LOCAL_BASE=0; else LOCAL_BASE=1; fi
fi
OUT="${HERE}/build/images"
mkdir -p "${OUT}"

# FACEGATE_BUILD_FLAGS: more `podman build` flags (--no-cache to time a cold build).
# shellcheck disable=SC2206
common=(build --format docker --network host --build-arg "VERSION=${VERSION}" --build-arg "REVISION=${REVISION}"
        ${FACEGATE_BUILD_FLAGS:-})
# Extra CAs for the build (TLS-intercepting proxies): EXTRA_CA_FILE (PEM), else the certificates this host trusts
# beyond Debian's ca-certificates set (how such proxies are usually trusted; this machine kind has one).
extra_ca="$(python3 - "${EXTRA_CA_FILE:-}" <<'PY'
import glob, re, sys
pem = re.compile(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)
if sys.argv[1]:
    print("\n".join(pem.findall(open(sys.argv[1]).read())))
    sys.exit()
known = {"".join(m.split()) for f in glob.glob("/usr/share/ca-certificates/**/*.crt", recursive=True)
         for m in pem.findall(open(f).read())}
try:
    bundle = open("/etc/ssl/certs/ca-certificates.crt").read()
except OSError:
    sys.exit()
print("\n".join(m for m in pem.findall(bundle) if "".join(m.split()) not in known))
PY
)"
[[ -n "${extra_ca}" ]] && common+=(--build-arg "EXTRA_CA_CERTS=${extra_ca}")
if [[ "${LOCAL_BASE}" == 1 ]]; then
  tools/images/base.sh
  uv_version="$(.uv/bin/uv --version | awk '{print $2}')"
  common+=(--pull=never --build-arg "BASE_IMAGE=localhost/facegate-base:bookworm"
           --build-arg "UV_IMAGE=localhost/facegate-uv" --build-arg "UV_VERSION=${uv_version}")
fi

INDEX_PID=""
cleanup() { if [[ -n "${INDEX_PID}" ]]; then kill "${INDEX_PID}" 2>/dev/null || true; fi; }
trap cleanup EXIT

# A PEP 503 index with one project, torch, holding pip's find-links copy of the locked CPU wheel (name and sha256
# checked against uv.lock by tools/locked_wheel.py). Sets TORCH_LOCAL_INDEX to its URL, or leaves it empty when
# there is no such wheel. (Not a $(...) subshell: the server must be this shell's child, to be stopped on exit.)
TORCH_LOCAL_INDEX=""
local_torch_index() {
  local links wheel dir port
  links="$(python3 -m pip config list 2>/dev/null | sed -n "s/^[^=]*find-links='\([^']*\)'.*/\1/p" | head -n1)"
  [[ -n "${links}" ]] || return 0
  wheel="$(python3 tools/locked_wheel.py torch "${links}")" || return 0
  dir="${OUT}/torch-index"
  rm -rf "${dir}" && mkdir -p "${dir}/simple/torch"
  ln -s "${wheel}" "${dir}/simple/torch/$(basename "${wheel}")"
  port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  python3 -m http.server --bind 127.0.0.1 --directory "${dir}" "${port}" >/dev/null 2>&1 &
  INDEX_PID=$!
  for _ in $(seq 50); do python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:${port}/simple/torch/')" \
    2>/dev/null && break; sleep 0.1; done
  TORCH_LOCAL_INDEX="http://127.0.0.1:${port}/simple"
}

build_one() {
  local name="$1" tag args=() start secs size
  case "${name}" in
    serve) tag="ghcr.io/facegate/facegate-serve:${VERSION}"; args=(-f docker/serve.Dockerfile) ;;
    pipeline) tag="ghcr.io/facegate/facegate-pipeline:${VERSION}"; args=(-f docker/pipeline.Dockerfile) ;;
    pipeline-cpu)
      tag="ghcr.io/facegate/facegate-pipeline:${VERSION}-cpu"; args=(-f docker/pipeline.Dockerfile)
      if [[ "${LOCAL_BASE}" == 1 && -z "${TORCH_LOCAL_INDEX}" ]]; then local_torch_index; fi
      args+=(--build-arg "TORCH_INDEX=${TORCH_LOCAL_INDEX:-https://download.pytorch.org/whl/cpu}")
      [[ "${LOCAL_BASE}" == 1 ]] || args+=(--build-arg "BASE_IMAGE=docker.io/library/python:3.11-slim-trixie") ;;
    *) echo "unknown image: ${name} (serve, pipeline, pipeline-cpu)" >&2; exit 2 ;;
  esac
  echo "==> ${tag}" >&2
  start="$(date +%s.%N)"
  "${PODMAN}" "${common[@]}" "${args[@]}" -t "${tag}" . >"${OUT}/${name}.build.log" 2>&1 \
    || { tail -40 "${OUT}/${name}.build.log" >&2; exit 1; }
  secs="$(python3 -c "import time; print(round(time.time() - ${start}, 1))")"
  size="$("${PODMAN}" image inspect --format '{{.Size}}' "${tag}")"
  printf '{"image": "%s", "size_mb": %s, "build_s": %s, "loadavg": "%s"}\n' \
    "${tag}" "$((size / 1000000))" "${secs}" "$(cut -d' ' -f1-3 /proc/loadavg)" | tee "${OUT}/${name}.json"
}

if [[ $# -eq 0 ]]; then
  if [[ "${LOCAL_BASE}" == 1 ]]; then set -- serve pipeline-cpu; else set -- serve pipeline; fi
fi
for name in "$@"; do build_one "${name}"; done
