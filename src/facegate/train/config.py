"""Training configuration: a typed, frozen object loaded from YAML with ``key.sub=value`` overrides.

Configs for the published recipes live in ``configs/`` (``ms1mv2_r50.yaml``: ArcFace m=0.5 s=64, SGD lr 0.1 for a
global batch of 8x128, weight decay 5e-4, 20 epochs) next to ``tiny_cpu.yaml`` for laptops and tests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from facegate.config import describe_validation_error
from facegate.errors import ConfigError

__all__ = ["TrainConfig", "load_train_config"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ModelConfig(_Frozen):
    """Backbone."""

    backbone: str = "iresnet50"
    embedding_size: int = Field(512, ge=8)
    width: float = Field(1.0, gt=0.0)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)


class MarginConfig(_Frozen):
    """Combined margin: ArcFace (1, 0.5, 0), CosFace (1, 0, 0.4)."""

    s: float = Field(64.0, gt=0.0)
    m1: float = Field(1.0, ge=1.0)
    m2: float = Field(0.5, ge=0.0)
    m3: float = Field(0.0, ge=0.0)
    sample_rate: float = Field(1.0, gt=0.0, le=1.0)


class DataConfig(_Frozen):
    """Training data: an aligned image folder, an insightface RecordIO directory, or synthetic identities."""

    kind: Literal["synthetic", "folder", "recordio"] = "synthetic"
    path: str | None = None
    synthetic_identities: int = Field(40, ge=2)
    synthetic_per_identity: int = Field(10, ge=2)
    flip: bool = True
    num_workers: int = Field(0, ge=0)
    #: Folder data only: identity names to leave out (e.g. the identities of a validation pair set).
    exclude_identities: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _path_needed(self) -> DataConfig:
        if self.kind != "synthetic" and not self.path:
            raise ValueError(f"data.path is required for data.kind={self.kind}")
        return self


class ValConfig(_Frozen):
    """Periodic verification during training."""

    kind: Literal["none", "synthetic", "pairs"] = "synthetic"
    pairs: str | None = None
    images: str | None = None
    #: Synthetic validation: identities disjoint from training ones (a different seed offset).
    synthetic_identities: int = Field(20, ge=2)
    synthetic_per_identity: int = Field(6, ge=2)
    synthetic_pairs: int = Field(600, ge=20)
    every_steps: int = Field(0, ge=0)  # 0 = at the end of each epoch
    flip: bool = False
    target_accuracy: float | None = Field(None, gt=0.0, le=1.0)


class OptimConfig(_Frozen):
    """Optimiser and schedule (polynomial decay with linear warmup, as arcface_torch)."""

    name: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(0.1, gt=0.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    weight_decay: float = Field(5e-4, ge=0.0)
    warmup_epochs: float = Field(0.0, ge=0.0)
    power: float = Field(2.0, gt=0.0)
    clip_grad_norm: float | None = Field(5.0, gt=0.0)


class TrainConfig(_Frozen):
    """Everything a training run is configured with."""

    name: str = "run"
    output: str = ".facegate/runs/run"
    seed: int = 2048
    epochs: int = Field(20, ge=1)
    max_steps: int | None = Field(None, ge=1)
    batch_size: int = Field(128, ge=1)  # per process
    grad_accum: int = Field(1, ge=1)
    amp: Literal["none", "bf16", "fp16"] = "none"
    channels_last: bool = True
    compile: bool = False
    device: Literal["auto", "cpu", "cuda"] = "auto"
    checkpoint_every_steps: int = Field(0, ge=0)  # 0 = at the end of each epoch
    log_every_steps: int = Field(10, ge=1)
    teacher: str | None = None
    distill_weight: float = Field(1.0, ge=0.0)
    model: ModelConfig = ModelConfig()
    margin: MarginConfig = MarginConfig()
    data: DataConfig = DataConfig()
    val: ValConfig = ValConfig()
    optim: OptimConfig = OptimConfig()

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (YAML/JSON/MLflow params)."""
        return self.model_dump(mode="json")


def _set(data: dict[str, Any], dotted: str, value: Any) -> None:
    cur = data
    parts = dotted.split(".")
    for p in parts[:-1]:
        cur = cur.setdefault(p, {})
        if not isinstance(cur, dict):
            raise ConfigError(f"override {dotted!r}: {p} is not a section")
    cur[parts[-1]] = value


def load_train_config(
    path: str | Path | None = None, overrides: list[str] | dict[str, Any] | None = None
) -> TrainConfig:
    """Load a training config from YAML and apply overrides.

    Args:
        path: YAML file (``None`` for defaults).
        overrides: ``["optim.lr=0.05", "epochs=2"]`` (values parsed as YAML) or a dotted-key dict.

    Raises:
        ConfigError: On an unreadable file, a malformed override or an invalid value (naming the key).
    """
    data: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"{path}: cannot read training config ({exc})") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: top level must be a mapping")
        data = loaded
    items: list[tuple[str, Any]]
    if isinstance(overrides, dict):
        items = list(overrides.items())
    else:
        items = []
        for text in overrides or []:
            key, sep, raw = text.partition("=")
            if not sep or not key.strip():
                raise ConfigError(f"override {text!r} must look like key.sub=value")
            items.append((key.strip(), yaml.safe_load(raw)))
    for key, value in items:
        _set(data, key, value)
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"invalid training config: {describe_validation_error(exc)}") from None
