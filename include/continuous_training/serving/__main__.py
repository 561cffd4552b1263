"""Run the endpoint: ``python -m include.continuous_training.serving [--model NAME] [--host H] [--port P]``.

One endpoint serves one model: ``--model`` (or ``CT_MODEL``) names its model file; run one endpoint
per model file, each with its own ``CT_SERVING_URL`` port and ``CT_SERVING_STATE_DIR``. Replicas of
one model (on one host or many, behind a load balancer) each have their own state directory and
follow the same desired deployment in S3 (:mod:`include.continuous_training.rollout_state`).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
from urllib.parse import urlparse

from include.continuous_training.config import load_settings


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    chosen = argparse.ArgumentParser(add_help=False)
    chosen.add_argument("--model", default=os.environ.get("CT_MODEL", ""))
    model = chosen.parse_known_args(argv)[0].model
    # Workers build their settings from the environment (create_app): this is how each knows its model.
    os.environ["CT_MODEL"] = model
    settings = load_settings()
    default_port = urlparse(settings.serving_url).port or 8000
    parser = argparse.ArgumentParser(prog="python -m include.continuous_training.serving", description=__doc__)
    parser.add_argument("--model", default=model, help="model file name (default: CT_MODEL)")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default: loopback only)")
    parser.add_argument("--port", type=int, default=default_port)
    parser.add_argument("--workers", type=int, default=settings.serving_workers)
    args = parser.parse_args(argv)
    # Workers inherit the environment: this is how each knows how many peers a reload must wait for.
    os.environ["CT_SERVING_WORKERS"] = str(args.workers)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Metrics and heartbeats of a previous run would be counted as live workers: start clean.
    for stale in ("prometheus", "workers"):
        shutil.rmtree(settings.serving_state_dir / stale, ignore_errors=True)
    # A (re)started endpoint follows the desired deployment in S3, as every other replica does (with
    # none stored: the registry's champion). Nothing local says what to serve: the desired-version
    # file of endpoints before shared state is removed, and so is a stale nudge.
    for stale in ("desired.json", "deployment.nudge"):
        (settings.serving_state_dir / stale).unlink(missing_ok=True)
    (settings.serving_state_dir / "workers").mkdir(parents=True, exist_ok=True)
    uvicorn.run(
        "include.continuous_training.serving.app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level="warning",
        access_log=False,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
