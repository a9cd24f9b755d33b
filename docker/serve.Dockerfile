# syntax=docker/dockerfile:1.7
# facegate serving image: `facegate serve` (KServe verifier + admin API) on OpenVINO, CPU only. No torch: the
# served bundle is an OpenVINO export, and torch would add ~1 GB and a CUDA-shaped attack surface for nothing.
# Build from the repository root (`make images` does it with podman on a debootstrap'd base; docs/images.md):
#   docker build -f docker/serve.Dockerfile -t ghcr.io/facegate/facegate-serve:0.1.0 .
#
# Build arguments:
#   BASE_IMAGE       a Python 3.11 image (build and runtime stages use the same one, so the venv's interpreter
#                    links stay valid). python:3.11-slim-trixie is a tag the Docker official images keep rebuilding
#                    with security fixes (a patch tag such as 3.11.14 is frozen once 3.11.15 ships).
#   UV_IMAGE         where the uv binary comes from (/uv in UV_IMAGE:UV_VERSION); an internal mirror behind a proxy.
#   EXTRA_CA_CERTS   PEM text of extra CA certificates the build trusts (TLS-intercepting proxies); build stage only.
ARG BASE_IMAGE=docker.io/library/python:3.11-slim-trixie
ARG UV_IMAGE=ghcr.io/astral-sh/uv
ARG UV_VERSION=0.13.9

FROM ${UV_IMAGE}:${UV_VERSION} AS uv

# ---- build: resolve nothing, install exactly what uv.lock says ----
FROM ${BASE_IMAGE} AS build
ARG EXTRA_CA_CERTS=""
COPY --from=uv /uv /usr/local/bin/uv
# An extra CA joins the system bundle; SSL_CERT_FILE makes uv use that bundle instead of its built-in roots.
RUN if [ -n "${EXTRA_CA_CERTS}" ]; then \
      printf '%s\n' "${EXTRA_CA_CERTS}" > /usr/local/share/ca-certificates/facegate-build-extra.crt \
      && update-ca-certificates; \
    fi
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON_PREFERENCE=only-system \
    UV_PROJECT_ENVIRONMENT=/opt/venv
WORKDIR /src
# Dependencies first, from the lock alone, so a source change does not invalidate this (large) layer. Of the export
# extra only OpenVINO (the served bundle's runtime): torch, NNCF, onnxscript, onnxruntime and all that only they
# pull in (scipy, scikit-learn, sympy, ...) stay out, ~330 MB the server never imports; serve_image.py computes
# that list from the lock (one `--no-install-package NAME` pair per word: the word splitting is the point).
COPY pyproject.toml uv.lock tools/images/serve_image.py ./
# hadolint ignore=SC2046
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-project --python 3.11 --extra serve --extra export \
      $(python3 serve_image.py excludes uv.lock)
COPY README.md ./
COPY src/ ./src/
# Then what a CPU server reading OpenVINO IR never loads (~110 MB): OpenVINO's GPU/NPU plugins (and the GPU kernel
# cache) and its ONNX/TensorFlow/PaddlePaddle/PyTorch/JAX/TFLite/GGUF readers; botocore's API models of every AWS
# service but S3 and the credential services (STS, SSO); the packages' test suites, C headers and type stubs.
# Last, bytecode for the modules the server imports (serve_image.py): ~45 MB instead of ~120 MB for the whole venv.
# hadolint ignore=SC2046
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --python 3.11 --extra serve --extra export \
      $(python3 serve_image.py excludes uv.lock) \
    && site=/opt/venv/lib/python3.11/site-packages \
    && rm -f "${site}"/openvino/libs/libopenvino_intel_gpu_plugin.so "${site}"/openvino/libs/cache.json \
             "${site}"/openvino/libs/libopenvino_intel_npu_plugin.so \
             "${site}"/openvino/libs/libopenvino_tensorflow_frontend.so.* \
             "${site}"/openvino/libs/libopenvino_tensorflow_lite_frontend.so.* \
             "${site}"/openvino/libs/libopenvino_paddle_frontend.so.* \
             "${site}"/openvino/libs/libopenvino_pytorch_frontend.so.* \
             "${site}"/openvino/libs/libopenvino_jax_frontend.so.* \
             "${site}"/openvino/libs/libopenvino_gguf_frontend.so.* \
             "${site}"/openvino/libs/libopenvino_onnx_frontend.so.* \
    && rm -rf "${site}"/openvino/frontend/onnx "${site}"/openvino/frontend/tensorflow "${site}"/openvino/frontend/jax \
              "${site}"/openvino/frontend/paddle "${site}"/openvino/frontend/pytorch "${site}"/openvino/tools \
    && find "${site}"/botocore/data -mindepth 1 -maxdepth 1 -type d \
         ! -name s3 ! -name sts ! -name sso ! -name sso-oidc -exec rm -rf {} + \
    && find "${site}" -depth -type d \( -name tests -o -name __pycache__ -o -name include \) -exec rm -rf {} + \
    && find "${site}" -name '*.pyi' -delete \
    && /opt/venv/bin/python serve_image.py precompile

# ---- runtime: the venv, tini, and nothing else ----
FROM ${BASE_IMAGE} AS runtime
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="facegate-serve" \
      org.opencontainers.image.description="facegate verifier and admin API on KServe (OpenVINO, CPU)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="https://github.com/facegate/facegate" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="facegate"
# tini as PID 1: the kernel drops a signal to PID 1 that has no handler, so a bare Python PID 1 can sit through
# SIGTERM until the kubelet's SIGKILL; tini forwards it to the server (which drains in-flight requests) and reaps.
# A fixed high uid/gid that matches the chart's securityContext (runAsUser 10001).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/log/apt /var/log/dpkg.log \
    && groupadd --system --gid 10001 facegate \
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
ENTRYPOINT ["tini", "--", "facegate"]
CMD ["serve", "--model", "/mnt/models", "--host", "0.0.0.0", "--port", "8080"]
