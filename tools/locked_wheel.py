"""Find a local copy of a wheel that uv.lock pins, and prove it is the same file.

`make install` uses this where PyTorch's CPU index is unreachable (machines that reach only PyPI) but pip's
find-links folder holds the very wheel the lock names: the file must carry the locked name and the locked sha256, so
the fallback installs exactly what a user with the index gets. Prints the wheel's path; exits 1 with the reason on
stderr otherwise.

Usage: python tools/locked_wheel.py PACKAGE FOLDER [uv.lock]
"""

from __future__ import annotations

import hashlib
import sys
import tomllib
import urllib.parse
from pathlib import Path


def locked_wheels(lock: Path, package: str) -> list[tuple[str, str]]:
    """(file name, sha256) of every wheel uv.lock records for ``package``."""
    data = tomllib.loads(lock.read_text(encoding="utf-8"))
    found: list[tuple[str, str]] = []
    for entry in data.get("package", []):
        if entry.get("name") != package:
            continue
        for wheel in entry.get("wheels", []):
            name = urllib.parse.unquote(wheel["url"].rsplit("/", 1)[-1])
            found.append((name, wheel["hash"].removeprefix("sha256:")))
    return found


def main(argv: list[str]) -> int:
    """Print the matching local wheel's path, or explain why there is none."""
    if len(argv) not in (2, 3):
        print(__doc__, file=sys.stderr)
        return 2
    package, folder = argv[0], Path(argv[1])
    lock = Path(argv[2]) if len(argv) == 3 else Path("uv.lock")
    wheels = locked_wheels(lock, package)
    if not wheels:
        print(f"{lock} pins no wheel of {package}", file=sys.stderr)
        return 1
    for name, digest in wheels:
        candidate = folder / name
        if not candidate.is_file():
            continue
        actual = hashlib.sha256(candidate.read_bytes()).hexdigest()
        if actual == digest:
            print(candidate)
            return 0
        print(f"{candidate}: sha256 {actual} is not the locked {digest}", file=sys.stderr)
        return 1
    print(f"none of {[n for n, _ in wheels]} is in {folder}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
