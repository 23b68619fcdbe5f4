"""The predictor of a registered model version, for every consumer that runs one outside a
training run: the server's holder (``serving.holder``) and batch scoring (``scoring``),
and ``resolve_version`` (a version by number or alias, as drift, scoring and the reference
name it). Imports neither torch nor onnxruntime.

``onnx`` (``predictor_for``, the server): only the int8 graph and the tokenizer files
logged with the version, run without torch (``tracking.artifacts.logged_predictor``); the
version's own Python (its logged model code, its pickles) never runs, so whoever can move
the alias cannot run code in the server. A version logged without its graph is refused
(``ModelRefusedError``). ``torch``: the logged model itself (fp32), loaded through MLflow,
which runs the version's code. ``exported_predictor``: the logged model through torch,
exported to ONNX and cached in the home (``inference.onnx.export_cache_dir``), for batch
scoring of versions logged without their graph."""

from __future__ import annotations

from pathlib import Path

from sentiment_ops.errors import ModelLoadError, NotFoundError
from sentiment_ops.inference import onnx as onnx_backend
from sentiment_ops.inference.passes import Predictor
from sentiment_ops.tracking.artifacts import logged_predictor
from sentiment_ops.tracking.registry import Registry, VersionInfo


class ModelRefusedError(ModelLoadError):
    """A version the server will not load with its backend (exit 71, as ModelLoadError):
    with ``onnx``, one logged without its int8 graph and tokenizer. The message is ours
    alone, so it may be shown publicly (``/model``)."""


def predictor_for(
    registry: Registry,
    info: VersionInfo,
    backend: str,
    *,
    threads: int | None = None,
    torch_threads: int | None = None,
    max_length: int | None = None,
    solo_threads: int | None = None,
) -> Predictor:
    """The predictor of ``info``'s version: ``threads`` per ONNX session (and a second
    session of ``solo_threads`` for passes that run alone, ``OnnxPredictor.solo``),
    ``torch_threads`` for torch; ``max_length`` overrides the training one. Raises
    ModelLoadError; ModelRefusedError for an ``onnx`` version logged without its graph."""
    if backend == "onnx":  # the graph and tokenizer logged with the version, nothing else
        uri = registry.download_uri(info.version)
        predictor = logged_predictor(uri, threads, max_length, solo_threads)
        if predictor is None:
            raise ModelRefusedError(
                f"version {info.version} was logged without its ONNX int8 graph (onnx_int8) and tokenizer "
                "(hf_model): the onnx backend serves only those and never runs a version's own code; "
                "retrain or re-log it with sentops"
            )
        return predictor
    return exported_predictor(registry, info, backend, torch_threads=torch_threads, max_length=max_length)


def exported_predictor(
    registry: Registry,
    info: VersionInfo,
    backend: str,
    *,
    threads: int | None = None,
    torch_threads: int | None = None,
    max_length: int | None = None,
    home: Path | None = None,
    solo_threads: int | None = None,
) -> Predictor:
    """The logged model through torch; for ``onnx``, a version logged without its graph is
    exported now and cached under ``home`` (the registry's home by default)."""
    try:
        from sentiment_ops.modeling import set_cpu_threads
    except ImportError as exc:  # the serve image: no torch
        raise ModelLoadError(
            f"version {info.version} was logged without its ONNX graph and this installation cannot "
            f"export it ({exc}): use the full image, or retrain it"
        ) from exc
    set_cpu_threads(torch_threads)
    model = registry.load_model(info.version)
    if max_length:
        model.max_length = max_length
    if backend != "onnx":
        return model
    cache = onnx_backend.export_cache_dir(home or registry.settings.home, info.name, info.version, info.run_id)
    return onnx_backend.OnnxPredictor.from_model(model, cache, threads, solo_threads)


def resolve_version(registry: Registry, version: int | None, alias: str | None) -> VersionInfo:
    """A version by number, or the version an alias points to (with a clear message)."""
    if version is not None:
        info = registry.get_version(version)
    else:
        alias = alias or registry.settings.serve.alias
        try:
            info = registry.version_for_alias(alias)
        except NotFoundError as exc:
            raise NotFoundError(
                f"alias {alias!r} of model {registry.model_name!r} is not set (sentops promote --version N)"
            ) from exc
    if not info.run_id:
        raise NotFoundError(f"model {info.name!r} version {info.version} has no MLflow run")
    return info
