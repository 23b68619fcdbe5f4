from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from sentiment_ops.config import Settings, load_settings
from sentiment_ops.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_precedence_defaults_yaml_env_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("train:\n  epochs: 3\n  max_length: 128\n  seed: 5\n")
    monkeypatch.setenv("SENTOPS_TRAIN__MAX_LENGTH", "200")
    monkeypatch.setenv("SENTOPS_TRAIN__SEED", "6")
    s = load_settings(cfg, {"train.seed": 7, "train.epochs": None})
    assert s.train.epochs == 3  # yaml beats default, flag None = not given
    assert s.train.max_length == 200  # env beats yaml
    assert s.train.seed == 7  # flag beats env
    assert s.train.learning_rate == Settings().train.learning_rate  # default kept


def test_default_yaml_matches_builtin_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SENTOPS_HOME")
    data = yaml.safe_load((ROOT / "configs" / "default.yaml").read_text())
    data.pop("home", None)
    builtin = Settings().to_dict()
    builtin.pop("home")
    assert data == builtin


def test_full_yaml_is_valid() -> None:
    s = load_settings(ROOT / "configs" / "full.yaml")
    assert s.train.max_samples is None and s.train.max_length >= 256


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("train:\n  epoch: 2\n", "unknown setting 'train.epoch'"),
        ("train:\n  epochs: lots\n", "invalid setting 'train.epochs'"),
        ("nonsense: 1\n", "unknown setting 'nonsense'"),
        ("- a\n- b\n", "must hold a mapping"),
        ("train: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_config_file(tmp_path: Path, content: str, message: str) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(content)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        load_settings(cfg)


def test_drift_permutations_must_reach_alpha() -> None:
    # two statistics: the smallest p the test can reach is about 2 / (permutations + 1)
    with pytest.raises(
        ConfigError, match=r"^invalid setting 'drift': 50 permutations cannot reach alpha 0\.01: use at least 200"
    ):
        load_settings(overrides={"drift.permutations": 50})
    with pytest.raises(ConfigError, match=r"500 permutations cannot reach alpha 0\.002: use at least 1000"):
        load_settings(overrides={"drift.alpha": 0.002})
    assert load_settings(overrides={"drift.permutations": 50, "drift.method": "cosine"}).drift.permutations == 50
    assert load_settings(overrides={"drift.permutations": 200}).drift.permutations == 200


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings(tmp_path / "nope.yaml")


def test_env_unknown_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SENTOPS_TRAIN__NOPE", "1")
    with pytest.raises(ConfigError, match=r"unknown setting 'train\.nope'"):
        load_settings()


def test_home_and_default_uris(isolated_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = load_settings()
    assert s.home == isolated_home
    assert s.tracking_uri == f"sqlite:///{isolated_home / 'mlflow.db'}"
    assert s.store_url == f"sqlite:///{isolated_home / 'inference.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    assert load_settings().tracking_uri == "http://mlflow:5000"


def test_cli_help_works_with_broken_settings(cli, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("SENTOPS_TRAIN__EPOCHS", "not-a-number")
    result = cli("--help")
    assert result.exit_code == 0
    assert "train" in result.stdout
    result = cli("config", "show")
    assert result.exit_code == 2
    assert "invalid setting 'train.epochs'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_cli_config_show_json(cli, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    import json

    monkeypatch.setenv("SENTOPS_SERVE__PORT", "9123")
    result = cli("config", "show", "--json")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["serve"]["port"] == 9123
    assert data["resolved"]["tracking_uri"].startswith("sqlite:///")


def test_sentops_leaves_mlflow_global_uris_alone(cli, trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """Training (which logs a model, the one call that needs MLflow's global tracking URI)
    exports no MLFLOW_TRACKING_URI and keeps one the user exported: a second home loaded
    later in the same process gets its own store, a user's URI is still honoured."""
    import mlflow

    first = load_settings()
    assert "MLFLOW_TRACKING_URI" not in os.environ and "MLFLOW_REGISTRY_URI" not in os.environ
    assert mlflow.get_tracking_uri() != first.tracking_uri
    other = tmp_path / "other-home"
    monkeypatch.setenv("SENTOPS_HOME", str(other))
    assert load_settings().tracking_uri == f"sqlite:///{other / 'mlflow.db'}"

    user_uri = f"sqlite:///{tmp_path / 'user.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", user_uri)
    assert cli("train", "--json").exit_code == 0
    assert os.environ["MLFLOW_TRACKING_URI"] == user_uri
    assert load_settings().tracking_uri == user_uri
    assert (tmp_path / "user.db").exists()


def test_demo_section_in_default_yaml_is_the_builtin_one() -> None:
    data = yaml.safe_load((ROOT / "configs" / "default.yaml").read_text())
    assert data["demo"] == Settings().demo.model_dump(mode="json")


def test_cli_config_show_prints_values_as_written(cli, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    # A value with Rich markup must print as the characters it is, not crash or style.
    monkeypatch.setenv("SENTOPS_MLFLOW__EXPERIMENT", "exp [/bold] [link=https://example.invalid]x[/link]")
    result = cli("config", "show")
    assert result.exit_code == 0, result.stderr
    assert "exp [/bold] [link=https://example.invalid]x[/link]" in result.stdout
