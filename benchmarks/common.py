"""Rows of the benchmark table: what, our figure, the baseline's figure from the same run, ratio, target."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass
class Row:
    section: str
    what: str
    ours: float | None
    baseline: float | None
    unit: str
    baseline_name: str
    target: str
    met: bool | None  # None: no target for this row, or it could not be measured here
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.ours is None or not self.baseline:
            return None
        return self.ours / self.baseline

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": self.ratio}


def json_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", type=Path, help="also write the rows to this file (for make bench)")


def emit(rows: list[Row], path: Path | None) -> None:
    print(table(rows), flush=True)
    if path is not None:
        path.write_text(json.dumps([row.as_dict() for row in rows], indent=2))


def _figure(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    if unit in ("req/s", "rows/s"):
        return f"{value:,.0f} {unit}"
    if unit == "MiB":
        return f"{value:,.0f} MiB"
    return f"{value:.3g} {unit}" if value < 100 else f"{value:,.0f} {unit}"


def table(rows: list[Row]) -> str:
    """A Markdown table: readable in a terminal and pasteable into the README or an issue."""
    lines = [
        "| what | ours | baseline (same run) | ratio | target | met |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        ratio = f"{row.ratio:.2f}x" if row.ratio is not None else "—"
        met = {True: "yes", False: "**no**", None: "—"}[row.met]
        baseline = f"{_figure(row.baseline, row.unit)} ({row.baseline_name})" if row.baseline_name else "—"
        what = row.what + (f" — {row.note}" if row.note else "")
        lines.append(f"| {what} | {_figure(row.ours, row.unit)} | {baseline} | {ratio} | {row.target} | {met} |")
    return "\n".join(lines)
