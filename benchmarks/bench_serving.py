"""Single-row throughput and latency of our endpoint against ``mlflow models serve``, same model, same run.

Starts S3 + MLflow on loopback, trains and registers one model, then serves version 1 two ways:

- ours: ``python -m include.continuous_training.serving`` (FastAPI/uvicorn, orjson, native booster);
- baseline: ``mlflow models serve -m models:/NAME/1 --env-manager local`` (MLflow's scoring server),
  sent the same row in its ``dataframe_split`` format (the encoded features of the model signature);

both with ``--workers`` worker processes, and drives each with ``wrk`` (Debian package ``wrk``) for
``--seconds`` seconds over ``--connections`` connections. Prints req/s and p50/p99 for each and the
ratio. Load generator and servers share this machine's cores: read the ratio, not the absolutes.

    python -m benchmarks.bench_serving --seconds 20 --workers 2
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path


def wrk(url: str, body: dict, seconds: int, connections: int, workdir: Path) -> dict[str, float]:
    script = workdir / f"post-{uuid.uuid4().hex[:6]}.lua"
    script.write_text(
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = [==[{json.dumps(body)}]==]\n"  # level-2 brackets: the JSON itself contains "]]"
    )
    out = subprocess.run(
        ["wrk", "-t", "1", "-c", str(connections), "-d", f"{seconds}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout

    def ms(label: str) -> float:
        match = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)", out, re.M)
        assert match, out
        value, unit = float(match.group(1)), match.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "p50_ms": ms("50"), "p99_ms": ms("99"), "non_2xx": float(errors.group(1)) if errors else 0.0}


def wait_for(url: str, timeout: float = 120) -> None:
    from include.continuous_training.services import http_ok

    deadline = time.monotonic() + timeout
    while not http_ok(url):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not come up")
        time.sleep(0.5)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk not found: apt-get install wrk")

    from include.continuous_training.config import load_settings
    from include.continuous_training.datasets import BatchSpec, generate_batch, to_bytes
    from include.continuous_training.ingestion import find_new_objects, ingest_object
    from include.continuous_training.registry import promote_champion, register_challenger, tracking_client
    from include.continuous_training.services import LocalServices, free_port
    from include.continuous_training.storage import s3_client
    from include.continuous_training.training import FeatureSpec, assemble_training_data, train_challenger

    with tempfile.TemporaryDirectory() as tmp, LocalServices(state_dir=Path(tmp), with_endpoint=False) as stack:
        os.environ.update(stack.env())
        suffix = uuid.uuid4().hex[:6]
        settings = dataclasses.replace(
            load_settings(), model_name=f"bench-{suffix}", mlflow_experiment=f"bench-{suffix}"
        )
        s3 = s3_client(settings)
        frame = generate_batch(BatchSpec(rows=20000, seed=5))
        s3.put_object(
            Bucket=settings.s3_bucket, Key=settings.landing_prefix + "b.parquet", Body=to_bytes(frame, "parquet")
        )
        for ref in find_new_objects(s3, settings):
            ingest_object(s3, settings, ref, run_id="bench")
        model = train_challenger(s3, settings, assemble_training_data(s3, settings), dag_run_id="bench")
        client = tracking_client(settings)
        promote_champion(
            client, settings, register_challenger(client, settings, model["run_id"], model["model_id"], {})
        )

        row = frame.iloc[0]
        spec_features = list(settings.feature_columns)
        record = {k: (row[k].item() if hasattr(row[k], "item") else row[k]) for k in spec_features}
        import pandas as pd

        from include.continuous_training.registry import load_model

        loaded = load_model(f"models:/{settings.model_name}/1")
        spec: FeatureSpec = loaded.spec
        encoded = spec.encoded_frame(pd.DataFrame([record]))
        mlflow_body = {"dataframe_split": {"columns": list(encoded.columns), "data": encoded.values.tolist()}}

        env = {
            **os.environ,
            "CT_MODEL_NAME": settings.model_name,
            "CT_SERVING_ADMIN_TOKEN": secrets.token_urlsafe(8),
            "CT_SERVING_STATE_DIR": str(Path(tmp) / "serving"),
            "PYTHONPATH": str(Path.cwd()),
            "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""),
        }
        results = {}
        ours_port, theirs_port = free_port(), free_port()
        servers = {
            "ours": (
                [
                    sys.executable,
                    "-m",
                    "include.continuous_training.serving",
                    "--port",
                    str(ours_port),
                    "--workers",
                    str(args.workers),
                ],
                f"http://127.0.0.1:{ours_port}",
                "/ready",
                record,
            ),
            "mlflow models serve": (
                [
                    str(Path(sys.executable).parent / "mlflow"),
                    "models",
                    "serve",
                    "-m",
                    f"models:/{settings.model_name}/1",
                    "--env-manager",
                    "local",
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(theirs_port),
                    "-w",
                    str(args.workers),
                ],
                f"http://127.0.0.1:{theirs_port}",
                "/ping",
                mlflow_body,
            ),
        }
        for name, (argv, url, ready, body) in servers.items():
            process = subprocess.Popen(
                argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
            )
            try:
                wait_for(url + ready)
                path = "/predict" if name == "ours" else "/invocations"
                wrk(url + path, body, 3, args.connections, Path(tmp))  # warm-up
                results[name] = wrk(url + path, body, args.seconds, args.connections, Path(tmp))
            finally:
                os.killpg(process.pid, 15)
                process.wait(timeout=30)

    base = results["mlflow models serve"]
    print(
        f"single-row POST, {args.workers} workers each, wrk 1 thread x {args.connections} connections, "
        f"{args.seconds}s, same model (version 1)"
    )
    for name, r in results.items():
        print(
            f"{name:20s} {r['rps']:8.0f} req/s  p50 {r['p50_ms']:7.2f} ms  p99 {r['p99_ms']:7.2f} ms  "
            f"non-2xx {r['non_2xx']:.0f}  throughput x{r['rps'] / base['rps']:.1f}"
        )


if __name__ == "__main__":
    main()
