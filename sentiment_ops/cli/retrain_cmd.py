"""``sentops retrain``: fine-tune production on feedback labels, compare, gate, promote."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from sentiment_ops.cli.common import console, fmt, from_setting, print_json, settings_from, stage_progress
from sentiment_ops.cli.display import plain

if TYPE_CHECKING:
    from sentiment_ops.jobs.retrain import RetrainResult

ROWS = (
    ("golden IMDB accuracy", "golden_accuracy"),
    ("golden IMDB F1", "golden_f1"),
    ("new-domain accuracy", "new_accuracy"),
    ("new-domain F1", "new_f1"),
)


# Each flag with a `retrain.*` setting overrides it (validated there, like a config file).
Window = Annotated[
    int | None, typer.Option("--window", help="Use the N most recent labeled rows (retrain.window setting).")
]
Since = Annotated[datetime | None, typer.Option("--since", help="Use labeled rows logged since this date/time (UTC).")]
ReplayRatio = Annotated[
    float | None,
    typer.Option(
        "--replay-ratio", help=f"Original training rows per new row ({from_setting('retrain.replay_ratio')})."
    ),
]
Epochs = Annotated[float | None, typer.Option("--epochs", help=f"Training epochs ({from_setting('retrain.epochs')}).")]
PromoteIfBetter = Annotated[
    bool, typer.Option("--promote-if-better", help="Move production to the candidate when the gate passes.")
]
PseudoLabelThreshold = Annotated[
    float | None,
    typer.Option(
        "--pseudo-label-threshold",
        help="Opt-in: also train on unlabeled served texts whose prediction confidence is ≥ T (0.5-1; "
        "retrain.pseudo_label_threshold setting).",
    ),
]
TriggeredBy = Annotated[
    str | None, typer.Option("--triggered-by", help="Drift check id that triggered this retrain (lineage tag).")
]


def retrain(
    ctx: typer.Context,
    *,
    window: Window = None,
    since: Since = None,
    replay_ratio: ReplayRatio = None,
    epochs: Epochs = None,
    promote_if_better: PromoteIfBetter = False,
    pseudo_label_threshold: PseudoLabelThreshold = None,
    triggered_by: TriggeredBy = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Retrain production on labeled traffic (plus replay), gate the candidate.

    Fine-tunes the production version's weights on the feedback labels of
    the inference store (split into training rows and a new-domain
    hold-out) mixed with a replay sample of the original training data,
    scores production and candidate on the golden IMDB hold-out (classes
    with negative and positive) and on the new-domain hold-out, and
    registers the candidate (alias `candidate`). The candidate keeps
    production's classes. The gate passes when new-domain F1 (macro-F1
    for more than two classes) rises by at least retrain.min_f1_gain and
    golden accuracy drops by at most retrain.max_acc_drop. Production's
    scores on a hold-out are computed once per version and reused.

    Exit codes: 0 when promoted, or when --promote-if-better was not given
    (whatever the gate said); 5 when --promote-if-better was given and the
    candidate was not promoted (gate failed); 4 too few labels (nothing
    registered); 65 a label production does not have (train a new model
    with `sentops train`); 66 no version in production.

    Example: sentops retrain --window 2000 --promote-if-better
    """
    if window is not None and since is not None:
        raise typer.BadParameter("use --window or --since, not both")
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    overrides = {"window": window, "replay_ratio": replay_ratio, "epochs": epochs}
    overrides["pseudo_label_threshold"] = pseudo_label_threshold
    settings = settings_from(ctx, {f"retrain.{k}": v for k, v in overrides.items()})
    from sentiment_ops.jobs.retrain import CandidateNotPromoted
    from sentiment_ops.jobs.retrain import retrain as run_retrain

    try:
        with stage_progress(not as_json) as progress:
            result = run_retrain(
                settings, since=since, promote_if_better=promote_if_better, triggered_by=triggered_by, progress=progress
            )
    except CandidateNotPromoted as exc:
        _render(exc.result, as_json)  # the comparison first; the error line (exit 5) after
        raise
    _render(result, as_json)


def _render(result: RetrainResult, as_json: bool) -> None:
    if as_json:
        print_json(result.to_dict())
        return
    m = result.metrics
    production, candidate = f"production v{result.parent_version}", f"candidate v{result.version}"
    table = Table(title=f"{production} vs {candidate}")
    table.add_column("metric")
    for col in (production, candidate, "change"):
        table.add_column(col, justify="right")
    rows = ROWS + ((("new-domain macro-F1", "new_macro_f1"),) if result.gate.f1_name == "macro-F1" else ())
    for label, key in rows:
        prod, cand = m.get(f"production_{key}"), m.get(f"candidate_{key}")
        if prod is None and cand is None and key.startswith("golden"):  # classes without both poles
            continue
        change = None if prod is None or cand is None else cand - prod
        table.add_row(label, fmt(prod), fmt(cand), "–" if change is None else f"{change:+.4f}")
    console.print(table)
    d = result.data
    console.print(
        f"labels: {d['labels_real']} real"
        + (f" + {d['labels_pseudo']} pseudo" if result.pseudo_labels else "")
        + f" → {d['labels_train']} train / {d['labels_holdout']} hold-out; "
        f"replay {d['replay_size']} rows of {d['replay_data']}; run {result.run_id}"
    )
    style = "green" if result.promoted or (result.gate.passed and not result.note) else "yellow"
    console.print(plain(result.summary(), style), highlight=False)
