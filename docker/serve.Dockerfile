# syntax=docker/dockerfile:1.7
# facegate serving image: `facegate serve` (KServe verifier + admin API) on OpenVINO, CPU only. No torch: the
# served bundle is an OpenVINO export, and torch would add ~1 GB and a CUDA-shaped attack surface for nothing.
# Build from the repository root:
#   docker build -f docker/serve.Dockerfile -t ghcr.io/facegate/facegate-serve:0.1.0 .

FROM ghcr.io/astral-sh/uv:0.13.9 AS uv

# ---- build: resolve nothing, install exactly what uv.lock says ----
FROM docker.io/library/python:3.11.14-slim-bookworm AS build
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/opt/venv
WORKDIR /src
# Dependencies first, from the lock alone, so a source change does not invalidate this (large) layer. torch and the
# export-time tools (nncf, onnxscript) stay out; onnxruntime and OpenVINO are the runtimes the bundle needs.
COPY pyproject.toml uv.lock ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-project --extra serve --extra export \
      --no-install-package torch --no-install-package nncf --no-install-package onnxscript
COPY README.md ./
COPY src/ ./src/
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --extra serve --extra export \
      --no-install-package torch --no-install-package nncf --no-install-package onnxscript

# ---- runtime: the venv and nothing else ----
FROM docker.io/library/python:3.11.14-slim-bookworm AS runtime
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="facegate-serve" \
      org.opencontainers.image.description="facegate verifier and admin API on KServe (OpenVINO, CPU)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="https://github.com/facegate/facegate" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="facegate"
# A fixed high uid/gid that matches the chart's securityContext (runAsUser 10001).
RUN groupadd --system --gid 10001 facegate \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /var/lib/facegate \
       --shell /usr/sbin/nologin facegate
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:${PATH} \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    FACEGATE_HOME=/var/lib/facegate \
    OPENVINO_TELEMETRY_OPT_OUT=1
WORKDIR /var/lib/facegate
USER 10001:10001
EXPOSE 8080 8082
# For plain docker runs; Kubernetes uses the chart's probes on the same endpoint.
HEALTHCHECK --interval=30s --timeout=3s --start-period=60s \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/v2/health/live', timeout=2)"]
ENTRYPOINT ["facegate"]
CMD ["serve", "--model", "/mnt/models", "--host", "0.0.0.0", "--port", "8080"]
