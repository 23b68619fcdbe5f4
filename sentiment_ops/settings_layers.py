"""The layers under the typed settings (``sentiment_ops.config``): a YAML file and the
``SENTOPS_*`` environment, read into nested dicts that ``config.load_settings`` merges over the
defaults, then flags over them.

``SENTOPS_<SECTION>__<KEY>`` sets ``section.key`` (a YAML scalar: ``2``, ``true``, ``null``);
the bearer tokens in ``SECRET_ENV_VARS`` are never settings.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from sentiment_ops.errors import ConfigError

ENV_PREFIX = "SENTOPS_"


def deep_merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def set_dotted(target: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = target
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"invalid setting {dotted!r}: {part!r} is not a section")
    node[parts[-1]] = value


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of settings")
    return data


# Bearer tokens of the server: read from the environment where used, never settings.
SECRET_ENV_VARS = ("SENTOPS_ADMIN_TOKEN", "SENTOPS_FEEDBACK_TOKEN", "SENTOPS_PREDICT_TOKEN")


# The resolved settings (JSON) that `sentops serve --workers N` hands to its worker processes
# (``serving.app.create_app_from_env``); not a setting itself.
WORKER_SETTINGS_ENV = "SENTOPS_WORKER_SETTINGS"


def env_layer(environ: Mapping[str, str]) -> dict[str, Any]:
    layer: dict[str, Any] = {}
    for key, raw in environ.items():
        if not key.startswith(ENV_PREFIX) or key in ("SENTOPS_CONFIG", WORKER_SETTINGS_ENV):
            continue
        if key in SECRET_ENV_VARS:  # secrets stay out of settings (and out of logged configs)
            continue
        dotted = key[len(ENV_PREFIX) :].lower().replace("__", ".")
        try:
            value = yaml.safe_load(raw) if raw != "" else None
        except yaml.YAMLError:
            value = raw
        if isinstance(value, (dict, list)):
            value = raw
        set_dotted(layer, dotted, value)
    if "MLFLOW_TRACKING_URI" in environ and "tracking_uri" not in layer.get("mlflow", {}):
        set_dotted(layer, "mlflow.tracking_uri", environ["MLFLOW_TRACKING_URI"])
    return layer
