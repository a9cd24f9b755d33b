# syntax=docker/dockerfile:1.7
# facegate training/pipeline image: train (torch on CUDA, MLflow, Ray Tune), export, evaluate, the pipelines' SDKs.
# It is the KFP components' base_image, the Kubeflow Trainer and KubeRay image, and runs MLflow and the gallery
# re-index in the chart. Build from the repository root:
#   docker build -f docker/pipeline.Dockerfile -t ghcr.io/facegate/facegate-pipeline:0.1.0 .

# CUDA 12.6 (base images and torch index below) is the newest toolkit whose PyTorch builds still ship Volta
# (sm_70) kernels for the V100 workers.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu126
ARG TORCH_VERSION=2.13.0

FROM ghcr.io/astral-sh/uv:0.13.9 AS uv

# ---- build ----
FROM docker.io/nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04 AS build
ARG TORCH_INDEX
ARG TORCH_VERSION
COPY --from=uv /uv /usr/local/bin/uv
# The base has no Python 3.11; uv installs a pinned standalone CPython into /opt/python, copied to the runtime.
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_INSTALL_DIR=/opt/python \
    UV_PYTHON_PREFERENCE=only-managed \
    UV_PROJECT_ENVIRONMENT=/opt/venv
RUN uv python install 3.11.14
WORKDIR /src
COPY pyproject.toml uv.lock ./
# Everything from the lock except torch: the lock carries the CPU wheel of the CI machines; the GPU build of the
# same version comes from PyTorch's CUDA index right after.
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-project --python 3.11.14 \
      --extra train --extra export --extra serve --extra pipelines --extra eval \
      --no-install-package torch \
    && uv pip install --python /opt/venv/bin/python --index-url "${TORCH_INDEX}" "torch==${TORCH_VERSION}"
COPY README.md ./
COPY src/ ./src/
COPY configs/ ./configs/
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --inexact --python 3.11.14 \
      --extra train --extra export --extra serve --extra pipelines --extra eval \
      --no-install-package torch

# ---- runtime ----
FROM docker.io/nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04 AS runtime
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="facegate-pipeline" \
      org.opencontainers.image.description="facegate training, tuning, export and pipeline steps (CUDA 12.6, V100)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="https://github.com/facegate/facegate" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="facegate"
RUN groupadd --system --gid 10001 facegate \
    && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/facegate \
       --shell /usr/sbin/nologin facegate
COPY --from=build /opt/python /opt/python
COPY --from=build /opt/venv /opt/venv
COPY --from=build /src/configs /opt/facegate/configs
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
