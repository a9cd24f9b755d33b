"""The Helm release as the one owner of the served model: rollouts are ``helm upgrade --reuse-values``.

The chart renders the verifier's InferenceService from three values: ``model.storageUri``, ``model.version`` and
``verifier.canaryTrafficPercent``. If a rollout patched the object directly, the next ``helm upgrade`` would
render the values' old model again and silently put it back. So a rollout changes those values in the release
instead: ``helm history`` then lists every canary, promotion and rollback (with a description saying which), a
``helm rollback REVISION`` undoes one, and any later ``helm upgrade --reuse-values`` keeps the rolled-out model.

The chart is upgraded at the version already deployed (``--version`` for a repository or OCI chart), so that a
rollout never upgrades the chart as a side effect. The chart's pre-upgrade hook re-indexes the gallery for the new
version; ``timeout`` bounds it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from facegate.errors import FacegateError

__all__ = ["DEFAULT_CHART", "HelmError", "HelmRelease", "rollout_values"]

#: Where the chart is published; a local chart folder works too (``--chart helm/facegate``).
DEFAULT_CHART = "oci://ghcr.io/facegate/charts/facegate"


class HelmError(FacegateError):
    """helm is missing, or refused or failed a command on the release."""

    code = "helm_failed"


def rollout_values(storage_uri: str, model_version: str, canary_percent: int | None) -> dict[str, Any]:
    """The chart values a rollout sets (``None`` percent: the whole of traffic, the chart's 100).

    Args:
        storage_uri: The bundle's URI.
        model_version: The bundle's version string.
        canary_percent: 0-100 or ``None``.

    Returns:
        A values tree for ``helm upgrade --values``.
    """
    percent = 100 if canary_percent is None else canary_percent
    return {"model": {"storageUri": storage_uri, "version": model_version},
            "verifier": {"canaryTrafficPercent": percent}}  # fmt: skip


@dataclass(frozen=True)
class HelmRelease:
    """A facegate release, driven by the ``helm`` binary.

    Attributes:
        release: Release name.
        namespace: Its namespace.
        chart: Chart reference (``oci://...``, ``repo/name``) or a local chart folder.
        helm: The helm executable.
        timeout: ``helm upgrade --timeout`` (the re-index hook runs inside it).
        env: Extra environment for helm (``KUBECONFIG``, ``HELM_*``).
    """

    release: str = "facegate"
    namespace: str = "facegate"
    chart: str = DEFAULT_CHART
    helm: str = "helm"
    timeout: str = "65m"
    env: dict[str, str] = field(default_factory=dict)

    def _run(self, *args: str, timeout_s: float = 120.0) -> str:
        cmd = [self.helm, *args, "--namespace", self.namespace]
        try:
            # An argument list, no shell: values travel in a file, never in the command line.
            out = subprocess.run(  # noqa: S603
                cmd, capture_output=True, text=True, timeout=timeout_s, env={**os.environ, **self.env}
            )
        except FileNotFoundError:
            raise HelmError(f"helm not found ({self.helm!r}): install helm 3 or pass --helm", code="no_helm") from None
        except subprocess.TimeoutExpired:
            raise HelmError(f"helm {args[0]} did not finish in {timeout_s:.0f} s") from None
        if out.returncode != 0:
            raise HelmError(f"helm {args[0]} {self.release} failed: {out.stderr.strip()[-2000:]}")
        return out.stdout

    def status(self) -> dict[str, Any]:
        """``helm status -o json`` of the deployed revision.

        Raises:
            HelmError: ``not_deployed`` when the release does not exist.
        """
        try:
            return dict(json.loads(self._run("status", self.release, "--output", "json")))
        except HelmError as exc:
            if "not found" in exc.message:
                raise HelmError(
                    f"release {self.namespace}/{self.release} is not installed", code="not_deployed"
                ) from None
            raise

    def history(self) -> list[dict[str, Any]]:
        """``helm history -o json``: revision, status, description, ... oldest first."""
        return list(json.loads(self._run("history", self.release, "--output", "json")))

    def _history_chart_version(self) -> str | None:
        """The deployed revision's chart version from ``helm history`` (helm 4's ``status`` JSON has no chart)."""
        deployed = [h for h in self.history() if h.get("status") == "deployed"]
        found = re.match(r"^.*?-(\d+\.\d+\.\d+\S*)$", str(deployed[-1].get("chart") or "")) if deployed else None
        return found.group(1) if found else None

    def set_model(self, storage_uri: str, model_version: str, canary_percent: int | None, *, action: str) -> int:
        """Upgrade the release with the rollout's values, every other value kept; returns the new revision.

        Args:
            storage_uri: The bundle's URI.
            model_version: Its version string.
            canary_percent: ``verifier.canaryTrafficPercent`` (``None``: 100).
            action: ``canary``, ``promote`` or ``rollback``: written into the revision's description.
        """
        deployed = self.status()
        args = ["upgrade", self.release, self.chart, "--reuse-values", "--timeout", self.timeout]
        version = ((deployed.get("chart") or {}).get("metadata") or {}).get("version") or self._history_chart_version()
        if version and not os.path.isdir(self.chart):
            args += ["--version", str(version)]  # the deployed chart, not whatever is newest
        elif version and os.path.isdir(self.chart):
            # A chart folder (the executor's image carries one) must be the deployed version: never an upgrade.
            local = (yaml.safe_load((Path(self.chart) / "Chart.yaml").read_text()) or {}).get("version")
            if local is not None and str(local) != str(version):
                raise HelmError(
                    f"chart {self.chart} is version {local} but the release runs {version}: a rollout does not "
                    "upgrade the chart (use the chart of the deployed version)",
                    code="chart_mismatch",
                )
        percent = "" if canary_percent is None else f" {canary_percent}%"
        args += ["--description", f"facegate rollout {action} {model_version}{percent}"]
        values = rollout_values(storage_uri, model_version, canary_percent)
        # A values file, not --set: a URI or version with ',' or '=' would be split by --set's syntax.
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix="facegate-rollout-") as fh:
            yaml.safe_dump(values, fh)
            fh.flush()
            self._run(*args, "--values", fh.name, timeout_s=_seconds(self.timeout) + 60)
        return int(self.status().get("version") or 0)


def _seconds(duration: str) -> float:
    """A helm/Go duration made of h, m and s parts (``65m``, ``1h5m``, ``90s``) in seconds."""
    import re

    parts = re.findall(r"(\d+(?:\.\d+)?)([hms])", duration)
    if not parts:
        raise HelmError(f"bad timeout {duration!r}: use e.g. 65m or 1h5m", code="bad_usage")
    return sum(float(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts)
