#!/usr/bin/env bash
# The deployment checks behind `make validate`, each with the real tool that consumes the artifact:
#   yaml       yamllint on every deployment YAML file
#   chart      values table/schema up to date; helm lint --strict and helm template for each values file
#   k8s        rendered chart + kustomize overlays: kubernetes-validate (built-in kinds) and the CRD schemas
#   docker     hadolint
#   checkov    checkov on the Dockerfiles, the rendered chart and manifests, and Terraform (also one at a time:
#              checkov-docker, checkov-k8s, checkov-terraform)
#   terraform  terraform fmt -check; terraform test of the provider-free inventory module
#   ansible    ansible-playbook --syntax-check; ansible-lint (production profile)
#   pins       every version pin against ../shared/upstream (tools/validate/check_pins.py: tags, charts, install
#              paths, the stack's compatibility statements; images it can verify)
#
#   tools/validate/validate.sh [STEP...]     (no step = all, in the order above)
#
# FACEGATE_ROOT (default: this checkout) is the tree to check, so tests can point it at a broken copy; the tools come
# from this checkout's .venv-validate and .tools (make validate-tools). SHARED (default: ROOT/../shared) holds crds/.
set -euo pipefail

HERE="$(cd "$(dirname "$0")/../.." && pwd)"
ROOT="$(cd "${FACEGATE_ROOT:-${HERE}}" && pwd)"
SHARED="${SHARED:-${ROOT}/../shared}"
VENV="${HERE}/.venv-validate/bin"
HELM="${HERE}/.tools/bin/helm"
KUBECTL="${HERE}/.tools/bin/kubectl"
VALUES_FILES=(values.yaml values-dev.yaml values-chameleon.yaml)
OVERLAYS=(dev chameleon)

# No telemetry, no update checks, nothing fetched at run time.
export BC_SKIP_MAPPING=TRUE CHECKOV_RUN_SCA_PACKAGE_SCAN_V2=false CHECKPOINT_DISABLE=1 TF_IN_AUTOMATION=1
export TF_CLI_CONFIG_FILE=/dev/null ANSIBLE_HOME="${HERE}/.tools/ansible" ANSIBLE_LOCAL_TEMP="${HERE}/.tools/ansible/tmp"
export ANSIBLE_NOCOLOR=1 PY_COLORS=0 DO_NOT_TRACK=1

for tool in "${VENV}/yamllint" "${HELM}" "${KUBECTL}"; do
  [[ -x "${tool}" ]] || { echo "missing ${tool}: run make validate-tools" >&2; exit 2; }
done

OUT="$(mktemp -d)"
trap 'rm -rf "${OUT}"' EXIT

step() { printf '\n==> %s\n' "$*"; }

render() {
  mkdir -p "${OUT}/rendered"
  local values
  for values in "${VALUES_FILES[@]}"; do
    "${HELM}" template facegate "${ROOT}/helm/facegate" --namespace facegate \
      --values "${ROOT}/helm/facegate/${values}" >"${OUT}/rendered/chart-${values%.yaml}.yaml"
  done
  local overlay
  for overlay in "${OVERLAYS[@]}"; do
    "${KUBECTL}" kustomize "${ROOT}/manifests/overlays/${overlay}" >"${OUT}/rendered/manifests-${overlay}.yaml"
  done
}

check_yaml() {
  step "yamllint"
  (cd "${ROOT}" && "${VENV}/yamllint" --strict -c tools/validate/yamllint.yaml helm manifests ansible \
    docker/.hadolint.yaml tools/validate)
}

check_chart() {
  step "chart values table and schema"
  "${VENV}/python" "${ROOT}/tools/validate/chart_docs.py" --check --chart "${ROOT}/helm/facegate"
  local values
  for values in "${VALUES_FILES[@]}"; do
    step "helm lint --strict -f ${values}"
    "${HELM}" lint --strict "${ROOT}/helm/facegate" --values "${ROOT}/helm/facegate/${values}"
  done
  step "helm template (each values file) and kubectl kustomize (each overlay)"
  render
  ls "${OUT}/rendered"
}

