"""The model card of a registered version: what it is, what it was trained on, why it was let through.

One card per model version, Markdown and HTML, logged to the version's MLflow run
(``model_card/model_card.md``, ``model_card/model_card.html``) and linked from the version's tag
``ct.model_card``; written when the version is registered and again when it is promoted (the
promotion history grows). It reads only what the run and the bucket already hold:

- a headline anyone can read: *"fraud v7 trained on 2026-11-22 on transactions@v12 (182,400 rows,
  2026-10-23 to 2026-11-22)"*;
- the decision record: every gate, passed or not, with its threshold;
- holdout metrics of the challenger (and the champion it was compared with), the bootstrap interval of
  the gain on the gate metric, the per-slice table;
- global feature importance from the model's own SHAP values (XGBoost ``pred_contribs``: mean
  absolute contribution per feature on a holdout sample, no extra dependency);
- the data: each curated batch in the window with its dataset version, rows, bad rows quarantined and
  the distribution flags raised at ingest;
- library versions, the hash of ``constraints.txt`` (the lockfile), the git commit (also the tag
  ``ct.git_commit``);
- the approval and promotion history from the audit trail.

:func:`render_markdown` is pure (tested on records alone); :func:`write_model_card` gathers the inputs.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from include.continuous_training.config import Settings

if TYPE_CHECKING:
    import pandas as pd

    from include.continuous_training.registry import LoadedModel

CARD_MARKDOWN = "model_card/model_card.md"
CARD_HTML = "model_card/model_card.html"
LOCKFILE = Path(__file__).resolve().parents[2] / "constraints.txt"
SHAP_ROWS = 2000


@dataclass(frozen=True)
class CardInputs:
    """Everything the card shows, already read from MLflow and S3."""

    model_name: str
    version: str
    task: str
    trained_at: str
    dataset_version: str
    rows: int
    window_start: str
    window_end: str
    decision: dict[str, Any]
    evaluation: dict[str, Any]
    importance: list[tuple[str, float]]
    batches: list[dict[str, Any]]
    libraries: dict[str, str]
    lockfile_sha256: str
    git_commit: str
    run_url: str
    history: list[dict[str, Any]] = field(default_factory=list)


def _day(iso: str) -> str:
    try:
        return datetime.fromisoformat(iso).date().isoformat()
    except ValueError:
        return iso


def headline(card: CardInputs) -> str:
    return (
        f"{card.model_name} v{card.version} trained on {_day(card.trained_at)} on {card.dataset_version} "
        f"({card.rows:,} rows, {_day(card.window_start)} to {_day(card.window_end)})"
    )


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.0f}" if value.is_integer() and abs(value) >= 2 else f"{value:.4f}"  # counts read as counts
    return str(value if value is not None else "—").replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return [*lines, ""]


def render_markdown(card: CardInputs) -> str:
    """The card as Markdown (tables for every record)."""
    evaluation, decision = card.evaluation, card.decision
    challenger = (evaluation.get("challenger") or {}).get("metrics") or {}
    champion = evaluation.get("champion") or {}
    lines = [f"# Model card: {card.model_name} v{card.version}", "", f"**{headline(card)}**", ""]
    lines += [f"Task: {card.task}. MLflow run: {card.run_url}", ""]

    lines += [f"## Decision: {str(decision.get('verdict', '?')).upper()}", ""]
    lines += _table(
        ["gate", "passed", "detail"],
        [[g.get("name"), "yes" if g.get("passed") else "NO", g.get("detail")] for g in decision.get("gates", [])],
    )

    lines += [f"## Holdout metrics ({evaluation.get('holdout_rows', '?')} rows, the newest of the window)", ""]
    champion_metrics = champion.get("metrics") or {}
    champion_label = f"champion v{champion['version']}" if champion.get("version") else "champion"
    lines += _table(
        ["metric", "this version", champion_label],
        [[name, value, champion_metrics.get(name)] for name, value in challenger.items()],
    )
    bootstrap = evaluation.get("bootstrap")
    if bootstrap:
        gate = evaluation.get("gate_metric", "roc_auc")
        lines += [
            f"Gain on {gate} over the champion (bootstrap mean): {bootstrap.get('mean', 0.0):+.4f}, 95% interval "
            f"[{bootstrap.get('ci_low', 0.0):+.4f}, {bootstrap.get('ci_high', 0.0):+.4f}] "
            f"({int(bootstrap.get('samples', 0))} paired resamples).",
            "",
        ]
    else:
        lines += ["No champion to compare with: the first model passes on the floor alone.", ""]

    slices = (evaluation.get("challenger") or {}).get("slices") or {}
    if slices:
        names = sorted({m for metrics in slices.values() for m in metrics})
        lines += [f"## Per slice ({evaluation.get('slice_column', '')})", ""]
        lines += _table(["slice", *names], [[key, *(m.get(n) for n in names)] for key, m in sorted(slices.items())])

    lines += ["## Feature importance (mean |SHAP value| on the holdout, the model's own `pred_contribs`)", ""]
    lines += _table(["feature", "mean abs contribution"], [[name, value] for name, value in card.importance])

    lines += [f"## Data: {card.dataset_version}", ""]
    lines += _table(
        ["batch", "dataset version", "source", "rows", "bad rows quarantined", "flags at ingest"],
        [
            [
                b.get("batch_id"),
                b.get("dataset_version"),
                b.get("source_key"),
                b.get("rows"),
                b.get("bad_rows"),
                "; ".join(f"{f.get('column')}: {f.get('check')}" for f in b.get("flags") or []) or "none",
            ]
            for b in card.batches
        ],
    )

    lines += ["## Reproducibility", ""]
    lines += _table(
        ["what", "value"],
        [
            ["git commit", card.git_commit],
            ["constraints.txt sha256", card.lockfile_sha256],
            *[[name, version] for name, version in sorted(card.libraries.items())],
        ],
    )

    lines += ["## Approval and promotion history", ""]
    if card.history:
        lines += _table(
            ["when", "alias", "from", "to", "who", "why"],
            [[e["at"], e["alias"], e["from_version"], e["to_version"], e["who"], e["why"]] for e in card.history],
        )
    else:
        lines += ["No alias moves yet.", ""]
    return "\n".join(lines)


def render_html(markdown: str, title: str) -> str:
    from markdown_it import MarkdownIt

    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(markdown)
    style = "body{font-family:sans-serif;max-width:72em;margin:2em auto}table{border-collapse:collapse}"
    style += "td,th{border:1px solid #ccc;padding:.2em .5em;text-align:left}"
    escaped = title.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    head = f'<meta charset="utf-8"><title>{escaped}</title><style>{style}</style>'
    return f"<!doctype html><html><head>{head}</head><body>{body}</body></html>"


def shap_importance(model: LoadedModel, frame: pd.DataFrame) -> list[tuple[str, float]]:
    """Mean absolute SHAP contribution per feature (bias column dropped; over every class for multiclass)."""
    import numpy as np
    import xgboost as xgb

    matrix = xgb.DMatrix(model.spec.matrix(frame), missing=np.nan, feature_names=list(model.spec.feature_names))
    contributions = np.abs(np.asarray(model.booster.predict(matrix, pred_contribs=True)))
    per_feature = contributions.reshape(-1, contributions.shape[-1])[:, :-1].mean(axis=0)
    ranked = sorted(zip(model.spec.feature_names, per_feature.tolist(), strict=True), key=lambda p: -p[1])
    return [(str(name), float(value)) for name, value in ranked]


def lockfile_sha256(path: Path = LOCKFILE) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return "unknown (constraints.txt not found next to the package)"


def gather_inputs(s3: Any, settings: Settings, client: Any, version: str) -> CardInputs:
    """Read what the card shows from the version's MLflow run, the bucket and the audit trail."""
    from include.continuous_training.audit import read_history
    from include.continuous_training.features import DECISION_ARTIFACT, EVALUATION_ARTIFACT, MANIFEST_ARTIFACT
    from include.continuous_training.ingestion import read_manifest
    from include.continuous_training.registry import load_model
    from include.continuous_training.storage import read_parquet_uri

    model_version = client.get_model_version(settings.model_name, version)
    run = client.get_run(model_version.run_id)
    with tempfile.TemporaryDirectory() as tmp:

        def artifact(path: str) -> dict[str, Any]:
            return dict(json.loads(Path(client.download_artifacts(run.info.run_id, path, tmp)).read_text()))

        manifest, evaluation, decision = (
            artifact(p) for p in (MANIFEST_ARTIFACT, EVALUATION_ARTIFACT, DECISION_ARTIFACT)
        )
        libraries = artifact("environment/versions.json")
    model = load_model(f"models:/{settings.model_name}/{version}")
    holdout = read_parquet_uri(s3, settings, evaluation["holdout_uri"])
    sample = holdout.sample(min(len(holdout), SHAP_ROWS), random_state=settings.seed)
    entries = {entry.batch_id: entry for entry in read_manifest(s3, settings)}
    batches = []
    for batch in manifest.get("batches", []):
        if not batch.get("in_window", True):
            continue
        entry = entries.get(str(batch["batch_id"]))
        batches.append(
            {
                **batch,
                "dataset_version": entry.dataset_version if entry else None,
                "bad_rows": entry.bad_rows if entry else None,
                "flags": entry.flags if entry else [],
            }
        )
    history = [vars(e) for e in read_history(s3, settings) if version in (e.from_version, e.to_version)]
    window = manifest.get("window", {})
    return CardInputs(
        model_name=settings.model_name,
        version=str(version),
        task=model.spec.task,
        trained_at=datetime.fromtimestamp(run.info.start_time / 1000, UTC).isoformat(),
        dataset_version=str(
            manifest.get("dataset_version") or run.data.tags.get("ct.dataset_version") or "unversioned"
        ),
        rows=int(sum((manifest.get("rows") or {}).values())),
        window_start=str(window.get("start", "?")),
        window_end=str(window.get("end", "?")),
        decision=decision,
        evaluation=evaluation,
        importance=shap_importance(model, sample),
        batches=batches,
        libraries=libraries,
        lockfile_sha256=lockfile_sha256(),
        git_commit=run.data.tags.get("mlflow.source.git.commit", "unknown"),
        run_url=f"{settings.mlflow_tracking_uri.rstrip('/')}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}",
        history=history,
    )


