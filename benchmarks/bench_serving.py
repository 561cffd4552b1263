"""Single-row throughput and latency of our endpoint against ``mlflow models serve``, same model, same run.

Starts S3 + MLflow on loopback, trains and registers one model, then serves version 1 two ways:

- ours: ``python -m include.continuous_training.serving`` (FastAPI/uvicorn, orjson, native booster),
  started by ``devtools.services.start_endpoint`` as everywhere else;
- baseline: ``mlflow models serve -m models:/NAME/1 --env-manager local`` (MLflow's scoring server),
  sent the same row in its ``dataframe_split`` format (the encoded features of the model signature);

both with ``--workers`` worker processes, and drives each with ``wrk`` (Debian package ``wrk``) for
``--seconds`` seconds over ``--connections`` connections, first one row per request, then batches of
100 rows. Ours runs as deployed: input checks on, inference log on (to the S3 server), metrics on.
Prints req/s (rows/s for batches) and p50/p99 for each and the ratio. Then, on the same endpoint with
a second version of the same model as the candidate, single-row load champion-only, in shadow at 100 %
and 10 % and in canary at 10 %: what each mode costs per request (the endpoint's CPU time per request)
against champion-only. Load generator and servers share this machine's cores: read the ratio, not the
absolutes.

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
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from benchmarks.common import Row, emit, json_argument


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
    requests = float(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    return {
        "rps": rps,
        "requests": requests,
        "p50_ms": ms("50"),
        "p99_ms": ms("99"),
        "non_2xx": float(errors.group(1)) if errors else 0.0,
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by ``pid`` and its children (the uvicorn workers)."""
    pids, total = [pid], 0.0
    for task in Path(f"/proc/{pid}/task").iterdir():
        pids += [int(child) for child in (task / "children").read_text().split()]
    for each in pids:
        try:
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def wait_for(url: str, timeout: float = 120) -> None:
    from devtools.services import http_ok

    deadline = time.monotonic() + timeout
    while not http_ok(url):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not come up")
        time.sleep(0.5)


