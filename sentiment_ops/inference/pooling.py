"""The one torch forward pass: a sequence classifier returning its logits *and* the
mean-pooled last hidden state (``passes.POOLING``), so drift monitoring gets its embedding
from the pass that labels the text.

``SentimentModel.forward_ids`` runs it and ``inference.onnx.export_int8`` exports it, so
the torch and ONNX backends pool the same way. This module imports torch: the rest of
``sentiment_ops.inference`` does not."""

from __future__ import annotations

from typing import Any

import torch


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``hidden`` (batch, seq, dim) over the real tokens of ``attention_mask``."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)


class LogitsAndPooled(torch.nn.Module):
    """``model`` (a transformers sequence classifier) as one module:
    (input_ids, attention_mask) → (logits, mean-pooled last hidden state)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out: Any = self.model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
        return out.logits, mean_pool(out.hidden_states[-1], attention_mask)
