"""``python -m include.continuous_training <command>``: the package's commands for people.

- ``init-model --reference FILE --label COLUMN --name NAME``: a model file and a suite from a sample;
- ``check-model NAME [--sample FILE]``: every mismatch between a model file, its suite and a sample;
- ``history [--model NAME] [--at TIME]``: every alias move of a registered model (the audit trail), or
  which version was the champion at ``TIME`` and why.

Exit status: 0 done / no problems; 1 refused or problems found (one line each); 2 a usage error.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path

from include.continuous_training.config import TASKS, SettingsError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m include.continuous_training", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    init = commands.add_parser("init-model", help="write models/NAME.yaml and NAME.suite.json from a sample table")
    init.add_argument("--reference", type=Path, required=True, help="a CSV or Parquet sample of the table")
    init.add_argument("--label", required=True, help="the column the model predicts")
    init.add_argument("--name", required=True, help="the model's name, [a-z][a-z0-9_]{1,40}")
    init.add_argument("--task", choices=TASKS, help="default: inferred from the label, and the reason printed")
    init.add_argument("--id", dest="id_column", help="the unique row-id column (default: inferred, or none)")
    init.add_argument("--event-time", help="the event-time column (default: the only datetime column, or none)")
    init.add_argument("--models-dir", type=Path, help="default: CT_MODELS_DIR, else models/ at the project root")
    init.add_argument("--force", action="store_true", help="replace existing files")
    check = commands.add_parser("check-model", help="check a model file against its suite and a sample")
    check.add_argument("name", help="the model's name: NAME.yaml in the models directory")
    check.add_argument("--sample", type=Path, help="a CSV or Parquet sample to validate as ingest would")
    check.add_argument("--models-dir", type=Path, help="default: CT_MODELS_DIR, else models/ at the project root")
    history = commands.add_parser("history", help="the audit trail: every alias move, or the champion at a time")
    history.add_argument("--model", help="a model file's name (default: CT_MODEL, else the environment's settings)")
    history.add_argument("--at", type=_utc_time, help="ISO time, e.g. 2026-11-12T14:00 (UTC unless it says)")
    return parser


def _utc_time(text: str) -> datetime:
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r} (e.g. 2026-11-12T14:00)") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _history(model: str | None, at: datetime | None) -> int:
    from include.continuous_training.audit import format_history, read_history
    from include.continuous_training.config import load_settings
    from include.continuous_training.storage import s3_client

    try:
        settings = load_settings(model=model)
    except SettingsError as error:
        print(f"history: {error}", file=sys.stderr)
        return 1
    events = read_history(s3_client(settings), settings)
    print(f"{settings.model_name}: {len(events)} alias move(s) in s3://{settings.s3_bucket}/{settings.audit_prefix}")
    print(format_history(events, at))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run one command; print what it decided or found; return the exit status."""
    from include.continuous_training.onboarding import OnboardingError, check_model, init_model

    args = _parser().parse_args(argv)
    if args.command == "history":
        return _history(args.model, args.at)
    if args.command == "init-model":
        try:
            result = init_model(
                args.reference,
                args.label,
                args.name,
                task=args.task,
                id_column=args.id_column,
                event_time=args.event_time,
                models_dir=args.models_dir,
                force=args.force,
            )
        except (OnboardingError, SettingsError) as error:
            print(f"init-model: {error}", file=sys.stderr)
            return 1
        print("\n".join(result.report_lines()))
        if result.self_check:
            return 1
        sample = f" --sample {args.reference}" + (f" --models-dir {args.models_dir}" if args.models_dir else "")
        print(f"next: review both files, then `python -m include.continuous_training check-model {args.name}{sample}`")
        return 0
    outcome = check_model(args.name, sample=args.sample, models_dir=args.models_dir)
    if outcome.problems:
        print("\n".join(outcome.problems))
        return 1
    print(f"{outcome.model_path}: no problems ({'; '.join(outcome.checked)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
