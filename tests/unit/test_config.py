import pydantic
import pytest
import yaml

from facegate.config import Settings, load_settings
from facegate.errors import ConfigError

pytestmark = pytest.mark.unit


def test_precedence_defaults_yaml_env_flags(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"model": "from-yaml", "evaluate": {"batch_size": 8, "flip": True}}))
    s = load_settings(cfg, env={})
    assert s.model == "from-yaml"
    assert s.evaluate.batch_size == 8
    assert s.evaluate.target_far == 1e-3  # default survives
    env = {"FACEGATE_EVALUATE__BATCH_SIZE": "16", "FACEGATE_MODEL": "from-env", "UNRELATED": "x"}
    s = load_settings(cfg, env=env)
    assert (s.model, s.evaluate.batch_size, s.evaluate.flip) == ("from-env", 16, True)
    s = load_settings(cfg, {"evaluate.batch_size": 32, "model": None}, env=env)
    assert s.evaluate.batch_size == 32  # the flag wins
    assert s.model == "from-env"  # an unset flag (None) does not mask the env


def test_unrelated_facegate_env_ignored_but_nested_typos_fail():
    env = {"FACEGATE_SERVICE_HOST": "10.0.0.1", "FACEGATE_PORT": "tcp://10.0.0.1:80"}  # Kubernetes service links
    assert load_settings(env=env) == Settings()
    with pytest.raises(ConfigError, match="evaluate.bathc_size"):
        load_settings(env={"FACEGATE_EVALUATE__BATHC_SIZE": "3"})


def test_config_file_from_env(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("face:\n  multiple: reject\n")
    assert load_settings(env={"FACEGATE_CONFIG": str(cfg)}).face.multiple == "reject"


def test_invalid_values_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"evaluate.batch_size"):
        load_settings(env={"FACEGATE_EVALUATE__BATCH_SIZE": "zero"})
    with pytest.raises(ConfigError, match=r"evaluate.target_far"):
        load_settings(overrides={"evaluate.target_far": 2.0}, env={})
    with pytest.raises(ConfigError, match=r"nonsense"):
        load_settings(overrides={"nonsense": 1}, env={})
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_settings(bad, env={})


def test_frozen_and_dumped(tmp_path):
    s = Settings()
    with pytest.raises(pydantic.ValidationError):
        s.model = "x"  # type: ignore[misc]
    path = s.dump(tmp_path)
    assert load_settings(path, env={}) == s


def test_empty_env_value_means_unset():
    assert load_settings(env={"FACEGATE_STORAGE__URL": "", "FACEGATE_VERIFY__THRESHOLD": ""}) == Settings()
