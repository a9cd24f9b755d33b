"""The chart's retention purge and gallery backup CronJobs (docs/operations-retention.md)."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from tests.deploy.conftest import CHART, one

pytestmark = pytest.mark.integration


def _pod(cron: dict[str, Any]) -> dict[str, Any]:
    return cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_purge_cronjob_runs_the_policy_from_values(render) -> None:
    objects = render("values.yaml", "retention.inactiveDays=730", "retention.auditDays=1000",
                     "retention.auditMode=delete", "retention.endOfEnrollment=2027-06-30",
                     "retention.timeZone=Europe/Berlin")  # fmt: skip
    cron = one(objects, "CronJob", "facegate-purge")
    assert cron["spec"]["concurrencyPolicy"] == "Forbid" and cron["spec"]["timeZone"] == "Europe/Berlin"
    (container,) = _pod(cron)["containers"]
    assert container["command"] + container["args"] == ["facegate", "gallery", "purge"]
    env = _env(container)
    assert env["FACEGATE_RETENTION__INACTIVE_DAYS"] == "730"
    assert env["FACEGATE_RETENTION__AUDIT_DAYS"] == "1000"
    assert env["FACEGATE_RETENTION__AUDIT_MODE"] == "delete"
    assert env["FACEGATE_RETENTION__END_OF_ENROLLMENT"] == "2027-06-30"
    assert env["FACEGATE_GALLERY_KEYS"]["secretKeyRef"]["name"] == "facegate-gallery-keys"
    # The values reach facegate's own settings, which accept them (the same bounds as the schema).
    from facegate.config import load_settings

    policy = load_settings(env={k: v for k, v in env.items() if k.startswith("FACEGATE_RETENTION__")}).retention
    assert (policy.inactive_days, policy.audit_days, str(policy.end_of_enrollment)) == (730, 1000, "2027-06-30")


def test_backup_cronjob_dumps_with_the_server_image_and_seals(render) -> None:
    objects = render("values.yaml", "backup.keep=14", "backup.url=s3://exam-backups/facegate")
    cron = one(objects, "CronJob", "facegate-backup")
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    pod = _pod(cron)
    (dump,) = pod["initContainers"]
    assert (
        dump["image"]
        == one(objects, "StatefulSet", "facegate-postgresql")["spec"]["template"]["spec"]["containers"][0]["image"]
    )  # pg_dump of the server's own major version
    assert "--file /dump/gallery.dump" in dump["command"][-1] and "GALLERY_URL" in _env(dump)
    (seal,) = pod["containers"]
    args = seal["args"]
    assert args[:2] == ["gallery", "backup"] and args[args.index("--dump-file") + 1] == "/dump/gallery.dump"
    assert args[args.index("--keep") + 1] == "14" and args[args.index("--to") + 1] == "s3://exam-backups/facegate"
    assert {"AWS_ACCESS_KEY_ID", "FACEGATE_GALLERY_KEYS"} <= set(_env(seal))
    assert {m["mountPath"] for m in seal["volumeMounts"]} >= {"/dump", "/tmp"}
    assert "FACEGATE_GALLERY_KEYS" not in _env(dump)  # the plain-dump step never sees the keys


def test_jobs_can_be_turned_off_and_the_schema_guards_the_policy(render, helm) -> None:
    objects = render("values.yaml", "retention.enabled=false", "backup.enabled=false")
    assert not [o for o in objects if o["kind"] == "CronJob"]
    for bad in ("retention.inactiveDays=2000", "retention.auditMode=shred", "retention.endOfEnrollment=June",
                "backup.keep=0", "backup.schedule=daily"):  # fmt: skip
        proc = subprocess.run([str(helm), "template", "f", str(CHART), "--set", bad], capture_output=True, text=True)
        assert proc.returncode != 0 and "values don't meet the specifications of the schema" in proc.stderr, bad
