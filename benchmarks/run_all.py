"""``make bench``: every benchmark, one table, ``bench/results.json``.

Each benchmark runs in its own process (a clean interpreter, its own services) and writes its rows;
this collects them, prints the table (Markdown, so it pastes into the README or an issue) and writes
``bench/results.json`` with the machine it ran on. A benchmark that fails leaves a row saying so
instead of stopping the others.

    python -m benchmarks.run_all [--quick]
    python -m benchmarks.run_all --only serving --merge   # rerun one section, keep the others' rows
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.common import Row, table

ROOT = Path(__file__).resolve().parents[1]

FULL = [
    ("training", ["benchmarks.bench_training", "--rows", "100000", "1000000"]),
    ("gpu", ["benchmarks.bench_gpu", "--rows", "1000000"]),
    ("serving", ["benchmarks.bench_serving", "--seconds", "15", "--workers", "2"]),
    ("parse", ["benchmarks.bench_parse", "--repeats", "5"]),
    ("quality", ["benchmarks.bench_quality", "--rows", "10000", "100000", "1000000"]),
    ("loop", ["benchmarks.bench_loop", "--rows", "100000"]),
]
QUICK = {
    "training": ["benchmarks.bench_training", "--rows", "100000", "--repeats", "1"],
    "gpu": ["benchmarks.bench_gpu", "--rows", "100000"],
    "serving": ["benchmarks.bench_serving", "--seconds", "5", "--workers", "2"],
    "parse": ["benchmarks.bench_parse", "--repeats", "2"],
    "quality": ["benchmarks.bench_quality", "--rows", "10000", "--repeats", "1"],
    "loop": ["benchmarks.bench_loop", "--rows", "20000"],
}


def machine() -> dict[str, object]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
    }


def merged(
    previous: dict[str, Any], fresh: list[Row], seconds: dict[str, float], sections: list[str], generated: str
) -> tuple[dict[str, Any], list[Row], dict[str, float]]:
    """``previous`` (a results file) with the rows of ``sections`` replaced by ``fresh`` ones, in place:
    the other rows, their timings and the run they came from stay; ``updated_at`` says when each
    replaced section was measured (and ``machine_by_section`` on what, when it differs)."""
    rows: list[Row] = []
    placed = False
    for raw in previous.get("rows", []):
        if raw["section"] in sections:
            if not placed:
                rows += fresh
                placed = True
            continue
        raw = {k: v for k, v in raw.items() if k != "ratio"}
        rows.append(Row(**raw))
    if not placed:
        rows += fresh
    record = {k: v for k, v in previous.items() if k not in ("seconds_per_benchmark", "rows", "table")}
    updated = dict(record.get("updated_at") or {})
    updated.update({name: generated for name in sections})
    record["updated_at"] = updated
    if machine() != previous.get("machine"):
        by_section = dict(record.get("machine_by_section") or {})
        by_section.update({name: machine() for name in sections})
        record["machine_by_section"] = by_section
    return record, rows, {**previous.get("seconds_per_benchmark", {}), **seconds}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, short runs: checks the harness only")
    parser.add_argument("--only", nargs="+", help="run only these benchmarks")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results.json")
    parser.add_argument(
        "--merge",
        action="store_true",
        help="with --only: replace only those benchmarks' rows in --out, keeping the other rows as they are",
    )
    args = parser.parse_args(argv)
    if args.merge and not args.only:
        parser.error("--merge needs --only (the benchmarks whose rows it replaces)")

    env = {**os.environ, "PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1", "PYTHONWARNINGS": "ignore"}
    rows: list[Row] = []
    seconds: dict[str, float] = {}
    plan = [(name, QUICK[name] if args.quick else argv_) for name, argv_ in FULL]
    with tempfile.TemporaryDirectory() as tmp:
        for name, module_argv in plan:
            if args.only and name not in args.only:
                continue
            out = Path(tmp) / f"{name}.json"
            print(f"== {name}: python -m {' '.join(module_argv)}", flush=True)
            started = time.monotonic()
            result = subprocess.run([sys.executable, "-m", *module_argv, "--json", str(out)], cwd=ROOT, env=env)
            seconds[name] = round(time.monotonic() - started, 1)
            if result.returncode == 0 and out.exists():
                for raw in json.loads(out.read_text()):
                    raw.pop("ratio", None)
                    rows.append(Row(**raw))
            else:
                rows.append(Row(name, f"{name} benchmark", None, None, "", "", "—", False, f"exit {result.returncode}"))
    generated = datetime.now(UTC).isoformat(timespec="seconds")
    record: dict[str, object] = {"generated_at": generated, "quick": args.quick, "machine": machine()}
    if args.merge and args.out.exists():
        record, rows, seconds = merged(json.loads(args.out.read_text()), rows, seconds, args.only, generated)
    report = table(rows)
    print("\n" + report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    record.update(seconds_per_benchmark=seconds, rows=[row.as_dict() for row in rows], table=report)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"\nwritten to {args.out} ({sum(seconds.values()):.0f} s in all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
