"""Every deployment pin checked against ../shared/upstream, the offline snapshot of upstream release metadata.

What is checked, and from where:
  tags     each version in ansible/group_vars/all/versions.yml names a stable tag of its project (index.json tags)
  charts   each kubernetes.core.helm task in ansible/roles: the chart name is published by its source at the pinned
           version (index.json charts; versions before a project's first published release are refused)
  paths    each github.com/<repo>/<path>?ref={{ var }} and raw.githubusercontent.com/<repo>/{{ var }}/<path> a role
           fetches exists at the pinned tag (paths/*.txt)
  stack    the pins fit together, by the upstream statements recorded in index.json notes: Kubernetes minor among the
           three newest, containerd on a branch not past end of life and recommended for that Kubernetes minor,
           Knative Serving at least at its Kubernetes minimum, bundled by the pinned operator and at the minor KServe's
           kserve-deps.env tests, helm (the playbook's and the pipeline image's, tools/images/helm.pins) built
           against a client-go within Kubernetes' skew, KFP backend = kfp SDK minor
  terraform  the OpenStack provider is pinned to one exact, tagged version
  images   image references (Dockerfile FROM lines and ARG defaults, chart values, manifests, versions.yml) whose
           project is in the snapshot are checked; the others are listed as not checkable offline

Verdicts: ok; WRONG (the snapshot covers the release and it is not there: fails); UNVERIFIABLE (newer than anything in
a stale snapshot, or not covered by it: fails unless tools/validate/pins-unverifiable.yaml acknowledges it with a
reason, keyed `var=value`, as the snapshot README asks instead of calling it wrong); info (not checkable offline).

    check_pins.py [--root DIR] [--upstream DIR] [--today YYYY-MM-DD]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parents[2]

# versions.yml variable -> (project, git tag template). Chart variables are also in HELM_SOURCES via their tasks.
TAG_PINS: dict[str, tuple[str, str]] = {
    "kubernetes_version": ("kubernetes/kubernetes", "v{}"),
    "containerd_version": ("containerd/containerd", "v{}"),
    "helm_version": ("helm/helm", "{}"),
    "flannel_chart_version": ("flannel-io/flannel", "{}"),
    "cert_manager_chart_version": ("cert-manager/cert-manager", "{}"),
    "knative_operator_chart_version": ("knative/operator", "knative-{}"),
    "knative_serving_version": ("knative/serving", "knative-v{}"),
    "kserve_chart_version": ("kserve/kserve", "{}"),
    "kubeflow_pipelines_version": ("kubeflow/pipelines", "{}"),
    "kubeflow_trainer_chart_version": ("kubeflow/trainer", "v{}"),
    "kuberay_operator_chart_version": ("ray-project/kuberay", "v{}"),
    "kube_prometheus_stack_chart_version": ("prometheus-community/helm-charts", "kube-prometheus-stack-{}"),
    "local_path_provisioner_version": ("rancher/local-path-provisioner", "{}"),
    "nvidia_device_plugin_chart_version": ("NVIDIA/k8s-device-plugin", "v{}"),
    # NVIDIA's apt packages X.Y.Z-1 are built from tag vX.Y.Z (index.json note).
    "nvidia_container_toolkit_version": ("NVIDIA/nvidia-container-toolkit", "v{}"),
}
# Pins checked elsewhere or by a rule below, with where.
OTHER_PINS = {
    "kubernetes_minor": "must be kubernetes_version's minor",
    "kubernetes_apt_version": "pkgs.k8s.io package of kubernetes_version (the repository is not reachable offline)",
    "runc_apt_version": "resolved in Debian's archive by tools/validate/apt_simulate.sh",
    "containerd_apt_version": "Debian's containerd: apt_simulate.sh; its upstream version meets the Kubernetes rule",
    "nvidia_driver_apt_version": "resolved in Debian's archive by tools/validate/apt_simulate.sh",
    "pause_image": "an image: checked with the images",
    "facegate_version": "facegate's own release: must equal the chart's appVersion",
}
# Pins of projects the snapshot does not cover: always UNVERIFIABLE, so each needs a reviewed acknowledgement.
NOT_IN_SNAPSHOT = {"runc_version": "opencontainers/runc"}
# Where a helm task's chart comes from -> the project whose chart index answers for it.
HELM_SOURCES = {
    "oci://ghcr.io/kserve/charts/": "kserve/kserve",
    "oci://ghcr.io/kubeflow/charts/": "kubeflow/trainer",
    "oci://quay.io/jetstack/charts/": "cert-manager/cert-manager",
    "https://charts.jetstack.io": "cert-manager/cert-manager",
    "https://knative.github.io/operator": "knative/operator",
    "https://flannel-io.github.io/flannel/": "flannel-io/flannel",
    "https://ray-project.github.io/kuberay-helm/": "ray-project/kuberay-helm",
    "https://prometheus-community.github.io/helm-charts": "prometheus-community/helm-charts",
    "https://nvidia.github.io/k8s-device-plugin": "NVIDIA/k8s-device-plugin",
}
# Image repositories whose tags are the project's git tags.
IMAGE_PROJECTS = {
    "docker.io/kserve/storage-initializer": "kserve/kserve",
    "kserve/storage-initializer": "kserve/kserve",
    "quay.io/minio/minio": "minio/minio",
}
VAR = re.compile(r"\{\{\s*(\w+)\s*\}\}")
REPO_URL = re.compile(
    r"github\.com/(?P<repo>[\w.-]+/[\w.-]+)/(?P<path>[\w./-]+)\?ref=\{\{\s*(?P<var>\w+)\s*\}\}"
    r"|raw\.githubusercontent\.com/(?P<raw_repo>[\w.-]+/[\w.-]+)/\{\{\s*(?P<raw_var>\w+)\s*\}\}/(?P<raw_path>[\w./-]+)"
)
IMAGE = re.compile(r"^(?:[\w.-]+(?::\d+)?/)?[\w./-]+:[\w.-]+$")


def version_key(text: str) -> tuple[int, ...]:
    """Numeric parts of a version or tag (knative-v1.21.4 -> (1, 21, 4); RELEASE.2025-04-22T... -> dates)."""
    return tuple(int(n) for n in re.findall(r"\d+", text))


@dataclass
class Report:
    """Verdict lines, and whether any of them fails the check."""

    acknowledged: dict[str, str]
    lines: list[tuple[str, str, str]] = field(default_factory=list)

    def add(self, verdict: str, what: str, why: str) -> None:
        """Record a verdict; an UNVERIFIABLE pin listed in pins-unverifiable.yaml becomes acknowledged."""
        # A key such as `kserve_chart_version=v0.21.0` acknowledges every check of that pin.
        key = next((k for k in self.acknowledged if k in what), None) if verdict == "UNVERIFIABLE" else None
        if key is not None:
            verdict, why = "acknowledged", f"{why}; acknowledged: {self.acknowledged[key]}"
        self.lines.append((verdict, what, why))

    @property
    def failed(self) -> bool:
        """Whether any pin is wrong or unverifiable (unacknowledged)."""
        return any(v in ("WRONG", "UNVERIFIABLE") for v, _, _ in self.lines)


class Upstream:
    """index.json and paths/*.txt of the snapshot."""

    def __init__(self, root: Path) -> None:
        index = json.loads((root / "index.json").read_text())
        self.generated = index["generated"]
        self.projects: dict[str, dict[str, Any]] = {p["repo"]: p for p in index["projects"]}
        self.paths: dict[str, dict[tuple[str, str], bool]] = {}
        for repo, project in self.projects.items():
            rows: dict[tuple[str, str], bool] = {}
            if project.get("paths_file"):
                for line in (root / project["paths_file"]).read_text().splitlines():
                    if line.strip() and not line.startswith("#"):
                        tag, path, state = line.split("\t")
                        rows[(tag, path.rstrip("/"))] = state == "exists"
            self.paths[repo] = rows

    def tags(self, repo: str) -> list[str]:
        """Stable tags of `repo`, highest first."""
        return [t["tag"] for t in self.projects[repo]["tags"]]

    def notes(self, repo: str) -> list[str]:
        """The upstream statements recorded for `repo`."""
        return list(self.projects[repo].get("notes", []))

    def newer_than_snapshot(self, repo: str, version: str, known: list[str]) -> bool:
        """True when `version` sorts above every release the snapshot knows (so it may simply postdate it)."""
        return not known or version_key(version) > max(version_key(k) for k in known)

    def check_tag(self, report: Report, what: str, repo: str, tag: str) -> bool:
        """Report whether `tag` is a stable tag of `repo`; True when it is."""
        known = self.tags(repo)
        if tag in known:
            report.add("ok", what, f"tag {tag} of {repo}")
            return True
        project = self.projects[repo]
        if self.newer_than_snapshot(repo, tag, known):
            report.add(
                "UNVERIFIABLE",
                what,
                f"tag {tag} is newer than {repo}'s snapshot (newest {known[0] if known else 'none'}, "
                f"snapshot {project['snapshot_date'][:10]})",
            )
        else:
            report.add("WRONG", what, f"{repo} has no stable tag {tag} (newest {known[0]})")
        return False

    def check_chart(self, report: Report, what: str, repo: str, chart: str, version: str) -> None:
        """Report whether `repo` publishes `chart` at `version`."""
        project = self.projects[repo]
        charts: dict[str, list[str]] = project.get("charts") or {}
        if chart not in charts:
            report.add(
                "WRONG", what, f"{repo} publishes no chart named {chart!r} (charts: {', '.join(sorted(charts))})"
            )
            return
        versions = charts[chart]
        first = re.search(r"first stable tag that has it: v?(\d+(?:\.\d+)*)", project.get("charts_source") or "")
        if version in versions and first and version_key(version) < version_key(first.group(1)):
            report.add("WRONG", what, f"{chart} {version} predates {repo}'s chart publishing (from {first.group(1)})")
        elif version in versions:
            report.add("ok", what, f"chart {chart} {version} ({repo})")
        elif self.newer_than_snapshot(repo, version, versions + self.tags(repo)):  # a renamed chart is wrong
            report.add(
                "UNVERIFIABLE", what, f"chart {chart} {version} is newer than the snapshot (newest {versions[0]})"
            )
        else:
            report.add("WRONG", what, f"chart {chart} has no version {version} (newest {versions[0]})")

    def check_path(self, report: Report, what: str, repo: str, tag: str, path: str) -> None:
        """Report whether `path` exists in `repo` at `tag`."""
        rows = self.paths.get(repo, {})
        state = rows.get((tag, path.rstrip("/")))
        if state is None:
            report.add("UNVERIFIABLE", what, f"{repo}@{tag}:{path} is not covered by the snapshot's paths file")
        elif state:
            report.add("ok", what, f"{repo}@{tag}:{path} exists")
        else:
            report.add("WRONG", what, f"{repo}@{tag}:{path} does not exist at that tag")


def role_tasks(root: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """(file, task) for every task of every role."""
    for path in sorted((root / "ansible" / "roles").glob("*/tasks/*.yml")):
        for task in yaml.safe_load(path.read_text()) or []:
            yield str(path.relative_to(root)), task


def pinned_var(value: str) -> str | None:
    """The variable of a value that is exactly '{{ var }}', else None."""
    match = VAR.fullmatch(value.strip()) if isinstance(value, str) else None
    return match.group(1) if match else None


def check_helm_tasks(up: Upstream, report: Report, root: Path, versions: dict[str, Any]) -> set[str]:
    """Chart name + version of every kubernetes.core.helm task that installs a published chart."""
    used = set()
    for where, task in role_tasks(root):
        args = task.get("kubernetes.core.helm")
        if not args or "chart_version" not in args:
            continue
        var = pinned_var(args["chart_version"])
        what = f"{where}: {task['name']}"
        if var is None or var not in versions:
            report.add("WRONG", what, f"chart_version {args['chart_version']!r} is not a versions.yml variable")
            continue
        used.add(var)
        ref, source = args["chart_ref"], args.get("chart_repo_url", args["chart_ref"])
        chart = ref.rsplit("/", 1)[-1]
        repo = next((r for prefix, r in HELM_SOURCES.items() if source.startswith(prefix)), None)
        if repo is None:
            report.add("WRONG", what, f"chart source {source} is not one the snapshot knows")
            continue
        up.check_chart(report, f"{what} ({var}={versions[var]})", repo, chart, str(versions[var]))
    return used


def strings(node: Any) -> Iterator[str]:
    """Every string in a parsed YAML document (folded scalars arrive joined, so URLs come out whole)."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings(value)


def check_role_paths(up: Upstream, report: Report, root: Path, versions: dict[str, Any]) -> None:
    """Every upstream path a role fetches at a pinned ref exists at that tag."""
    for where, task in role_tasks(root):
        for text in strings(task):
            for match in REPO_URL.finditer(re.sub(r"\{\{\s+", "{{ ", text)):
                repo = match.group("repo") or match.group("raw_repo")
                var = match.group("var") or match.group("raw_var")
                sub = match.group("path") or match.group("raw_path")
                what = f"{where}: {repo}/{sub}"
                if repo not in up.projects or var not in TAG_PINS:
                    report.add("WRONG", what, f"{repo} at {{{{ {var} }}}} is not a pinned project of the snapshot")
                    continue
                up.check_path(report, what, repo, TAG_PINS[var][1].format(versions[var]), sub)


def minor(version: str) -> tuple[int, int]:
    """(major, minor) of a version or tag."""
    major, minor_, *_ = version_key(version)
    return major, minor_


def end_of_life(text: str) -> dt.date | None:
    """The date in 'end of life April 30, 2028' / 'end of life March, 2027**' / 'end of life September 2026*'."""
    match = re.search(r"end of life (\w+)\s*(\d{1,2})?,?\s*(\d{4})", text)
    if not match:
        return None
    month = dt.datetime.strptime(match.group(1)[:3], "%b").month
    if match.group(2):
        return dt.date(int(match.group(3)), month, int(match.group(2)))
    nxt = dt.date(int(match.group(3)) + month // 12, month % 12 + 1, 1)
    return nxt - dt.timedelta(days=1)


def check_stack(up: Upstream, report: Report, root: Path, versions: dict[str, Any], today: dt.date) -> None:
    """The pins fit together, by the upstream statements in index.json notes."""
    k8s = str(versions["kubernetes_version"])
    k8s_minor = minor(k8s)
    if str(versions["kubernetes_minor"]) != "{}.{}".format(*k8s_minor):
        report.add("WRONG", "kubernetes_minor", f"{versions['kubernetes_minor']} is not kubernetes_version's minor")
    if not str(versions["kubernetes_apt_version"]).startswith(k8s + "-"):
        report.add("WRONG", "kubernetes_apt_version", f"{versions['kubernetes_apt_version']} is not a build of {k8s}")
    # Kubernetes supports its three newest minors; the snapshot's newest minors stand in for kubernetes.io's dates.
    minors = sorted({minor(t) for t in up.tags("kubernetes/kubernetes")}, reverse=True)
    verdict = "ok" if k8s_minor in minors[:3] else "WRONG"
    report.add(verdict, "kubernetes in support", f"{k8s_minor} among the three newest minors {minors[:3]}")

    # containerd: recommended for this Kubernetes minor, on a branch not past its end of life.
    # Debian's containerd package (1.6.20~ds1-...) carries its upstream version before the '~'.
    ctr = str(versions.get("containerd_version") or str(versions.get("containerd_apt_version", "0.0.0")).split("~")[0])
    notes = up.notes("containerd/containerd")
    rec = next(
        (n for n in notes if re.search(r"recommended containerd for Kubernetes {}\.{}:".format(*k8s_minor), n)), None
    )
    if rec is None:
        report.add("WRONG", "containerd for kubernetes", f"containerd's RELEASES.md has no row for Kubernetes {k8s}")
    else:
        mins = re.findall(r"(\d+\.\d+\.\d+)\+", rec.split(":", 1)[1])
        fits = any(minor(m) == minor(ctr) and version_key(ctr) >= version_key(m) for m in mins)
        report.add("ok" if fits else "WRONG", "containerd for kubernetes", f"{ctr} vs {rec}")
    branch = next((n for n in notes if "branch {}.{}:".format(*minor(ctr)) in n), None)
    eol = end_of_life(branch) if branch else None
    if eol is None:
        report.add("UNVERIFIABLE", "containerd branch support", f"no end-of-life date for {ctr}'s branch")
    else:
        report.add("ok" if eol >= today else "WRONG", "containerd branch support", f"{branch} (today {today})")

    # Knative Serving: Kubernetes minimum, bundled by the pinned operator, the minor KServe tests with.
    serving = str(versions["knative_serving_version"])
    need = next(
        (n for n in up.notes("knative/serving") if n.startswith("Knative {}.{}: minimum".format(*minor(serving)))), None
    )
    if need is None:
        report.add("UNVERIFIABLE", "knative kubernetes minimum", f"no minimum recorded for Knative {serving}")
    else:
        least = re.search(r"minimum Kubernetes v([\d.]+)", need).group(1)  # type: ignore[union-attr]
        report.add("ok" if version_key(k8s) >= version_key(least) else "WRONG", "knative kubernetes minimum", need)
    operator = str(versions["knative_operator_chart_version"])
    bundle = next((n for n in up.notes("knative/operator") if n.startswith(f"knative-{operator} bundles")), None)
    span = re.search(r"spec\.version ([\d.]+)\.\.([\d.]+)", bundle or "")
    if span is None:
        operator_tag = TAG_PINS["knative_operator_chart_version"][1].format(operator)
        up.check_path(
            report,
            "knative operator bundles serving",
            "knative/operator",
            operator_tag,
            f"cmd/operator/kodata/knative-serving/{serving}",
        )
    else:
        inside = version_key(span.group(1)) <= version_key(serving) <= version_key(span.group(2))
        report.add("ok" if inside else "WRONG", "knative operator bundles serving", f"{serving} vs {bundle}")
    kserve = str(versions["kserve_chart_version"])
    tested = next((n for n in up.notes("kserve/kserve") if n.startswith(f"{kserve} kserve-deps.env")), None)
    pair = re.search(r"KNATIVE_SERVING_VERSION=([\d.]+)", tested or "")
    if pair is None:
        report.add("UNVERIFIABLE", "kserve tested knative", f"no kserve-deps.env recorded for KServe {kserve}")
    else:
        same = minor(pair.group(1)) == minor(serving)
        report.add("ok" if same else "WRONG", "kserve tested knative", f"Serving {serving} vs {tested}")

    # helm: the client-go it is built with within Kubernetes' skew (n-3).
    helm_skew(up, report, "helm client-go skew", str(versions["helm_version"]), k8s)
    check_image_helm(up, report, root, k8s)

    # KFP backend: the SDK's minor.
    sdk = (
        re.search(r'"kfp==([\d.]+)"', (root / "pyproject.toml").read_text())
        if (root / "pyproject.toml").exists()
        else None
    )
    if sdk:
        backend = str(versions["kubeflow_pipelines_version"])
        same = minor(sdk.group(1)) == minor(backend)
        report.add("ok" if same else "WRONG", "kfp backend matches sdk", f"backend {backend}, SDK kfp=={sdk.group(1)}")


def helm_skew(up: Upstream, report: Report, what: str, helm: str, k8s: str) -> None:
    """Report whether helm ``helm``'s client-go (index.json notes) is within Kubernetes ``k8s``'s skew."""
    go = next((n for n in up.notes("helm/helm") if n.startswith(f"{helm} ") and "client-go" in n), None)
    if go is None:
        report.add("UNVERIFIABLE", what, f"no client-go version recorded for helm {helm}")
        return
    client = minor(re.search(r"client-go v([\d.]+)", go).group(1))[1] + 1  # type: ignore[union-attr]  # 0.36 -> 1.36
    k8s_minor = minor(k8s)[1]
    ok = 0 <= client - k8s_minor <= 3 or 0 <= k8s_minor - client <= 1
    report.add("ok" if ok else "WRONG", what, f"{go}; Kubernetes {k8s}")


def check_image_helm(up: Upstream, report: Report, root: Path, k8s: str) -> None:
    """The pipeline image's helm (tools/images/helm.pins, the rollout executor's): a stable tag, in skew."""
    pins_file = root / "tools" / "images" / "helm.pins"
    if not pins_file.exists():
        return
    pins = dict(
        line.split("=", 1) for line in pins_file.read_text().splitlines() if "=" in line and not line.startswith("#")
    )
    helm = pins.get("HELM_IMAGE_VERSION", "")
    what = f"image_helm_version={helm} (tools/images/helm.pins)"
    if up.check_tag(report, what, "helm/helm", helm):
        helm_skew(up, report, f"image_helm_version={helm} client-go skew", helm, k8s)


def image_refs(root: Path, versions: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, image) for every image reference with a tag in Dockerfiles, chart values, manifests, versions.yml."""
    for path in sorted((root / "docker").glob("*Dockerfile")):
        args: dict[str, str] = {}
        for line in path.read_text().splitlines():
            arg = re.match(r"\s*ARG\s+(\w+)=(\S+)", line)
            if arg:
                args[arg.group(1)] = arg.group(2).strip("\"'")
            base = re.match(r"\s*FROM\s+(?:--\S+\s+)?(\S+)", line)
            if base:
                image = base.group(1)
                for name, default in args.items():  # ${BASE_IMAGE} -> the ARG default the build uses
                    image = image.replace(f"${{{name}}}", default).replace(f"${name}", default)
                if IMAGE.match(image):
                    yield f"{path.relative_to(root)} FROM", image
    for path in sorted([*(root / "helm").rglob("values*.yaml"), *(root / "manifests").rglob("*.yaml")]):
        for line in path.read_text().splitlines():
            found = re.match(r"\s*(?:-\s*)?(?:image|storageInitializer|repository)?\w*:\s*\"?([^\s\"#]+)", line)
            if (
                found
                and IMAGE.match(found.group(1))
                and "/" in found.group(1)
                and not found.group(1).startswith("http")
            ):
                yield str(path.relative_to(root)), found.group(1)
    yield "versions.yml pause_image", str(versions["pause_image"])


def check_images(up: Upstream, report: Report, root: Path, versions: dict[str, Any]) -> None:
    """Image tags: facegate's own at the chart's appVersion, KServe/MinIO tags in the snapshot, the rest listed."""
    app = yaml.safe_load((root / "helm" / "facegate" / "Chart.yaml").read_text())["appVersion"]
    if str(versions["facegate_version"]) != str(app):
        report.add("WRONG", "facegate_version", f"{versions['facegate_version']} != chart appVersion {app}")
    seen = set()
    for where, image in image_refs(root, versions):
        if (where, image) in seen:
            continue
        seen.add((where, image))
        name, tag = image.rsplit(":", 1)
        what = f"{where}: {image}"
        if name.startswith("ghcr.io/facegate/"):
            report.add("ok" if tag == str(app) else "WRONG", what, f"facegate's own image at appVersion {app}")
        elif name in IMAGE_PROJECTS:
            known = up.check_tag(report, what, IMAGE_PROJECTS[name], tag)
            if known and name.endswith("storage-initializer") and tag != str(versions["kserve_chart_version"]):
                report.add("WRONG", what, f"storage-initializer {tag} != KServe {versions['kserve_chart_version']}")
        else:
            report.add("info", what, "registry tags are not in the snapshot: not checkable offline")


def check_terraform(up: Upstream, report: Report, root: Path) -> None:
    """The OpenStack provider: one exact, tagged version (and the lock file, when there is one, agrees)."""
    for path in sorted((root / "terraform").rglob("versions.tf")):
        text = path.read_text()
        block = re.search(r"openstack\s*=\s*\{[^}]*version\s*=\s*\"([^\"]+)\"", text)
        if not block:
            continue
        what = f"{path.relative_to(root)}: openstack provider"
        exact = re.fullmatch(r"=?\s*(\d+\.\d+\.\d+)", block.group(1).strip())
        if not exact:
            report.add("WRONG", what, f"constraint {block.group(1)!r} floats: pin one exact version")
            continue
        repo = "terraform-provider-openstack/terraform-provider-openstack"
        up.check_tag(report, what, repo, "v" + exact.group(1))
        lock = path.parent / ".terraform.lock.hcl"
        for problem in lock_problems(lock, exact.group(1)):
            report.add("WRONG", f"{lock.relative_to(root)}", problem)


LOCK_BLOCK = re.compile(
    r'provider "registry\.terraform\.io/terraform-provider-openstack/openstack" \{(?P<body>.*?)\n\}', re.S
)
LOCK_HASH = re.compile(r"(?:h1:[A-Za-z0-9+/]{43}=|zh:[0-9a-f]{64})")


def lock_problems(lock: Path, version: str) -> list[str]:
    """What is wrong with the provider lock file for the pinned OpenStack `version` (empty: nothing).

    The lock is what makes `terraform init` refuse a provider archive whose checksum differs from the release's
    (`zh:` hashes are the SHA-256 of the release's zip archives, one per platform; `h1:` hashes cover the unpacked
    package). A lock without `zh:` hashes, or with malformed ones, would check nothing on a new platform.
    """
    if not lock.exists():
        return ["missing: commit the provider lock file (docs/deploy-compatibility.md, 'Terraform lock file')"]
    block = LOCK_BLOCK.search(lock.read_text())
    if not block:
        return ["no terraform-provider-openstack/openstack entry"]
    body, problems = block.group("body"), []
    if f'version     = "{version}"' not in body:
        problems.append(f"does not lock openstack {version}")
    if not re.search(rf'constraints = "=?\s*{re.escape(version)}"', body):
        problems.append(f"its constraints are not the exact pin {version}")
    hashes = re.findall(r'"([^"]+)",', body.split("hashes", 1)[-1])
    bad = [value for value in hashes if not LOCK_HASH.fullmatch(value)]
    if bad:
        problems.append(f"malformed hashes: {bad}")
    if not any(value.startswith("zh:") for value in hashes):
        problems.append("no zh: (release archive) hashes")
    return problems


def check(root: Path, upstream: Path, today: dt.date) -> Report:
    """Every check above on the tree at `root` against the snapshot at `upstream`."""
    versions = yaml.safe_load((root / "ansible" / "group_vars" / "all" / "versions.yml").read_text())
    ack_file = root / "tools" / "validate" / "pins-unverifiable.yaml"
    acknowledged = (yaml.safe_load(ack_file.read_text()) or {}) if ack_file.exists() else {}
    report, up = Report(acknowledged), Upstream(upstream)
    for var, value in versions.items():
        if var in TAG_PINS:
            repo, template = TAG_PINS[var]
            up.check_tag(
                report,
                f"{var}={value}",
                repo,
                template.format(str(value).split("-")[0] if var.startswith("nvidia_container") else value),
            )
        elif var in NOT_IN_SNAPSHOT:
            report.add("UNVERIFIABLE", f"{var}={value}", f"{NOT_IN_SNAPSHOT[var]} is not in the snapshot")
        elif var not in OTHER_PINS:
            report.add("WRONG", f"{var}={value}", "no check knows this pin: add it to check_pins.py")
    check_helm_tasks(up, report, root, versions)
    check_role_paths(up, report, root, versions)
    check_stack(up, report, root, versions, today)
    check_images(up, report, root, versions)
    check_terraform(up, report, root)
    return report


def find_upstream(root: Path) -> Path:
    """$FACEGATE_SHARED/upstream, else ROOT/../shared/upstream."""
    shared = os.environ.get("FACEGATE_SHARED")
    return Path(shared) / "upstream" if shared else root / ".." / "shared" / "upstream"


def main(argv: list[str] | None = None) -> int:
    """Print one verdict per pin; exit 1 when any is WRONG or UNVERIFIABLE, 2 without a snapshot."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, default=Path(os.environ.get("FACEGATE_ROOT", HERE)))
    parser.add_argument("--upstream", type=Path, default=None)
    parser.add_argument("--today", type=dt.date.fromisoformat, default=dt.date.today())
    args = parser.parse_args(argv)
    upstream = args.upstream or find_upstream(args.root)
    if not (upstream / "index.json").exists():
        print(f"upstream snapshot not found at {upstream} (set FACEGATE_SHARED or --upstream)", file=sys.stderr)
        return 2
    report = check(args.root.resolve(), upstream, args.today)
    for verdict, what, why in report.lines:
        print(f"{verdict:<13} {what}: {why}")
    counts = {v: sum(1 for line in report.lines if line[0] == v) for v in sorted({line[0] for line in report.lines})}
    print(f"pins: {counts} (snapshot {upstream}, today {args.today})")
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
