"""``sentops embed-reference`` and ``sentops drift``: reference embeddings and drift checks."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from sentiment_ops.cli.choices import Backend, DriftMethod, DriftSource, value
from sentiment_ops.cli.common import console, fmt, from_setting, print_json, settings_from, stage_progress
from sentiment_ops.cli.display import compose, plain
from sentiment_ops.errors import EXIT_DRIFT

if TYPE_CHECKING:
    from sentiment_ops.config import Settings


# embed-reference
VersionOption = Annotated[
    int | None, typer.Option("--version", help="Model version (default: the one --alias points to).")
]
EmbedAliasOption = Annotated[
    str | None, typer.Option("--alias", help=f"Alias used without --version ({from_setting('serve.alias')}).")
]
DataOption = Annotated[
    str | None,
    typer.Option("--data", help=f"Corpus whose validation split is embedded ({from_setting('drift.reference_data')})."),
]
SamplesOption = Annotated[
    int | None,
    typer.Option("--samples", min=2, help=f"Texts to embed ({from_setting('drift.reference_samples')})."),
]
ReferenceJsonFlag = Annotated[bool, typer.Option("--json", help="Print the reference metadata as JSON.")]
EmbedBackendOption = Annotated[
    Backend | None, typer.Option("--backend", help=f"Embed as the server runs ({from_setting('serve.backend')}).")
]

# drift
WindowOption = Annotated[
    int | None,
    typer.Option("--window", min=2, help=f"Last N served predictions to check ({from_setting('drift.window')})."),
]
CheckAliasOption = Annotated[
    str | None, typer.Option("--alias", help=f"Alias whose version is checked ({from_setting('serve.alias')}).")
]
CheckVersionOption = Annotated[int | None, typer.Option("--version", help="Check this version instead of an alias.")]
AlphaOption = Annotated[
    float | None,
    typer.Option("--alpha", help=f"Significance level of the drift test ({from_setting('drift.alpha')})."),
]
PermutationsOption = Annotated[
    int | None,
    typer.Option("--permutations", min=10, help=f"Test permutations ({from_setting('drift.permutations')})."),
]
MethodOption = Annotated[
    DriftMethod | None,
    typer.Option(
        "--method",
        help=f"What decides the status; cosine is the seed's rule ({from_setting('drift.method')}).",
    ),
]
SourceOption = Annotated[
    DriftSource,
    typer.Option("--source", help="Whose predictions: api (served) or batch (logged by `sentops score --log`)."),
]
ShowTextsFlag = Annotated[
    bool,
    typer.Option(
        "--show-texts",
        help="Show the served texts farthest from the reference (default: their ids and distances only).",
    ),
]
ReportJsonFlag = Annotated[bool, typer.Option("--json", help="Print the report as JSON.")]
HistoryFlag = Annotated[bool, typer.Option("--history", help="Show recorded checks instead of running one.")]
PlotOption = Annotated[Path | None, typer.Option("--plot", help="With --history: write a PNG of the scores over time.")]
LimitOption = Annotated[int, typer.Option("--limit", min=1, help="With --history: the newest N checks, oldest first.")]


def embed_reference(
    ctx: typer.Context,
    *,
    version: VersionOption = None,
    alias: EmbedAliasOption = None,
    data: DataOption = None,
    samples: SamplesOption = None,
    backend: EmbedBackendOption = None,
    as_json: ReferenceJsonFlag = False,
) -> None:
    """Embed held-out texts with a model version's own encoder and store them as that
    version's drift reference (an artifact of its MLflow run).

    Uses the corpus's validation split, never its training split, embedded the way the server
    embeds its traffic (serve.backend: torch fp32 or onnx int8), and drift.calibration_samples
    further held-out texts (the rest of the validation split, then the test split) as the
    calibration set of the drift test. `sentops train` already does
    this at the end of training; run it again after changing the data, the count or the backend.

    Example: sentops embed-reference --alias production --samples 1000

    Exit codes: 0 ok · 65 bad data · 66 unknown version/alias · 71 model cannot be loaded.
    """
    settings = settings_from(
        ctx, {"drift.reference_data": data, "drift.reference_samples": samples, "serve.backend": value(backend)}
    )
    from sentiment_ops.drift.check import embed_reference as run_embed
    from sentiment_ops.tracking.registry import Registry

    with stage_progress(not as_json) as progress:
        progress("reference", 0, 1)
        meta = run_embed(settings, Registry(settings), version=version, alias=alias)
        progress("reference", 1, 1)
    if as_json:
        print_json(meta.__dict__)
        return
    console.print(
        compose(
            "reference of ",
            plain(settings.mlflow.model_name, "bold"),
            f" version [bold]{meta.model_version}[/bold]: ",
            plain(
                f"{meta.count} texts of {meta.data} ({meta.split}, hash {meta.data_hash}), {meta.pooling}-pooled, "
                f"dim {meta.dim}, {meta.backend} backend, {meta.calibration_count} calibration texts, "
                f"predicted {_shares(meta.label_mix)} → run {meta.run_id}"
            ),
        )
    )


def drift(
    ctx: typer.Context,
    *,
    window: WindowOption = None,
    alias: CheckAliasOption = None,
    version: CheckVersionOption = None,
    alpha: AlphaOption = None,
    permutations: PermutationsOption = None,
    method: MethodOption = None,
    source: SourceOption = DriftSource.api,
    as_json: ReportJsonFlag = False,
    show_texts: ShowTextsFlag = False,
    history: HistoryFlag = False,
    plot: PlotOption = None,
    limit: LimitOption = 1000,
) -> None:
    """Compare the last N served predictions of a model version with its reference.

    - Drift score / Threshold: the seed's cosine distance of mean embeddings vs a fixed threshold.
    - p-value: the test calibrated for the version's fixed reference on its calibration set
      (how far the window's mean embedding sits from the calibration set's, in the
      reference's whitened space); it decides the status. A reference without a calibration set falls back to the
      permutation test of MMD² and nearest-reference distance, reported as uncalibrated.
    - Mode: single (each check decides at alpha) or repeated (drift.false_alarm_every set:
      a CUSUM over the checks decides, with that expected time between false alarms);
      the line under the table states the guarantee.
    - Positive share (binary models) or Label mix (more classes: each class's predicted share,
    chi-square test): the window's predicted classes vs the reference's (label shift).
    - The rows of the window farthest from the reference: ids and distances; their served
      texts only with --show-texts (none when store.store_text is false: texts are not kept).

    --source batch checks the rows `sentops score --log` wrote instead of served traffic
    (a batch never mixes into the served window).

    Each check is recorded in the inference store and as metrics of an MLflow run
    (experiment '<experiment>-monitoring'). --history lists them, --plot draws them.
    With store.retention_days set, the store is then pruned (`sentops db prune`).

    Example: sentops drift --window 500 --alpha 0.01 ; sentops drift --history --plot drift.png

    Exit codes: 0 no drift · 3 drift detected · 4 not enough logged predictions ·
    65 traffic embedded by another backend than the reference · 66 no reference
    (run `sentops embed-reference`) or unknown alias/version · 2 invalid setting ·
    69 registry unreachable · 70 store error · 1 other errors.
    """
    overrides = {"drift.window": window, "drift.alpha": alpha, "drift.permutations": permutations}
    settings = settings_from(ctx, {**overrides, "drift.method": value(method)})
    if history or plot is not None:
        _show_history(settings, version, limit, plot, as_json)
        return
    from sentiment_ops.drift.check import run_drift_check
    from sentiment_ops.tracking.registry import Registry

    report = run_drift_check(
        settings, Registry(settings), alias=alias, version=version, source=source.value, show_texts=show_texts
    )
    _show_report(report.to_dict(), as_json)
    if report.drift:
        raise typer.Exit(EXIT_DRIFT)


def _show_history(settings: Settings, version: int | None, limit: int, plot: Path | None, as_json: bool) -> None:
    """``--history`` / ``--plot``: the recorded checks, as a table or JSON, and their plot."""
    from sentiment_ops.drift import history as checks

    rows = checks.drift_history(settings, limit=limit, version=version)
    if plot is not None:
        checks.plot_history(rows, plot, settings.drift.alpha, settings.drift.cosine_threshold)
    if as_json:
        print_json(rows)
        return
    _history_table(rows)
    if plot is not None:
        console.print(compose("plot written to ", plain(plot)))


def _show_report(r: dict[str, Any], as_json: bool) -> None:
    """One check: JSON, or its tables and what its retention pruned (store.retention_days)."""
    if as_json:
        print_json(r)
        return
    _report_tables(r)
    pruned = r.get("pruned")
    if pruned is not None:
        line = pruned.get("error") or f"pruned {pruned['predictions']} predictions older than {pruned['days']} days"
        console.print(f"retention: {line}", style="dim", highlight=False, markup=False)


def _status(flag: bool) -> str:
    return "[bold red]DRIFT[/bold red]" if flag else "[green]no drift[/green]"


def _report_tables(r: dict[str, Any]) -> None:
    who = f"{r['model_name']} v{r['model_version']}" + (f" ({r['alias']})" if r.get("alias") else "")
    who += " batch predictions" if r.get("source") == "batch" else ""
    table = Table(title=plain(f"Drift check: {who}"), show_header=True)
    table.add_column("check")
    table.add_column("value", justify="right")
    table.add_column("decision")
    for row in (*_window_rows(r), *_test_rows(r), *_signal_rows(r), _status_row(r)):
        table.add_row(*row)
    console.print(table)
    mode = "repeated" if r.get("mode") == "repeated" else "single check"
    console.print(plain(f"mode: {mode}. {r.get('guarantee') or ''}".rstrip()))
    _farthest_table(r)
    console.print(f"check {r.get('check_id')} recorded in {r['seconds']:.2f} s", style="dim")


Row = tuple[str, str, str | Text]  # check, value, decision


def _window_rows(r: dict[str, Any]) -> list[Row]:
    """The window against the reference, and the seed's cosine rule."""
    ref = r.get("reference", {})
    return [
        (
            "Window",
            f"{r['n_rows']} of last {r['window']}",
            plain(
                f"reference: {r['n_reference']} {ref.get('data', '?')} {ref.get('split', '')} texts"
                f" ({ref.get('backend', '?')})"
            ),
        ),
        ("Drift score", fmt(r["cosine_distance"]), "cosine distance of mean embeddings (seed)"),
        ("Threshold", fmt(r["cosine_threshold"], 2), _status(r["cosine_drift"]) + " by the seed rule"),
    ]


def _test_rows(r: dict[str, Any]) -> list[Row]:
    """The statistics of the drift test and its p-value."""
    space = f"whitened to {r['whiten_components']} components" if r["whiten_components"] else "raw embeddings"
    rows: list[Row] = [
        ("MMD²", f"{r['mmd2']:.3g}", f"p {r['mmd_p_value']:.3g} (RBF, bandwidth {r['bandwidth']:.3g}, {space})")
    ]
    if r.get("nn_p_value") is not None:
        rows.append(
            (
                "NN distance²",
                f"{r['nn_distance2']:.3g}",
                f"p {r['nn_p_value']:.3g} (mean squared distance to the nearest reference text)",
            )
        )
    cal = r.get("calibrated")
    if cal:
        z = cal["z"]
        rows.append(
            (
                "Calibrated z",
                f"{cal['statistic']:.2f}",
                f"the window's mean shift from the calibration set; threshold {cal['threshold']:.2f} at alpha "
                f"{r['alpha']:g} ({cal['calibration_n']} calibration texts). Reported: NN {z['nn']:.2f}, "
                f"kernel {z['kernel']:.2f}, {cal.get('label_class') or 'positive'} share {z['positive']:.2f}",
            )
        )
        test = "calibrated for this reference"
    else:
        test = {"mmd": "MMD² permutation test"}.get(r["method"], "min-p of MMD² and NN distance, permutation test")
        test += f", {r['permutations']} permutations"
    rows.append(("p-value", fmt(r["p_value"]), f"{_status(r['test_drift'])} at alpha {r['alpha']:g} ({test})"))
    return rows


def _shares(shares: dict[str, float]) -> str:
    """Class shares in a line: ``negative 0.310, neutral 0.402, positive 0.288``."""
    return ", ".join(f"{name} {float(share):.3f}" for name, share in shares.items())


def _signal_rows(r: dict[str, Any]) -> list[Row]:
    """The label mix, and the repeated mode's CUSUM when it ran."""
    rows: list[Row] = []
    mix = r.get("label_mix") or {}
    shift = "[bold yellow]label shift[/bold yellow]" if r.get("label_drift") else "no label shift"
    if mix and len(mix.get("classes") or ("negative", "positive")) == 2 and mix.get("window_positive") is not None:
        rows.append(
            (
                "Positive share",
                f"{mix['window_positive']:.3f}",
                f"reference {mix['reference_positive']:.3f}, p {mix['p_value']:.3g}: {shift}",
            )
        )
    elif mix:
        rows.append(
            (
                "Label mix",
                f"χ² {mix['chi2']:.2f}",
                compose(
                    "window ",
                    plain(_shares(mix["window_shares"])),
                    "; reference ",
                    plain(_shares(mix["reference_shares"])),
                    f"; chi-square p {mix['p_value']:.3g} ({mix['chi2_dof']} dof): {shift}",
                ),
            )
        )
    mon = r.get("monitor")
    if mon:
        scored = f"{mon['new_rows']} new texts scored" if mon.get("increment") is not None else "no new texts"
        rows.append(
            (
                "CUSUM",
                f"{mon['statistic']:.2f}",
                f"threshold {mon['threshold']:.2f}; {mon['checks_since_alarm']} checks since the last alarm ({scored})",
            )
        )
    return rows


def _status_row(r: dict[str, Any]) -> Row:
    decided_by = {"cosine": "seed cosine rule", "calibrated": "calibrated test"}.get(r["method"], "permutation test")
    if r.get("monitor"):
        decided_by = "CUSUM over the repeated checks"
    status = "[bold red]DRIFT[/bold red]" if r["drift"] else "[bold green]OK[/bold green]"
    return ("Status", status, f"decided by the {decided_by}")


TEXTS_NOTE = {
    "hidden": "served texts hidden: --show-texts shows them",
    "not kept": "texts are not kept (store.store_text is false): only ids and distances to show",
}


def _farthest_table(r: dict[str, Any]) -> None:
    """The farthest rows by id and distance, with their texts (as plain text) when shown."""
    if not r.get("farthest"):
        return
    shown = r.get("texts") == "shown"
    far = Table(title="Rows farthest from the reference (nearest-neighbour distance)")
    far.add_column("distance", justify="right")
    far.add_column("prediction id", no_wrap=True)
    if shown:
        far.add_column("text")
    for f in r["farthest"]:
        cells: list[str | Text] = [f"{f['distance']:.3f}", plain(f.get("id") or "–")]
        if shown:
            text = " ".join(str(f.get("text") or "(text not stored)").split())
            cells.append(plain(text[:160] + ("…" if len(text) > 160 else "")))
        far.add_row(*cells)
    console.print(far)
    note = TEXTS_NOTE.get(str(r.get("texts")))
    if note:
        console.print(note, style="dim", markup=False)


def _history_table(rows: list[dict[str, Any]]) -> None:
    if not rows:
        console.print("no drift checks recorded yet: run `sentops drift`")
        return
    table = Table(title="Drift checks")
    for col in ("check", "at (UTC)", "version", "rows", "Drift score", "MMD²", "p-value", "positive share", "status"):
        table.add_column(col, justify="right" if col not in ("at (UTC)", "status") else "left")
    for h in rows:
        mix = (h.get("details") or {}).get("label_mix") or {}
        share = mix.get("window_positive")
        table.add_row(
            str(h["id"]),
            h["created_at"].strftime("%Y-%m-%d %H:%M:%S"),
            plain(h["model_version"]),
            str(h["n_rows"]),
            fmt(h["cosine_distance"]),
            "–" if h["mmd2"] is None else f"{h['mmd2']:.3g}",
            fmt(h["p_value"]),
            "–" if share is None else f"{share:.3f}",
            _status(bool(h["drift"])),
        )
    console.print(table)
