"""DAG parse time per file, in a fresh interpreter, minus the time to ``import airflow.sdk`` alone.

Each measurement is a new Python process that imports ``airflow.sdk`` (timed, then discounted) and
then executes one DAG file the way the dag-processor does (timed: what the file itself costs). The
baseline is a trivial TaskFlow DAG measured the same way in the same run. Medians of ``--repeats``.

    python -m benchmarks.bench_parse --repeats 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import Row, emit, json_argument

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("pandas", "numpy", "xgboost", "sklearn", "mlflow", "great_expectations", "evidently", "pyarrow", "scipy")
PROBE = f"""
import json, runpy, sys, time
t0 = time.perf_counter()
import airflow.sdk
t1 = time.perf_counter()
runpy.run_path(sys.argv[1], run_name="__bench_parse__")
t2 = time.perf_counter()
print(json.dumps({{"sdk": t1 - t0, "file": t2 - t1, "heavy": [m for m in {HEAVY!r} if m in sys.modules]}}))
"""
TRIVIAL_DAG = """
from datetime import datetime
from airflow.sdk import dag, task


@dag(schedule=None, start_date=datetime(2026, 1, 1), catchup=False)
def trivial():
    @task
    def hello() -> str:
        return "hello"

    hello()


trivial()
"""


@dataclass(frozen=True)
class ParseTime:
    """Medians over the repeats of one file's parse, each in a fresh interpreter."""

    file: float  # executing the file after ``import airflow.sdk``: what the file itself costs
    sdk: float  # ``import airflow.sdk`` alone, in the same interpreters
    heavy: tuple[str, ...]  # heavy libraries in ``sys.modules`` after any of the parses


def measure_once(path: Path, env: Mapping[str, str]) -> dict[str, float | list[str]]:
    """One fresh interpreter: time ``import airflow.sdk``, then execute ``path`` as the dag-processor does."""
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(path)], env=dict(env), cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def measure_parse_times(paths: Sequence[Path], repeats: int = 5) -> dict[Path, ParseTime]:
    """Parse time of each file (medians of ``repeats``), the same way for all, interleaved.

    Interleaving means drift in machine load hits every file alike, so files measured in one call
    can be compared with each other (e.g. a DAG file against :data:`TRIVIAL_DAG`). Each process gets
    a throw-away ``AIRFLOW_HOME`` and the project root on ``PYTHONPATH``.
    """
    samples: dict[Path, list[dict[str, Any]]] = {Path(path): [] for path in paths}
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "AIRFLOW_HOME": home, "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "PYTHONPATH": str(ROOT)}
        for _ in range(repeats):
            for path in samples:
                samples[path].append(measure_once(path, env))
    return {
        path: ParseTime(
            file=statistics.median(float(s["file"]) for s in runs),
            sdk=statistics.median(float(s["sdk"]) for s in runs),
            heavy=tuple(sorted({m for s in runs for m in s["heavy"]})),
        )
        for path, runs in samples.items()
    }


def main(argv: list[str] | None = None) -> list[Row]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--target", type=float, default=0.3)
    json_argument(parser)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as folder:
        trivial = Path(folder) / "trivial_dag.py"
        trivial.write_text(TRIVIAL_DAG)
        files = sorted((ROOT / "dags").glob("*.py"))
        times = measure_parse_times([trivial, *files], args.repeats)

    base, sdk = times[trivial].file, times[trivial].sdk
    rows = []
    for path in files:
        median, heavy = times[path].file, times[path].heavy
        rows.append(
            Row(
                section="parse",
                what=f"parse dags/{path.name} (fresh interpreter, minus `import airflow.sdk` {sdk:.2f} s)",
                ours=median,
                baseline=base,
                unit="s",
                baseline_name="trivial TaskFlow DAG",
                target=f"≤ {args.target} s",
                met=median <= args.target,
                note=f"heavy imports: {', '.join(heavy)}" if heavy else "",
            )
        )
    emit(rows, args.json)
    return rows


if __name__ == "__main__":
    main()