def main(argv: list[str] | None = None) -> list[Row]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--rollout-rounds", type=int, default=3, help="interleaved rounds of the rollout modes")
    json_argument(parser)
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        rows = [
            Row("serving", "endpoint throughput", None, None, "req/s", "", "≥ 1,500 req/s", None, "wrk not installed")
        ]
        emit(rows, args.json)
        return rows

    from devtools.datasets import BatchSpec, generate_batch, to_bytes
    from devtools.processes import spawn_group, stop_groups
    from devtools.services import LocalServices, free_port, start_endpoint, subprocess_env, venv_bin
    from include.continuous_training.config import load_settings
    from include.continuous_training.features import FeatureSpec
    from include.continuous_training.ingestion import find_new_objects, ingest_object
    from include.continuous_training.registry import promote_champion, register_challenger, tracking_client
    from include.continuous_training.storage import s3_client
    from include.continuous_training.training import assemble_training_data, train_challenger

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

        import pandas as pd

        from include.continuous_training.registry import load_model

        spec_features = list(settings.feature_columns)
        records = [
            {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}
            for row in frame[spec_features].head(args.batch).to_dict(orient="records")
        ]
        record = records[0]
        loaded = load_model(f"models:/{settings.model_name}/1")
        spec: FeatureSpec = loaded.spec

        def mlflow_body(rows: list[dict]) -> dict:
            encoded = spec.encoded_frame(pd.DataFrame(rows))
            return {"dataframe_split": {"columns": list(encoded.columns), "data": encoded.values.tolist()}}

        bodies = {
            "ours": (record, {"records": records}),
            "mlflow models serve": (mlflow_body([record]), mlflow_body(records)),
        }

        results: dict[str, dict[str, float]] = {}
        rollouts: dict[str, dict[str, float]] = {}
        batches: dict[str, dict[str, float]] = {}
        theirs_port = free_port()
        mlflow_serve = [
            venv_bin("mlflow"),
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
        ]
        for name in ("ours", "mlflow models serve"):
            single, batch = bodies[name]
            if name == "ours":
                own = {"CT_MODEL_NAME": settings.model_name, "CT_SERVING_ADMIN_TOKEN": secrets.token_urlsafe(8)}
                endpoint = start_endpoint(own, Path(tmp) / "serving", workers=args.workers)
                pid, url, ready = endpoint.pid, endpoint.url, "/ready"
            else:
                log = Path(tmp) / "mlflow-models-serve.log"
                pid = spawn_group(mlflow_serve, subprocess_env(), cwd=Path(tmp), log_path=log).pid
                url, ready = f"http://127.0.0.1:{theirs_port}", "/ping"
            try:
                wait_for(url + ready)
                path = "/predict" if name == "ours" else "/invocations"
                wrk(url + path, single, 3, args.connections, Path(tmp))  # warm-up
                results[name] = wrk(url + path, single, args.seconds, args.connections, Path(tmp))
                batches[name] = wrk(url + path, batch, args.seconds, args.connections, Path(tmp))
                if name == "ours":
                    rollouts = rollout_modes(settings, pid, url, own["CT_SERVING_ADMIN_TOKEN"], single, args, Path(tmp))
            finally:
                stop_groups([pid], grace=30)
        ceilings = server_ceilings(own, bodies["ours"][0], args, Path(tmp))

    ours, base = results["ours"], results["mlflow models serve"]
    setup = f"{args.workers} workers each, wrk 1 thread x {args.connections} connections, {args.seconds} s"
    for name, r in {**results, **{f"{k} ({args.batch}-row batches)": v for k, v in batches.items()}}.items():
        print(
            f"{name:36s} {r['rps']:8.0f} req/s  p50 {r['p50_ms']:7.2f} ms  p99 {r['p99_ms']:7.2f} ms  "
            f"non-2xx {r['non_2xx']:.0f}"
        )
    errors = sum(r["non_2xx"] for r in [*results.values(), *batches.values()])
    rows = [
        Row(
            "serving",
            f"single-row POST /predict, {setup}",
            ours["rps"],
            base["rps"],
            "req/s",
            "mlflow models serve, same model",
            "≥ 1,500 req/s and ≥ 20x MLflow",
            ours["rps"] >= 1500 and ours["rps"] >= 20 * base["rps"],
            note=f"non-2xx {errors:.0f}",
        ),
        Row(
            "serving",
            "single-row p99 latency under that load",
            ours["p99_ms"],
            base["p99_ms"],
            "ms",
            "mlflow models serve",
            "≤ 20 ms",
            ours["p99_ms"] <= 20,
            note=f"p50 {ours['p50_ms']:.1f} ms vs {base['p50_ms']:.1f} ms",
        ),
        Row(
            "serving",
            f"{args.batch}-row batches, rows/s",
            batches["ours"]["rps"] * args.batch,
            batches["mlflow models serve"]["rps"] * args.batch,
            "rows/s",
            "mlflow models serve",
            "≥ 5x MLflow",
            batches["ours"]["rps"] >= 5 * batches["mlflow models serve"]["rps"],
            note=f"p99 {batches['ours']['p99_ms']:.1f} ms vs {batches['mlflow models serve']['p99_ms']:.1f} ms",
        ),
    ]
    rows += ceiling_rows(ceilings, args)
    direct = rollouts.pop("direct")
    for label, measured in rollouts.items():
        cost, target = measured["cpu_us"] / direct["cpu_us"], ROLLOUT_TARGETS.get(label)
        rows.append(
            Row(
                "serving",
                f"single-row {label}: endpoint CPU time per request vs champion-only, same endpoint, median of "
                f"{args.rollout_rounds} interleaved runs",
                measured["cpu_us"],
                direct["cpu_us"],
                "CPU-µs/req",
                "champion only",
                f"≤ {target:g}x" if target else "—",
                cost <= target if target else None,
                note=(
                    f"{measured['rps']:,.0f} vs {direct['rps']:,.0f} req/s; p99 {measured['p99_ms']:.1f} vs "
                    f"{direct['p99_ms']:.1f} ms; non-2xx {measured['non_2xx']:.0f}"
                ),
            )
        )
    emit(rows, args.json)
    return rows


