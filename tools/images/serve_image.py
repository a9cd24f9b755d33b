"""Build-time helpers of docker/serve.Dockerfile: what to leave out of the venv, and what to byte-compile.

Usage (inside the image's build stage; plain Python 3.11, no third-party import):
    python3 serve_image.py excludes uv.lock   -> `--no-install-package NAME` for each package the server never needs
    python3 serve_image.py precompile         -> import what `facegate serve` imports, writing its bytecode

The serve image installs the `serve` extra and, of the `export` extra, only OpenVINO (the runtime of the served
bundle). `uv sync --no-install-package` skips one package, not what it pulls in, so the excludes are computed from
the lock: every package reachable from core + serve + export but not from core + serve + openvino (torch, NNCF,
onnxscript, onnxruntime, scipy, scikit-learn, sympy, ...), nor through a build-time-only tool (grpcio-tools).
Computed, not listed, so that a lock change cannot silently bring them back or break the build.

Bytecode: compiling the whole venv costs ~120 MB, most of it for modules the server never loads. Importing the
server's modules once at build time writes bytecode for exactly those; anything else compiles in memory if used
(the root file system is read-only at run time).
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import tomllib
from pathlib import Path
from typing import Any

#: The extra whose packages are kept only where the server needs them, and the ones it needs.
PARTIAL_EXTRA = "export"
KEEP_FROM_PARTIAL = ("openvino",)
FULL_EXTRAS = ("serve",)
#: Dependencies of kept packages that the server never runs: grpcio-tools is kserve's protobuf code generator, which
#: grpc imports only if present (try/except) and never calls at run time.
BUILD_TOOLS_ONLY = ("grpcio-tools",)

#: Third-party modules imported lazily, on the first request or the first S3 access.
LAZY = ("kserve", "openvino", "cv2", "sqlalchemy.dialects.sqlite", "sqlalchemy.dialects.postgresql", "psycopg",
        "cryptography.hazmat.primitives.ciphers.aead", "uvicorn", "uvloop", "httptools", "boto3")  # fmt: skip


def _closure(
    packages: dict[str, dict[str, Any]], roots: list[tuple[str, tuple[str, ...]]], prune: tuple[str, ...] = ()
) -> set[str]:
    """Names of every package reachable from ``roots`` ((name, extras) pairs), not walking into ``prune``."""
    seen: set[tuple[str, tuple[str, ...]]] = set()
    todo = list(roots)
    while todo:
        name, extras = todo.pop()
        if (name, extras) in seen or name not in packages or name in prune:
            continue
        seen.add((name, extras))
        pkg = packages[name]
        deps = list(pkg.get("dependencies", []))
        for extra in extras:
            deps += pkg.get("optional-dependencies", {}).get(extra, [])
        todo += [(d["name"], tuple(sorted(d.get("extra", [])))) for d in deps]
    return {name for name, _ in seen}


def excludes(lock_path: Path, project: str = "facegate") -> list[str]:
    """Packages of core + serve + the partial extra not needed by core + serve + KEEP_FROM_PARTIAL.

    Nothing is needed through BUILD_TOOLS_ONLY.
    """
    packages = {p["name"]: p for p in tomllib.loads(lock_path.read_text(encoding="utf-8"))["package"]}
    me = packages[project]
    opt = me.get("optional-dependencies", {})

    def deps(items: list[dict[str, Any]]) -> list[tuple[str, tuple[str, ...]]]:
        return [(d["name"], tuple(sorted(d.get("extra", [])))) for d in items]

    base = deps(me.get("dependencies", [])) + [d for e in FULL_EXTRAS for d in deps(opt.get(e, []))]
    partial = deps(opt.get(PARTIAL_EXTRA, []))
    everything = _closure(packages, base + partial)
    needed = _closure(packages, base + [d for d in partial if d[0] in KEEP_FROM_PARTIAL], prune=BUILD_TOOLS_ONLY)
    return sorted(everything - needed)


def precompile() -> tuple[int, list[str]]:
    """Import facegate's modules and LAZY (writing their bytecode); returns the count imported and those skipped.

    A facegate module whose imports are not in the image (torch, kfp, mlflow, matplotlib: training and pipeline
    code) is skipped: the server cannot be using it. A missing LAZY module is an error: the server needs it.
    """
    import facegate

    count, skipped = 0, []
    sys.argv[1:] = []  # kserve parses sys.argv when imported
    for mod in pkgutil.walk_packages(facegate.__path__, "facegate."):
        if mod.name.endswith("__main__"):  # it would run the CLI
            continue
        try:
            importlib.import_module(mod.name)
            count += 1
        except ImportError:
            skipped.append(mod.name)
    for name in LAZY:
        importlib.import_module(name)
        count += 1
    return count, skipped


def main(argv: list[str]) -> int:
    """Command-line entry point (see the module docstring)."""
    if argv[:1] == ["excludes"] and len(argv) == 2:
        print(" ".join(f"--no-install-package {name}" for name in excludes(Path(argv[1]))))
        return 0
    if argv == ["precompile"]:
        count, skipped = precompile()
        print(f"byte-compiled {count} modules; skipped (not in this image): {' '.join(skipped)}", file=sys.stderr)
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
