"""The benchmark table: ratios against the same run's baseline, and rows that could not be measured."""

from __future__ import annotations

from benchmarks.common import Row, table


def test_rows_carry_their_ratio_and_render_as_markdown():
    rows = [
        Row("training", "task, 100,000 rows", 0.5, 0.4, "s", "bare xgboost.train script", "<= 1.25x", True),
        Row("serving", "single-row", 6000.0, 600.0, "req/s", "mlflow models serve", ">= 20x", False, "p99 9 ms"),
        Row("gpu", "cuda vs cpu", None, None, "s", "", "faster on cuda", None, "no GPU here: no libcuda"),
    ]
    assert rows[0].ratio == 1.25
    assert rows[1].ratio == 10.0
    assert rows[2].ratio is None
    lines = table(rows).splitlines()
    assert lines[0].startswith("| what | ours | baseline")
    assert "| task, 100,000 rows | 0.5 s | 0.4 s (bare xgboost.train script) | 1.25x | <= 1.25x | yes |" in lines
    serving = "| single-row — p99 9 ms | 6,000 req/s | 600 req/s (mlflow models serve) | 10.00x | >= 20x | **no** |"
    assert serving in lines
    assert "| cuda vs cpu — no GPU here: no libcuda | — | — | — | faster on cuda | — |" in lines
    assert rows[1].as_dict()["ratio"] == 10.0