SERVERS = ("uvicorn", "granian")


def server_argv(server: str, target: str, port: int, workers: int, factory: bool) -> list[str]:
    """How ``server`` runs the ASGI ``target`` on loopback with ``workers`` processes, no access log."""
    import sys

    common = ["--host", "127.0.0.1", "--port", str(port), "--workers", str(workers), "--log-level", "warning"]
    common += ["--no-access-log", *(["--factory"] if factory else [])]
    if server == "uvicorn":
        return [sys.executable, "-m", "uvicorn", target, *common]
    return [sys.executable, "-m", "granian", "--interface", "asgi", *common, target]


def server_ceilings(
    own: dict[str, str], record: dict, args: argparse.Namespace, workdir: Path
) -> dict[tuple[str, str], dict[str, float] | str]:
    """Single-row load on an empty ASGI handler (:mod:`benchmarks.ceiling_app`) and on our endpoint's app,
    each under uvicorn and under granian, same workers, same wrk: what the server stack allows, and what
    share of it the endpoint reaches. A server that is not installed gets its reason instead of figures.

    Our app under a server other than its launcher's gets the environment the launcher gives it (its
    state folder, worker count); it follows the same desired deployment in S3 (direct by then).
    """
    import importlib.util

    from devtools.processes import spawn_group, stop_groups
    from devtools.services import free_port, subprocess_env

    found: dict[tuple[str, str], dict[str, float] | str] = {}
    apps = {
        "empty handler": ("benchmarks.ceiling_app:app", False, "/"),
        "our endpoint": ("include.continuous_training.serving.app:create_app", True, "/ready"),
    }
    for server in SERVERS:
        for label, (target, factory, ready) in apps.items():
            if importlib.util.find_spec(server) is None:
                found[(server, label)] = f"{server} not installed"
                continue
            port = free_port()
            state = workdir / f"ceiling-{server}-{label.replace(' ', '-')}"
            env = subprocess_env(
                {
                    **own,
                    "CT_SERVING_URL": f"http://127.0.0.1:{port}",
                    "CT_SERVING_STATE_DIR": str(state),
                    "CT_SERVING_WORKERS": str(args.workers),
                }
            )
            argv = server_argv(server, target, port, args.workers, factory)
            pid = spawn_group(argv, env, cwd=Path.cwd(), log_path=workdir / f"{state.name}.log").pid
            url = f"http://127.0.0.1:{port}"
            try:
                wait_for(url + ready)
                wrk(url + "/predict", record, 3, args.connections, workdir)  # warm-up
                found[(server, label)] = run = wrk(url + "/predict", record, args.seconds, args.connections, workdir)
                print(f"{label} under {server:8s} {run['rps']:8.0f} req/s  p99 {run['p99_ms']:7.2f} ms", flush=True)
            finally:
                stop_groups([pid], grace=30)
    return found


def ceiling_rows(found: dict[tuple[str, str], dict[str, float] | str], args: argparse.Namespace) -> list[Row]:
    """The server-ceiling rows: the empty handler under granian vs uvicorn; our endpoint's share of the
    empty handler under each server (with the endpoint's own granian/uvicorn ratio in the note)."""
    setup = f"{args.workers} workers, wrk 1 thread x {args.connections} connections, {args.seconds} s"

    def rps(server: str, label: str) -> float | None:
        run = found.get((server, label))
        return run["rps"] if isinstance(run, dict) else None

    def missing(*keys: tuple[str, str]) -> str:
        """Why a run has no figures, or else its non-2xx answers (an error answers faster than a prediction)."""
        notes = []
        for key in keys:
            run = found.get(key)
            if isinstance(run, dict):
                notes.append(f"{key[1]} on {key[0]} non-2xx {run['non_2xx']:.0f}")
            elif run is not None:
                notes.append(str(run))
        return "; ".join(notes)

    empty = {server: rps(server, "empty handler") for server in SERVERS}
    ours = {server: rps(server, "our endpoint") for server in SERVERS}
    rows = [
        Row(
            "serving",
            f"single-row ceiling: an empty ASGI handler under granian vs under uvicorn, {setup}",
            empty["granian"],
            empty["uvicorn"],
            "req/s",
            "the same handler under uvicorn",
            "—",
            None,
            note=missing(("granian", "empty handler"), ("uvicorn", "empty handler")),
        )
    ]
    for server in SERVERS:
        other = "granian" if server == "uvicorn" else "uvicorn"
        note = missing((server, "our endpoint"), (server, "empty handler"))
        mine, theirs = ours[server], ours[other]
        if mine and theirs:
            note += f"; our endpoint under {server} vs under {other}: {mine / theirs:.2f}x"
        rows.append(
            Row(
                "serving",
                f"single-row POST /predict under {server}: share of the empty handler's ceiling on {server}",
                ours[server],
                empty[server],
                "req/s",
                f"empty handler, {server}",
                "—",
                None,
                note=note,
            )
        )
    return rows


