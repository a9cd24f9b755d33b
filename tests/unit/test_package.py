import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.unit


def test_import_has_no_side_effects(tmp_path):
    code = (
        "import json, os, sys; before = dict(os.environ); "
        "import facegate, facegate.config, facegate.models, facegate.data, facegate.evaluate, facegate.faces; "
        "print(json.dumps({'env_same': before == dict(os.environ), "
        "'heavy': sorted(m for m in ('cv2', 'matplotlib', 'boto3', 'torch') if m in sys.modules)}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
        env={k: v for k, v in os.environ.items() if k != "FACEGATE_HOME"},
    )
    res = json.loads(out.stdout)
    assert res["env_same"]
    assert res["heavy"] == []
    assert list(tmp_path.iterdir()) == []  # nothing created in the working directory


def test_cli_help_lists_every_verb():
    from typer.testing import CliRunner

    from facegate.cli import app

    out = CliRunner().invoke(app, ["--help"])
    assert out.exit_code == 0
    for verb in ("ingest", "evaluate", "verify", "demo", "data", "models", "config"):
        assert verb in out.output
    for verb in ("ingest", "evaluate", "verify", "data", "models"):
        sub = CliRunner().invoke(app, [verb, "--help"])
        assert sub.exit_code == 0, sub.output