check_k8s() {
  [[ -d "${SHARED}/crds" ]] || { echo "CRD schemas not found at ${SHARED}/crds (set SHARED)" >&2; exit 2; }
  [[ -d "${OUT}/rendered" ]] || render
  # Built-in kinds are checked against the Kubernetes minor the playbook installs.
  local minor
  minor="$("${VENV}/python" -c 'import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))["kubernetes_minor"])' \
    "${ROOT}/ansible/group_vars/all/versions.yml")"
  step "kubernetes-validate (Kubernetes ${minor}) + CRD schemas (${SHARED}/crds)"
  "${VENV}/python" "${HERE}/tools/validate/k8s_validate.py" --k8s-version "${minor}" --crds "${SHARED}/crds" \
    "${OUT}"/rendered/*.yaml
}

check_docker() {
  step "hadolint"
  "${VENV}/hadolint" --config "${ROOT}/docker/.hadolint.yaml" "${ROOT}"/docker/*.Dockerfile
}

checkov() {
  local framework="$1" directory="$2" skips
  skips="$("${VENV}/python" -c 'import sys, yaml; print(",".join(s["id"] for s in yaml.safe_load(open(sys.argv[1]))["skips"]))' \
    "${ROOT}/tools/validate/checkov-skips.yaml")"
  step "checkov --framework ${framework} (${directory#"${ROOT}/"}); skipped with reasons: ${skips}"
  "${VENV}/checkov" --quiet --compact --skip-download --framework "${framework}" --skip-check "${skips}" \
    --directory "${directory}"
}

check_checkov_docker() {
  # checkov finds Dockerfiles by name; link ours under that name so the real files are what it checks.
  local file name
  for file in "${ROOT}"/docker/*.Dockerfile; do
    name="$(basename "${file}" .Dockerfile)"
    mkdir -p "${OUT}/docker/${name}"
    ln -sf "${file}" "${OUT}/docker/${name}/Dockerfile"
  done
  checkov dockerfile "${OUT}/docker"
}

check_checkov_k8s() {
  [[ -d "${OUT}/rendered" ]] || render
  checkov kubernetes "${OUT}/rendered"
}

check_checkov_terraform() {
  checkov terraform "${ROOT}/terraform"
}

check_checkov() {
  check_checkov_docker
  check_checkov_k8s
  check_checkov_terraform
}

check_terraform() {
  step "terraform fmt -check"
  terraform fmt -check -recursive -diff "${ROOT}/terraform"
  step "terraform test (modules/inventory)"
  local data
  data="$(mktemp -d)"
  (cd "${ROOT}/terraform/modules/inventory" && TF_DATA_DIR="${data}" terraform init -backend=false -input=false \
    -no-color >/dev/null && TF_DATA_DIR="${data}" terraform test -no-color)
  rm -rf "${data}"
}

check_pins() {
  local upstream="${FACEGATE_SHARED:+${FACEGATE_SHARED}/upstream}"
  upstream="${upstream:-${SHARED}/upstream}"
  [[ -f "${upstream}/index.json" ]] || { echo "upstream snapshot not found at ${upstream} (set SHARED)" >&2; exit 2; }
  step "pins against the upstream snapshot (${upstream})"
  "${VENV}/python" "${HERE}/tools/validate/check_pins.py" --root "${ROOT}" --upstream "${upstream}"
}

check_ansible() {
  mkdir -p "${ANSIBLE_LOCAL_TEMP}"
  step "ansible-playbook --syntax-check"
  (cd "${ROOT}/ansible" && "${VENV}/ansible-playbook" -i inventory/dev.yml site.yml --syntax-check)
  step "ansible-lint (production profile)"
  (cd "${ROOT}/ansible" && PATH="${VENV}:${PATH}" "${VENV}/ansible-lint" --offline --profile production --nocolor)
}

steps=("$@")
[[ ${#steps[@]} -gt 0 ]] || steps=(yaml chart k8s docker checkov terraform ansible pins)
for name in "${steps[@]}"; do
  case "${name}" in
    yaml | chart | k8s | docker | checkov | terraform | ansible | pins) "check_${name}" ;;
    checkov-docker | checkov-k8s | checkov-terraform) "check_${name/-/_}" ;;
    *) echo "unknown step ${name}" >&2; exit 2 ;;
  esac
done
step "all checks passed: ${steps[*]}"
