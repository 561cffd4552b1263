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


def test_one_section_rerun_replaces_only_its_rows_in_place():
    from benchmarks.run_all import machine, merged

    old = [
        Row("training", "fit", 1.0, 1.0, "s", "bare", "—", None),
        Row("serving", "single-row", 10.0, 1.0, "req/s", "mlflow", "—", None),
        Row("serving", "batches", 5.0, 1.0, "rows/s", "mlflow", "—", None),
        Row("loop", "loop", 20.0, None, "s", "", "—", None),
    ]
    previous = {
        "generated_at": "2026-11-22T07:59:45+00:00",
        "machine": machine(),
        "seconds_per_benchmark": {"training": 75.1, "serving": 104.2},
        "rows": [row.as_dict() for row in old],
        "table": "old",
    }
    fresh = [Row("serving", "single-row", 20.0, 1.0, "req/s", "mlflow", "—", None)]
    record, rows, seconds = merged(previous, fresh, {"serving": 300.0}, ["serving"], "2026-12-02T15:00:00+00:00")
    assert [(r.section, r.what, r.ours) for r in rows] == [
        ("training", "fit", 1.0),
        ("serving", "single-row", 20.0),
        ("loop", "loop", 20.0),
    ]
    assert seconds == {"training": 75.1, "serving": 300.0}
    assert record["generated_at"] == "2026-11-22T07:59:45+00:00"  # the other rows' run
    assert record["updated_at"] == {"serving": "2026-12-02T15:00:00+00:00"}
    assert "machine_by_section" not in record  # measured on the same kind of machine
