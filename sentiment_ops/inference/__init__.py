"""One inference layer: texts → token ids → padded, length-grouped forward passes →
labels, probabilities and pooled embeddings, for the torch model and the ONNX graph alike.

- ``text``: normaliser + tokenizer + head/tail truncation (``TextEncoder``, ``encode``).
- ``passes``: ``pad``, ``split_by_length``, ``forward_grouped``, ``prediction_from_logits``.
- ``pooling`` (torch): ``LogitsAndPooled``, the forward pass both backends run.
- ``onnx``: the int8 export, its cache folder and ``OnnxPredictor``.

Serving, the drift reference, evaluation and batch scoring all go through it. Importing
this package (and ``inference.onnx``) needs no torch: only ``pooling`` imports it, and
nothing here imports ``pooling`` until an export runs."""

from sentiment_ops.inference.onnx import (
    ONNX_FILE,
    Encoder,
    OnnxPredictor,
    export_cache_dir,
    export_fp32,
    export_int8,
)
from sentiment_ops.inference.passes import (
    PAD_SPLIT_FACTOR,
    POOLING,
    Prediction,
    Predictor,
    forward_grouped,
    pad,
    prediction_from_logits,
    probability_columns,
    split_by_length,
)
from sentiment_ops.inference.text import (
    META_FILE,
    TextEncoder,
    encode,
    head_tail,
    read_meta,
    special_tokens,
    split_specials,
)

__all__ = [
    "META_FILE",
    "ONNX_FILE",
    "PAD_SPLIT_FACTOR",
    "POOLING",
    "Encoder",
    "OnnxPredictor",
    "Prediction",
    "Predictor",
    "TextEncoder",
    "encode",
    "export_cache_dir",
    "export_fp32",
    "export_int8",
    "forward_grouped",
    "head_tail",
    "pad",
    "prediction_from_logits",
    "probability_columns",
    "read_meta",
    "special_tokens",
    "split_by_length",
    "split_specials",
]
