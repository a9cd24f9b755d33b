"""Typed, frozen settings: defaults < YAML file < environment (``FACEGATE_*``) < command-line flags.

Nested keys use ``__`` in the environment (``FACEGATE_EVALUATE__BATCH_SIZE=32``) and dots on the command line
(``evaluate.batch_size=32``). The resolved settings are dumped as ``config.yaml`` beside every output so a result can
always be traced to the configuration that made it. Credentials are never settings: S3 keys come from the standard
``AWS_*`` variables and are neither read into nor dumped from this object.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import date
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from facegate.errors import ConfigError
from facegate.utils import atomic_write_text

__all__ = ["ENV_PREFIX", "Settings", "describe_validation_error", "load_settings"]

ENV_PREFIX = "FACEGATE_"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DetectorSettings(_Frozen):
    """Face detector."""

    name: Literal["yunet"] = "yunet"
    score_threshold: float = Field(0.7, ge=0.0, le=1.0)
    nms_threshold: float = Field(0.3, ge=0.0, le=1.0)
    max_side: int = Field(640, ge=0)


class FaceSettings(_Frozen):
    """Face selection and quality policy (see :class:`facegate.faces.quality.FacePolicy`)."""

    min_face_size: float = Field(32.0, ge=0.0)
    min_sharpness: float = Field(10.0, ge=0.0)
    multiple: Literal["reject", "pick"] = "pick"
    second_face_ratio: float = Field(0.35, gt=0.0, le=1.0)


class LimitSettings(_Frozen):
    """Limits checked before decoding an image."""

    max_bytes: int = Field(20 * 1024 * 1024, gt=0)
    max_pixels: int = Field(40_000_000, gt=0)
    min_side: int = Field(16, ge=1)


class EvaluateSettings(_Frozen):
    """Evaluation."""

    batch_size: int = Field(64, ge=1)
    flip: bool = False
    target_far: float = Field(1e-3, gt=0.0, lt=1.0)
    align: Literal["auto", "always", "never"] = "auto"
    workers: int = Field(2, ge=1)
    #: The network's arithmetic. f32 by default: the gate decides on the scores of the model as trained and served;
    #: bf16 (SFace on OpenVINO) is ~1.7x faster and moves LFW scores by up to 0.012 (docs/performance-eval.md).
    precision: Literal["f32", "bf16"] = "f32"


class IngestSettings(_Frozen):
    """Dataset ingestion (detect + align)."""

    workers: int = Field(2, ge=0)
    jpeg_quality: int = Field(95, ge=50, le=100)


class VerifySettings(_Frozen):
    """1:1 verification."""

    threshold: float | None = Field(None, ge=-1.0, le=1.0)


class ServeSettings(_Frozen):
    """The verifier service (``facegate serve``)."""

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    model_name: str = Field("verifier", pattern=r"^[a-z][a-z0-9-]{0,62}$")
    gallery_url: str = ""
    max_batch: int = Field(16, ge=1, le=256)
    batch_wait_ms: float = Field(2.0, ge=0.0, le=200.0)
    preprocess_threads: int = Field(4, ge=1, le=64)
    #: Longest side at which the server's detector runs (0: ``detector.max_side``). A kiosk's face fills much of a
    #: 640x480 frame: YuNet finds it as well at 320x240 for a quarter of the work, and the face is still aligned
    #: from the full-resolution image (the landmarks are mapped back). Same decisions and scores within 0.01 on
    #: the test photos: docs/performance-serving.md.
    detect_max_side: int = Field(320, ge=0)
    #: OpenCV's threads per call, process-wide (0: OpenCV's default, one per core). Check-ins already run in
    #: parallel on the preprocess threads; OpenCV's own pool on top of them busy-waits after every call
    #: (sched_yield), taking the core that the event loop and the embedder need.
    opencv_threads: int = Field(1, ge=0, le=64)
    #: Run a synthetic check-in on every preprocess thread before readiness, so the first kiosk is not the one that
    #: pays for the detector's creation and the first forward passes (facegate.serve.warmup).
    warmup: bool = True
    max_request_bytes: int = Field(8 * 1024 * 1024, gt=0)
    max_admin_request_bytes: int = Field(64 * 1024 * 1024, gt=0)
    max_verify_pixels: int = Field(24_000_000, gt=0)
    rate_per_minute: float = Field(120.0, gt=0.0)
    rate_burst: int = Field(20, ge=1)
    #: Prometheus ``/metrics`` listens on its own port, loopback by default (the chart opens it to Prometheus only
    #: with a NetworkPolicy); port 0 picks a free port (tests).
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(8082, ge=0, le=65535)
    #: Addresses or CIDRs of proxies whose ``X-Forwarded-For`` is believed (empty: nobody's; a comma-separated
    #: string is accepted from the environment).
    trusted_proxies: tuple[str, ...] = ()
    #: Photos larger than this side are decoded downscaled (JPEG draft mode) before detection.
    max_decode_side: int = Field(1600, ge=64)
    #: Decoded pixels one request may spend over all its images.
    max_request_pixels: int = Field(30_000_000, gt=0)
    #: Inference requests one key may have in flight (more: 429); all keys together (more: 503).
    max_inflight_per_key: int = Field(2, ge=1)
    max_inflight: int = Field(32, ge=1)
    #: Seconds a client may take to send a request's headers, and its body; idle keep-alive connections close after
    #: ``keepalive_s``. Open connections beyond ``max_connections`` get 503.
    header_timeout_s: float = Field(10.0, gt=0.0)
    body_timeout_s: float = Field(30.0, gt=0.0)
    keepalive_s: float = Field(5.0, gt=0.0)
    max_connections: int = Field(1000, ge=1)
    #: Passive liveness (MiniFASNet) before verification, off by default: a liveness bundle made by
    #: ``facegate liveness convert``; a face scoring under the threshold (the bundle's when unset) is a
    #: ``reject`` with reason ``presentation_attack``.
    liveness: bool = False
    liveness_model: str = ""
    liveness_threshold: float | None = Field(None, ge=0.0, le=1.0)

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _split_proxies(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(p.strip() for p in value.split(",") if p.strip())
        return value


class StorageSettings(_Frozen):
    """Object storage: a local directory (default ``<home>/store``) or ``s3://bucket/prefix``."""

    url: str = ""
    s3_endpoint: str | None = None


