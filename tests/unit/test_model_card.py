"""The model card from records alone: the headline's form and every section's table."""

from __future__ import annotations

from include.continuous_training.model_card import CardInputs, headline, render_html, render_markdown

CARD = CardInputs(
    model_name="ct-classifier",
    version="7",
    task="binary",
    trained_at="2026-11-22T04:00:12+00:00",
    dataset_version="transactions@v12",
    rows=182400,
    window_start="2026-10-23T04:00:00",
    window_end="2026-11-22T03:59:00",
    decision={"verdict": "promote", "gates": [{"name": "floor", "passed": True, "detail": "ROC AUC 0.91 | 0.70"}]},
    evaluation={
        "holdout_rows": 36480,
        "slice_column": "channel",
        "gate_metric": "roc_auc",
        "challenger": {"metrics": {"roc_auc": 0.912}, "slices": {"online": {"roc_auc": 0.9}, "pos": {"roc_auc": 0.93}}},
        "champion": {"version": "6", "metrics": {"roc_auc": 0.901}},
        "bootstrap": {"mean": 0.011, "ci_low": 0.004, "ci_high": 0.018, "samples": 1000.0},
    },
    importance=[("amount", 0.8), ("channel", 0.2)],
    batches=[
        {
            "batch_id": "b1",
            "dataset_version": "transactions/batch@v40",
            "source_key": "landing/x.csv",
            "rows": 6000,
            "bad_rows": 3,
            "flags": [{"column": "amount", "check": "spread"}],
        }
    ],
    libraries={"xgboost": "3.1.2"},
    lockfile_sha256="ab" * 32,
    git_commit="0f02c32",
    run_url="http://127.0.0.1:5000/#/experiments/1/runs/r",
    history=[
        {
            "at": "2026-11-22T04:10:00+00:00",
            "alias": "champion",
            "from_version": "6",
            "to_version": "7",
            "who": "alice (approval in manual__x)",
            "why": "passed every gate; approved: ok",
        }
    ],
)


def test_the_headline_reads_as_a_sentence():
    assert headline(CARD) == (
        "ct-classifier v7 trained on 2026-11-22 on transactions@v12 (182,400 rows, 2026-10-23 to 2026-11-22)"
    )


def test_every_section_is_in_the_card():
    card = render_markdown(CARD)
    assert "| floor | yes | ROC AUC 0.91 \\| 0.70 |" in card
    assert "| roc_auc | 0.9120 | 0.9010 |" in card
    assert "(bootstrap mean): +0.0110, 95% interval [+0.0040, +0.0180] (1000 paired resamples)" in card
    assert "| online | 0.9000 |" in card
    assert "| amount | 0.8000 |" in card
    assert "| b1 | transactions/batch@v40 | landing/x.csv | 6000 | 3 | amount: spread |" in card
    assert "| git commit | 0f02c32 |" in card
    assert "| champion | 6 | 7 | alice (approval in manual__x) | passed every gate; approved: ok |" in card


def test_the_html_renders_tables_and_escapes_the_title():
    html = render_html(render_markdown(CARD), "a <b> title")
    assert "<title>a &lt;b&gt; title</title>" in html
    assert html.count("<table>") >= 6
