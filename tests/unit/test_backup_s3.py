"""Backups through the CLI into S3 (moto): keep the last K, restore the newest into an empty SQLite gallery."""

import json

import boto3
import pytest
from moto import mock_aws
from typer.testing import CliRunner

from facegate.cli import app
from facegate.serve.gallery import Gallery, KeyRing
from tests.unit.test_retention_rules import _gallery

pytestmark = pytest.mark.unit


def test_backup_to_s3_keeps_k_and_restores(tmp_path, monkeypatch):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    key = KeyRing.generate("k1")
    g = _gallery(tmp_path, key)
    env = {"FACEGATE_GALLERY_KEYS": key, "FACEGATE_BACKUP__KEEP": "2"}
    live = f"sqlite:///{tmp_path / 'g.db'}"
    runner = CliRunner()
    with mock_aws():
        boto3.client("s3").create_bucket(Bucket="exam-backups")
        made = []
        for _ in range(3):
            out = runner.invoke(app, ["gallery", "backup", "--to", "s3://exam-backups/fg", "--db", live], env=env)
            assert out.exit_code == 0, out.output
            made.append(json.loads(out.stdout))
        listed = boto3.client("s3").list_objects_v2(Bucket="exam-backups")["Contents"]
        assert sorted(o["Key"] for o in listed) == sorted(f"fg/{m['key']}" for m in made[1:])  # keep=2 from settings
        assert made[2]["removed"] == [made[0]["key"]]
        body = boto3.client("s3").get_object(Bucket="exam-backups", Key=f"fg/{made[2]['key']}")["Body"].read()
        assert b"S-1" not in body and b"SQLite format" not in body
        target = f"sqlite:///{tmp_path / 'restored' / 'g.db'}"
        out = runner.invoke(app, ["gallery", "restore", "--from", "s3://exam-backups/fg", "--db", target], env=env)
        assert out.exit_code == 0, out.output
        assert json.loads(out.stdout)["key"] == made[2]["key"]
        again = runner.invoke(app, ["gallery", "restore", "--from", "s3://exam-backups/fg", "--db", target], env=env)
        assert again.exit_code != 0 and "not_empty" in again.output
        gone = runner.invoke(app, ["gallery", "restore", "nope.fgbk", "--from", "s3://exam-backups/fg"], env=env)
        assert gone.exit_code != 0 and "not_found" in gone.output and made[2]["key"].rsplit("/")[-1] in gone.output
    restored = Gallery(target, KeyRing.from_env({"FACEGATE_GALLERY_KEYS": key}))
    assert [s["student_id"] for s in restored.students()] == ["S-1", "S-2"]
    assert restored.counts() == g.counts()
    assert "testing" not in out.output and key.split(":", 1)[1] not in out.output