@dataclass(frozen=True)
class WrittenCard:
    headline: str
    markdown_uri: str
    html_url: str  # the HTML card in the MLflow UI (what the Airflow "Model card" button opens)


def write_model_card(s3: Any, settings: Settings, client: Any, version: str) -> WrittenCard:
    """Build the card of ``version``, log it (Markdown + HTML) to its run and tag the version."""
    card = gather_inputs(s3, settings, client, version)
    markdown = render_markdown(card)
    run_id = client.get_model_version(settings.model_name, version).run_id
    client.log_text(run_id, markdown, CARD_MARKDOWN)
    client.log_text(run_id, render_html(markdown, f"{card.model_name} v{card.version}"), CARD_HTML)
    client.set_model_version_tag(settings.model_name, version, "ct.model_card", f"runs:/{run_id}/{CARD_MARKDOWN}")
    client.set_model_version_tag(settings.model_name, version, "ct.model_card_headline", headline(card))
    client.set_model_version_tag(settings.model_name, version, "ct.git_commit", card.git_commit)
    client.set_model_version_tag(settings.model_name, version, "ct.dataset_version", card.dataset_version)
    experiment = client.get_run(run_id).info.experiment_id
    ui = f"{settings.mlflow_tracking_uri.rstrip('/')}/#/experiments/{experiment}/runs/{run_id}/artifacts/{CARD_HTML}"
    return WrittenCard(headline(card), f"runs:/{run_id}/{CARD_MARKDOWN}", ui)