# Per-request cost against champion-only that the progressive-delivery issue sets (shadow 10 %: none).
ROLLOUT_TARGETS = {"shadow 100 %": 1.4, "canary 10 %": 1.1}


def rollout_modes(
    settings: Any, pid: int, url: str, token: str, record: dict, args: argparse.Namespace, workdir: Path
) -> dict[str, dict[str, float]]:
    """Single-row load on the same endpoint in each rollout mode, champion-only (direct) measured again.

    What a mode costs per request is the CPU time the endpoint's processes (its workers, their
    off-path threads included) spend per answered request, from ``/proc``: on a machine shared with
    other work, throughput swings with their load, CPU time per request much less.

    The candidate is a second registered version of the same logged model: the same scoring cost, so
    the difference is what the mode itself costs (the off-path scoring, the routing). Canary runs with
    ``shadow_percent`` 0 (no off-path scoring of the other variant).
    """
    from include.continuous_training.deployment import LocalEndpoint
    from include.continuous_training.registry import tracking_client

    client = tracking_client(settings)
    champion = client.get_model_version(settings.model_name, "1")
    model_id = str(champion.source).removeprefix("models:/")  # registered from models:/<logged model id>
    candidate = str(
        client.create_model_version(
            settings.model_name, str(champion.source), run_id=champion.run_id, model_id=model_id
        ).version
    )
    admin = LocalEndpoint(url, token)
    modes = {
        "direct": lambda: admin.abort_rollout(reason="bench: champion only"),
        "shadow 100 %": lambda: admin.start_rollout(candidate, "shadow", shadow_percent=100),
        "shadow 10 %": lambda: admin.start_rollout(candidate, "shadow", shadow_percent=10),
        "canary 10 %": lambda: admin.start_rollout(candidate, "canary", 10, 0),
    }
    runs: dict[str, list[dict[str, float]]] = {label: [] for label in modes}
    for _ in range(args.rollout_rounds):  # interleaved: a load change on the machine hits every mode alike
        for label, write in modes.items():
            admin.wait_converged(write(), timeout=60)
            wrk(url + "/predict", record, 1, args.connections, workdir)  # warm-up in this mode
            before = cpu_seconds(pid)
            run = wrk(url + "/predict", record, args.seconds, args.connections, workdir)
            time.sleep(0.5)  # the off-path queue drains: its scoring belongs to these requests
            run["cpu_us"] = (cpu_seconds(pid) - before) / run["requests"] * 1e6
            runs[label].append(run)
            print(
                f"{label:20s} {run['rps']:8.0f} req/s  p99 {run['p99_ms']:7.2f} ms  {run['cpu_us']:6.0f} CPU-µs/req",
                flush=True,
            )
    admin.wait_converged(modes["direct"](), timeout=60)  # champion only again, for what runs next
    # Per mode, the run with the median CPU time per request.
    return {label: sorted(found, key=lambda r: r["cpu_us"])[len(found) // 2] for label, found in runs.items()}


if __name__ == "__main__":
    main()