class RetentionSettings(_Frozen):
    """How long the gallery keeps biometric data and audit rows (``facegate gallery purge``).

    A student's templates and encrypted crops go once the student has not been verified (nor enrolled) for
    ``inactive_days``, or for everyone once ``end_of_enrollment`` has passed. Audit rows older than ``audit_days``
    are stripped of the student id (``audit_mode: strip``, counts stay for statistics) or deleted (``delete``).
    """

    inactive_days: int = Field(365, ge=1, le=3 * 365)  # BIPA: destroy within three years of the last interaction
    end_of_enrollment: date | None = None
    audit_days: int = Field(365, ge=1)
    audit_mode: Literal["strip", "delete"] = "strip"

    @model_validator(mode="after")
    def _audit_outlives_templates(self) -> RetentionSettings:
        # The audit's verify rows are the record of a student's last interaction: erasing them sooner would make a
        # student who was verified recently look inactive, and erase them early.
        if self.audit_days < self.inactive_days:
            raise ValueError("audit_days must be at least inactive_days (the audit records the last verification)")
        return self


class BackupSettings(_Frozen):
    """Gallery backups (``facegate gallery backup``): where, and how many copies to keep."""

    #: Storage URL for backups; empty = ``storage.url`` (``<home>/store`` by default).
    url: str = ""
    prefix: str = Field("backups/gallery", pattern=r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$")
    keep: int = Field(7, ge=1, le=1000)


class Settings(_Frozen):
    """Everything facegate can be configured with."""

    home: Path = Path(".facegate")
    model: str = "sface"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    detector: DetectorSettings = DetectorSettings()
    face: FaceSettings = FaceSettings()
    limits: LimitSettings = LimitSettings()
    evaluate: EvaluateSettings = EvaluateSettings()
    ingest: IngestSettings = IngestSettings()
    verify: VerifySettings = VerifySettings()
    storage: StorageSettings = StorageSettings()
    serve: ServeSettings = ServeSettings()
    retention: RetentionSettings = RetentionSettings()
    backup: BackupSettings = BackupSettings()

    def to_dict(self) -> dict[str, Any]:
        """JSON/YAML-ready plain dict."""
        return self.model_dump(mode="json")

    def dump(self, directory: str | Path, name: str = "config.yaml") -> Path:
        """Write the resolved settings beside an output."""
        path = Path(directory) / name
        atomic_write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=True))
        return path

    def gallery_url(self) -> str:
        """The gallery database URL, defaulting to SQLite at ``<home>/gallery.db``."""
        return self.serve.gallery_url or f"sqlite:///{(self.home / 'gallery.db').resolve()}"

    def storage_url(self) -> str:
        """The storage URL, defaulting to ``<home>/store``."""
        return self.storage.url or str(self.home / "store")


def _deep_merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _deep_merge(base[key], value)
        elif isinstance(value, Mapping):
            base[key] = _deep_merge({}, value)
        else:
            base[key] = value
    return base


def _nest(path: list[str], value: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    cur = out
    for part in path[:-1]:
        cur = cur.setdefault(part, {})
    cur[path[-1]] = value
    return out


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for key, value in env.items():
        if not key.startswith(ENV_PREFIX) or key == ENV_PREFIX + "CONFIG":
            continue
        parts = [p.lower() for p in key[len(ENV_PREFIX) :].split("__") if p]
        # Only variables naming a known top-level setting: the FACEGATE_ namespace is shared (Kubernetes injects
        # FACEGATE_SERVICE_HOST / FACEGATE_PORT for a Service named facegate). Typos below a known key still fail.
        # An empty variable means "unset" (Helm charts often render optional values as ""), not null.
        if parts and parts[0] in Settings.model_fields and value != "":
            _deep_merge(data, _nest(parts, value))
    return data


def load_settings(
    config_file: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> Settings:
    """Resolve settings from every layer.

    Args:
        config_file: YAML file (also taken from ``FACEGATE_CONFIG`` when not given).
        overrides: Flag values, keys dotted (``"evaluate.batch_size"``); ``None`` values are ignored so unset
            flags do not mask lower layers.
        env: Environment to read (``os.environ`` by default).

    Raises:
        ConfigError: For an unreadable file or an invalid value, naming the key.
    """
    environ = os.environ if env is None else env
    data: dict[str, Any] = {}
    path = config_file or environ.get(ENV_PREFIX + "CONFIG")
    if path:
        p = Path(path)
        try:
            loaded = yaml.safe_load(p.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"{p}: cannot read config ({exc})") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p}: top level must be a mapping")
        _deep_merge(data, loaded)
    _deep_merge(data, _from_env(environ))
    for key, value in (overrides or {}).items():
        if value is not None:
            _deep_merge(data, _nest(key.split("."), value))
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"invalid configuration: {describe_validation_error(exc)}") from None


def describe_validation_error(exc: ValidationError) -> str:
    """``key.sub: message; ...`` for every problem pydantic found (no URLs, no input values)."""
    return "; ".join(f"{'.'.join(str(x) for x in err['loc'])}: {err['msg']}" for err in exc.errors(include_url=False))
