from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from sentiment_ops.modeling import SentimentModel, encode, load_tokenizer, resolve_base_model, special_tokens


def test_head_tail_truncation() -> None:
    tok = load_tokenizer(resolve_base_model("minilm"))
    words = [f"w{i}" for i in range(300)]
    text = " ".join(words)
    full = tok(text, add_special_tokens=False)["input_ids"]
    prefix, suffix = special_tokens(tok)
    assert prefix == [tok.cls_token_id] and suffix == [tok.sep_token_id]
    (ids,) = encode(tok, [text], max_length=32, head_tokens=10)
    assert len(ids) == 32
    assert ids[1:11] == full[:10]  # the head kept
    assert ids[11:-1] == full[-20:]  # the tail kept
    (plain,) = encode(tok, [text], max_length=32, head_tokens=0)
    assert plain[1:-1] == full[:30]
    (short,) = encode(tok, ["short text"], max_length=32, head_tokens=10)
    assert short == tok("short text")["input_ids"]


def test_predict_shapes_and_batch_independence(tiny_model_dir: Path) -> None:
    model = SentimentModel.from_dir(tiny_model_dir, max_length=64)
    texts = ["good", "a much longer text about a film that was not good at all " * 3, "bad"]
    pred = model.predict(texts, batch_size=2)
    assert pred.labels.shape == (3,) and pred.embeddings is not None
    assert pred.embeddings.shape == (3, 32)
    assert np.all((pred.probabilities >= 0) & (pred.probabilities <= 1))
    assert np.all(pred.confidences >= 0.5)
    one = model.predict([texts[1]])
    # padding to other texts' length must not change a text's result
    assert np.allclose(one.probabilities[0], pred.probabilities[1], atol=1e-5)
    assert np.allclose(one.embeddings[0], pred.embeddings[1], atol=1e-4)


def test_save_and_reload_round_trip(tiny_model_dir: Path, tmp_path: Path) -> None:
    model = SentimentModel.from_dir(tiny_model_dir, max_length=48)
    model.head_tokens = 8
    model.save(tmp_path / "m")
    again = SentimentModel.from_dir(tmp_path / "m")
    assert (again.max_length, again.head_tokens) == (48, 8)
    texts = pd.Series(["one", "two three"]).tolist()
    assert np.allclose(model.predict(texts).probabilities, again.predict(texts).probabilities)


def test_fine_tuned_model_predicts_as_it_will_be_served(tiny_model_dir: Path, tmp_path: Path) -> None:
    """The metrics and the drift reference computed right after fine-tuning come from the model
    as it is saved and served: not under the bf16 autocast the Trainer trains with where the
    CPU has bf16."""
    from sentiment_ops.data import Split
    from sentiment_ops.jobs.fit import FitOptions, fine_tune

    model = SentimentModel.from_dir(tiny_model_dir, max_length=48)
    texts = [f"review {i}: {'great fun' if i % 2 else 'dull and slow'} " * (1 + i % 5) for i in range(32)]
    train = Split(texts, np.array([i % 2 for i in range(32)]))
    opts = FitOptions(
        epochs=1, learning_rate=1e-3, batch_size=8, eval_batch_size=16, warmup_ratio=0.0,
        weight_decay=0.0, seed=0, device="cpu", length_buckets=True,
    )  # fmt: skip
    fine_tune(model, train, None, opts)
    served = SentimentModel.from_dir(model.save(tmp_path / "m"))
    now, later = model.predict(texts, with_embeddings=True), served.predict(texts, with_embeddings=True)
    assert np.array_equal(now.probabilities, later.probabilities)
    assert now.embeddings is not None and later.embeddings is not None
    assert np.array_equal(now.embeddings, later.embeddings)
