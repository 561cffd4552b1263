"""``make demo``: the whole continuous-training loop on this machine, no cloud, no Docker.

    python -m devtools.demo [--exit] [--home .demo]

Starts the local stack (:class:`devtools.stack.LocalStack`: S3 server, MLflow server, serving
endpoint, and Airflow with a real scheduler, ``airflow standalone``: scheduler, dag-processor,
triggerer, api-server; LocalExecutor on SQLite) configured from ``airflow_settings.yaml``, unpauses
the DAGs, then drives the scenario through Airflow's REST API, printing a line per step:

1. a first batch and a broken file land in S3 → the ``wait_for_new_data`` sensor fires →
   ``ingest_new_data`` curates the batch and quarantines the file → the curated-batches Asset starts
   ``train_and_deploy`` → the challenger passes the gates → champion v1 is deployed;
2. a traffic generator calls the endpoint: normal traffic, then drifted traffic;
3. ``monitor_drift`` is triggered for "today" → drift → it triggers ``train_and_deploy``; with no
   new labelled data the challenger cannot beat the champion, and the gate keeps v1 serving;
4. labelled data of the drifted period lands while clients keep calling the endpoint → ingest →
   retraining → the new model is rolled out beside champion v1 (``CT_ROLLOUT=shadow,canary``,
   :data:`DEMO_ROLLOUT_SETTINGS`): shadow, then canary 10 % and 50 %, each stage waiting for live
   traffic and judged on it → promoted, it serves the traffic.

It ends with a summary (versions and their metrics, every decision record, the rollout's stages with
their analysis checks and the loop time they added, quarantined objects, report locations, URLs and
the Airflow login), written to ``<home>/summary.json`` as well, and stays up until Ctrl-C; ``--exit``
stops everything and exits 0 when the loop closed, 1 when it did not. Each run starts from a clean
``<home>`` (default ``.demo/``).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from devtools.airflow_api import AirflowAPIError
from devtools.services import PROJECT_ROOT
from devtools.stack import LocalStack, StackError

FIRST_DAY = datetime(2026, 11, 1, tzinfo=UTC)
# The demo's rollout, sized to be watched: a few hundred candidate-scored requests per stage (production
# default 500 over up to an hour). The demo's environment only: the project default stays CT_ROLLOUT=direct
# (config.py), because a stage with no traffic rolls back and not every install has traffic to judge by.
# A value in the environment wins (`CT_ROLLOUT=direct make demo` deploys directly).
DEMO_ROLLOUT_SETTINGS = {
    "CT_ROLLOUT": "shadow,canary",
    "CT_SHADOW_PERCENT": "100",
    "CT_CANARY_STEPS": "10,50",
    "CT_ROLLOUT_MIN_REQUESTS": "400",
    "CT_ROLLOUT_MAX_MINUTES": "5",
    # Step 4's retrain follows a complete change of what fraud looks like (v1 scores the new data at ROC AUC
    # ~0.5): v2's scores *must* move away from v1's (PSI ~1.6, label agreement ~83 %, over the default limits).
    # The clients' labels come back (LateLabels below), so the realized ROC AUC decides and those two checks
    # are reported, not gating (CT_ROLLOUT_LABELS_DECIDE, on by default).
}
# Requests per second the clients send while step 4 retrains and rolls out (paced: the CPUs are shared
# with the training). Every stage has the candidate score every request (shadow; in canary, off the path
# where it does not answer: CT_SHADOW_PERCENT=100), so a stage's CT_ROLLOUT_MIN_REQUESTS take 10 s here.
# Not less, on purpose: a trigger that fires within a few seconds of deferring can meet Airflow 3.3's
# stale defer-exit event (apache/airflow#72716: the resumed sensor is failed as "state changed
# externally" and waits out its retry_delay, 2 minutes); seen here once in three stages at 200 req/s.
ROLLOUT_TRAFFIC_RATE = 40.0


class DemoError(StackError):
    """A step of the scenario did not happen; the message says which and where to look."""


class LateLabels:
    """The true labels of the clients' transactions, written to ``feedback/`` as they are answered.

    :meth:`answered` (``BackgroundTraffic``'s ``on_answer``) notes each answered prediction id with the
    label of the record it scored; every ``every`` s the new ones go to S3 as one Parquet object
    (``prediction_id`` and the label column, what ``read_feedback`` reads), and the rest on :meth:`stop`.
    So each rollout stage's analysis finds labels for its live traffic: the realized ROC AUC of both models.
    Every 5 s by default, as often as the endpoint flushes its inference log (``CT_INFERENCE_FLUSH_SECONDS``):
    the analysis reads every object under ``feedback/``, so fewer, larger objects.
    """

    def __init__(self, s3: Any, settings: Any, labels: list[Any], every: float = 5.0) -> None:
        self.s3, self.settings, self.labels, self.every = s3, settings, labels, every
        self.written = 0
        self._pending: list[tuple[str, Any]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._objects = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def answered(self, first: int, prediction_ids: list[str]) -> None:
        with self._lock:
            self._pending += [(pid, self.labels[first + i]) for i, pid in enumerate(prediction_ids)]

    def _flush(self) -> None:
        import io

        import pandas as pd

        with self._lock:
            pending, self._pending = self._pending, []
        if not pending:
            return
        frame = pd.DataFrame(pending, columns=["prediction_id", self.settings.label_column])
        body = io.BytesIO()
        frame.to_parquet(body, index=False)
        key = f"{self.settings.feedback_prefix}demo-step4/{self._objects:05d}.parquet"
        self.s3.put_object(Bucket=self.settings.s3_bucket, Key=key, Body=body.getvalue())
        self._objects += 1
        self.written += len(frame)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self._flush()

    def __enter__(self) -> LateLabels:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)
        self._flush()


@dataclass(frozen=True)
class Loop:
    """One batch's way through the loop: when it landed, the ingest run that took it, the training it started."""

    champion: str
    landed: datetime
    ingest_run_id: str
    training_run_id: str


@dataclass(frozen=True)
class ObservedRollout:
    """What the demo saw of a rollout from outside: the clients' answers and the loop's clock."""

    training_run_id: str
    traffic: dict[str, Any]  # the clients' report while it ran: requests, failed, statuses, versions
    timing: dict[str, Any]  # devtools.loop_timing.LoopTiming.as_dict()


@dataclass
class Demo(LocalStack):
    """The scenario of ``make demo`` on a :class:`LocalStack`: :meth:`scenario` after :meth:`start`."""

    predicted: int = 0  # predictions answered so far: the inference log must catch up with them
    ct_settings: Mapping[str, str] = field(default_factory=lambda: dict(DEMO_ROLLOUT_SETTINGS))
    observed_rollouts: list[ObservedRollout] = field(default_factory=list)

    # -- the scenario --------------------------------------------------------------------------
    def scenario(self) -> dict[str, Any]:
        """Steps 1 to 4 of the module docstring; return the summary (``loop_closed`` says whether it closed)."""
        from devtools.datasets import BatchSpec, generate_batch, to_bytes

        self.settle_unpause_ticks()

        self.say("STEP 1: a first batch and a broken file land in s3://.../landing/")
        first = generate_batch(BatchSpec(rows=6000, seed=11, start=FIRST_DAY))
        broken = first.head(200).to_csv(index=False, sep=";").encode()  # a ';'-delimited export
        champion_before = self._train_after_ingest(
            {
                "2026-11-01/transactions.parquet": to_bytes(first, "parquet"),
                "2026-11-01/export-semicolon.csv": broken,
            },
            expect="PROMOTE",
        ).champion
        self.check_served(champion_before)

        self.say("STEP 2: a traffic generator calls the endpoint")
        self._traffic("normal traffic", rows=600, seed=21, covariate_drift=0.0)
        self._traffic("drifted traffic (amounts up, more online and travel)", rows=1800, seed=22, covariate_drift=1.0)

        self.say("STEP 3: monitor_drift runs for today (no need to wait for 05:00 UTC)")
        triggered = self._monitor_drift()
        if triggered is not None:
            decision = self._await_training(triggered, expect="REJECT")
            self.say(f"  the gate kept v{champion_before} serving: {decision}")
        self.check_served(champion_before)

        self.say("STEP 4: labelled data of the drifted period lands, while clients keep calling the endpoint")
        drifted = generate_batch(
            BatchSpec(rows=30000, seed=12, start=FIRST_DAY.replace(day=2), covariate_drift=1.0, concept_drift=1.0)
        )
        loop, rollout = self._rollout_under_traffic(
            {"2026-11-02/transactions.parquet": to_bytes(drifted, "parquet")}, expect="PROMOTE"
        )
        champion_after = loop.champion
        self.check_served(champion_after)
        report = self._traffic("traffic after the new champion", rows=300, seed=23, covariate_drift=1.0)
        from include.continuous_training.rollout import rollout_stages

        stages = self._rollout_records(champion_after)
        expected = [stage.slug for stage in rollout_stages(self.settings)]  # none with CT_ROLLOUT=direct
        closed = (
            int(champion_after) > int(champion_before)
            and set(report.versions) == {champion_after}
            and report.failed == 0
            and triggered is not None
            and rollout.traffic["failed"] == 0
            and [stage["slug"] for stage in stages]
            == [stage["stage"] for stage in rollout.timing["stages"]]
            == expected
            and all(stage["verdict"] == "pass" for stage in stages)
        )
        return self.summary(closed)

    def _rollout_under_traffic(self, files: Mapping[str, bytes], expect: str) -> tuple[Loop, ObservedRollout]:
        """:meth:`_train_after_ingest` while clients call the endpoint (the stages wait for their traffic)."""
        from devtools.datasets import BatchSpec, generate_batch
        from devtools.loop_timing import loop_timing
        from devtools.traffic import BackgroundTraffic

        url = self.services.processes["serving"].url
        how = (
            "is deployed directly (CT_ROLLOUT=direct)"
            if self.settings.rollout == "direct"
            else f"rolls out with CT_ROLLOUT={self.settings.rollout} (canary steps "
            f"{','.join(f'{p:g}' for p in self.settings.canary_steps)} %, "
            f"{self.settings.rollout_min_requests} candidate-scored requests per stage)"
        )
        self.say(f"  clients call {url}/predict, {ROLLOUT_TRAFFIC_RATE:.0f} requests/s; the new model {how}")
        # Transactions of the drifted period, and their true labels, sent to feedback/ as they are answered.
        frame = generate_batch(BatchSpec(rows=2000, seed=24, covariate_drift=1.0, concept_drift=1.0))
        records = list(frame[list(self.settings.feature_columns)].to_dict(orient="records"))
        labels = LateLabels(self.s3, self.settings, frame[self.settings.label_column].tolist())
        with labels, BackgroundTraffic(url, records, rate=ROLLOUT_TRAFFIC_RATE, on_answer=labels.answered) as traffic:
            loop = self._train_after_ingest(files, expect=expect)
        report = traffic.report
        self.say(f"  clients during the retraining and rollout: {report.summary()}")
        self.say(f"  their labels: {labels.written} in s3://{self.settings.s3_bucket}/{self.settings.feedback_prefix}")
        if report.failed:
            raise DemoError(f"{report.failed} requests failed during the rollout: {dict(report.statuses)}")
        self.predicted += len(report.prediction_ids)
        api = self._api()
        timing = loop_timing(
            loop.landed,
            api.task_instances("ingest_new_data", loop.ingest_run_id),
            api.task_instances("train_and_deploy", loop.training_run_id),
        )
        for record in self._rollout_records(loop.champion):
            self.say(f"  rollout {record['stage']}: {record['verdict'].upper()}: {record['reason'][:200]}")
        self.say(f"  {timing.summary()}")
        observed = ObservedRollout(
            loop.training_run_id,
            {
                "requests": report.requests,
                "failed": report.failed,
                "statuses": {str(k): v for k, v in sorted(report.statuses.items())},
                "versions": dict(sorted(report.versions.items())),
                "p99_ms": round(report.percentile(99), 1),
                "labels_sent": labels.written,
            },
            timing.as_dict(),
        )
        self.observed_rollouts.append(observed)
        return loop, observed

    def _rollout_records(self, version: str) -> list[dict[str, Any]]:
        """The analysis records of ``version``'s rollout stages (MLflow: ``rollout/<stage>.json``), in order."""
        import tempfile

        client = self.mlflow()
        run_id = client.get_model_version(self.settings.model_name, version).run_id
        if not run_id:
            return []
        records = []
        with tempfile.TemporaryDirectory() as folder:
            for artifact in client.list_artifacts(run_id, "rollout"):
                if artifact.path.endswith(".json"):
                    local = Path(client.download_artifacts(run_id, artifact.path, folder))
                    records.append({**json.loads(local.read_text()), "slug": local.stem})
        return sorted(records, key=lambda record: float(record.get("since", 0.0)))

    def _train_after_ingest(self, files: Mapping[str, bytes], expect: str) -> Loop:
        """Land files while the sensor waits; ingest; wait for the Asset-triggered training; return the loop."""
        from include.continuous_training.ingestion import read_manifest

        api = self._api()
        run_id = self.wait_for_listening_ingest_run()
        self.say(f"  the wait_for_new_data sensor of ingest_new_data ({run_id}) is deferred, listing landing/")
        trainings_before = self.run_ids("train_and_deploy")
        keys = {self.settings.landing_prefix + name for name in files}
        landed = datetime.now(UTC)
        for key, body in files.items():
            self.s3.put_object(Bucket=self.settings.s3_bucket, Key=self.settings.landing_prefix + key, Body=body)
            self.say(
                f"  landed s3://{self.settings.s3_bucket}/{self.settings.landing_prefix}{key} ({len(body):,} bytes)"
            )
        while True:
            run = self.wait_for_run("ingest_new_data", run_id, timeout=600)
            handled = {r.source.key: r for r in read_manifest(self.s3, self.settings) if r.source.key in keys}
            mapped = {k: s for k, s in api.task_states("ingest_new_data", run_id).items() if k[0] == "ingest_batch"}
            self.say(f"  ingest_new_data {run_id}: {run['state']}; ingest_batch: {sorted(mapped.values(), key=str)}")
            if len(handled) == len(keys):
                break
            run_id = self.wait_for_listening_ingest_run()  # a file listed after the sensor fired: the next run takes it
        for key, result in sorted(handled.items()):
            if result.status == "quarantined":
                self.say(f"  QUARANTINED {key}: {result.reason[:200]}")
                self.say(f"    report: {result.report_uri}")
            else:
                self.say(f"  curated {key}: {result.good_rows} rows ({result.bad_rows} bad) -> {result.curated_uri}")
        training = self.wait_for_new_run("train_and_deploy", trainings_before, run_type="asset_triggered")
        self.say(f"  the curated_batches Asset started train_and_deploy ({training['dag_run_id']})")
        decision = self._await_training(training["dag_run_id"], expect=expect)
        self.say(f"  {decision}")
        return Loop(self.champion_version(), landed, run_id, str(training["dag_run_id"]))

    def _await_training(self, run_id: str, expect: str) -> str:
        run = self.wait_for_run("train_and_deploy", run_id)
        states = self._api().task_states("train_and_deploy", run_id)
        done = [task for (task, _), state in states.items() if state == "success"]
        self.say(f"  train_and_deploy {run_id}: {run['state']}; succeeded: {', '.join(sorted(done))}")
        if run["state"] != "success":
            failed = sorted(task for (task, _), state in states.items() if state == "failed")
            why = ""
            if any(task.startswith("analyze_") for task in failed):  # the rollout's own record says why
                versions = self.mlflow().search_model_versions(f"name = '{self.settings.model_name}'")
                latest = max((int(v.version) for v in versions), default=None)
                records = self._rollout_records(str(latest)) if latest is not None else []
                why = "".join(
                    f"; {r['stage']}: {r['verdict']}: {r['reason']}" for r in records if r["verdict"] != "pass"
                )
            raise DemoError(
                f"train_and_deploy {run_id} {run['state']} (failed: {failed}){why}; "
                f"task logs under {self.home}/airflow/logs"
            )
        decision = self._decision_of(run_id)
        if not decision.startswith(expect):
            raise DemoError(f"train_and_deploy {run_id} decided {decision!r}, the scenario expects {expect}")
        return decision

    def _decision_of(self, dag_run_id: str) -> str:
        client = self.mlflow()
        experiment = client.get_experiment_by_name(self.settings.mlflow_experiment)
        runs = client.search_runs(
            [experiment.experiment_id], filter_string=f"tags.`ct.dag_run_id` = '{dag_run_id}'", max_results=1
        )
        if not runs:
            raise DemoError(f"no MLflow run recorded for train_and_deploy {dag_run_id}")
        return str(runs[0].data.tags.get("ct.decision_summary", runs[0].data.tags.get("ct.decision", "?")))

    def _traffic(self, what: str, rows: int, seed: int, covariate_drift: float) -> Any:
        from devtools.traffic import generated_records, send

        url = self.services.processes["serving"].url
        records = generated_records(rows, seed, covariate_drift, self.settings.feature_columns)
        report = send(url, records, rows_per_request=1, concurrency=4)
        self.say(f"  {what}: {report.summary()}")
        if report.failed:
            raise DemoError(f"{report.failed} requests failed: {dict(report.statuses)}")
        self.predicted += len(report.prediction_ids)
        self.wait_until(lambda: self._logged_rows() >= self.predicted, 60, "the inference log to be flushed to S3")
        return report

    def _logged_rows(self) -> int:
        from include.continuous_training.storage import list_objects, read_parquet_object

        total = 0
        for ref in list_objects(self.s3, self.settings.s3_bucket, self.settings.inference_prefix):
            total += len(read_parquet_object(self.s3, self.settings.s3_bucket, ref.key)[0])
        return total

    def _monitor_drift(self) -> str | None:
        api = self._api()
        run_id = f"demo_drift_{datetime.now(UTC):%Y%m%dT%H%M%S}"
        trainings_before = self.run_ids("train_and_deploy")
        api.trigger("monitor_drift", run_id)
        run = self.wait_for_run("monitor_drift", run_id, timeout=600)
        if run["state"] != "success":
            raise DemoError(f"monitor_drift {run_id} {run['state']}; task logs under {self.home}/airflow/logs")
        decision = self._drift_decisions()[-1]
        self.say(f"  monitor_drift {run_id}: {decision['action'].upper()}: {'; '.join(decision['reasons'])}")
        states = api.task_states("monitor_drift", run_id)
        if states.get(("trigger_retraining", -1)) != "success":
            return None
        training = self.wait_for_new_run("train_and_deploy", trainings_before)
        self.say(f"  monitor_drift triggered train_and_deploy ({training['dag_run_id']}), reason in its conf")
        return str(training["dag_run_id"])

    def _drift_decisions(self) -> list[dict[str, Any]]:
        from include.continuous_training.storage import get_json, list_objects

        prefix = f"{self.settings.reports_prefix}drift/"
        keys = sorted(
            r.key for r in list_objects(self.s3, self.settings.s3_bucket, prefix) if r.key.endswith("decision.json")
        )
        return [dict(get_json(self.s3, self.settings.s3_bucket, key) or {}, key=key) for key in keys]

    # -- summary ---------------------------------------------------------------------------------
    def summary(self, closed: bool) -> dict[str, Any]:
        """Versions and their metrics, decision records, quarantined objects, reports, URLs and login."""
        from include.continuous_training.ingestion import read_manifest
        from include.continuous_training.storage import list_objects

        client = self.mlflow()
        name = self.settings.model_name
        aliases: dict[str, list[str]] = {}
        for alias, version in client.get_registered_model(name).aliases.items():
            aliases.setdefault(str(version), []).append(alias)
        experiment = client.get_experiment_by_name(self.settings.mlflow_experiment)
        runs = client.search_runs(
            [experiment.experiment_id], filter_string="tags.`ct.decision` != ''", order_by=["start_time ASC"]
        )
        versions_by_run = {v.run_id: str(v.version) for v in client.search_model_versions(f"name = '{name}'")}
        trainings = []
        ui = self.settings.mlflow_tracking_uri
        for run in runs:
            tags, metrics = run.data.tags, run.data.metrics
            trainings.append(
                {
                    "dag_run_id": tags.get("ct.dag_run_id"),
                    "reason": tags.get("ct.reason"),
                    "decision": tags.get("ct.decision"),
                    "decision_record": tags.get("ct.decision_summary"),
                    "holdout_roc_auc": metrics.get("holdout_roc_auc"),
                    "champion_holdout_roc_auc": metrics.get("champion_holdout_roc_auc"),
                    "registered_version": versions_by_run.get(run.info.run_id),
                    "aliases": aliases.get(versions_by_run.get(run.info.run_id, ""), []),
                    "mlflow_run": f"{ui}/#/experiments/{experiment.experiment_id}/runs/{run.info.run_id}",
                }
            )
        quarantined = [
            {"key": r.source.key, "reason": r.reason, "report": r.report_uri}
            for r in read_manifest(self.s3, self.settings)
            if r.status == "quarantined"
        ]
        drift = [
            {
                "window": d["key"].split("/")[-2],
                "action": d.get("action"),
                "reasons": d.get("reasons"),
                "report": f"s3://{self.settings.s3_bucket}/{d['key'].rsplit('/', 1)[0]}/report.html",
            }
            for d in self._drift_decisions()
        ]
        reports = sorted(
            f"s3://{self.settings.s3_bucket}/{r.key}"
            for r in list_objects(self.s3, self.settings.s3_bucket, self.settings.reports_prefix)
            if r.key.endswith(".html")
        )
        champion = next((v for v, a in aliases.items() if "champion" in a), None)
        rollouts = []
        for observed in self.observed_rollouts:
            training = next((t for t in trainings if t["dag_run_id"] == observed.training_run_id), None)
            version = training["registered_version"] if training else None
            timing = {stage["stage"]: stage for stage in observed.timing["stages"]}
            records = self._rollout_records(version) if version else []
            rollouts.append(
                {
                    "dag_run_id": observed.training_run_id,
                    "version": version,
                    "beside_champion": records[0]["champion"]["version"] if records else None,
                    "outcome": "promoted" if version is not None and version == champion else "rolled back",
                    "stages": [self._stage_summary(record, timing) for record in records],
                    "clients": observed.traffic,
                    "loop": {key: value for key, value in observed.timing.items() if key != "stages"},
                }
            )
        serving = self.services.processes["serving"].url
        username, password = self.airflow_login
        return {
            "loop_closed": closed,
            "wall_seconds": round(time.monotonic() - self.started, 1),
            "model_name": name,
            "champion": champion,
            "trainings": trainings,
            "rollout_settings": {key: self.env.get(key, "") for key in DEMO_ROLLOUT_SETTINGS},
            "rollouts": rollouts,
            "quarantined": quarantined,
            "drift": drift,
            "reports": reports,
            "urls": {
                "airflow": self.airflow_url,
                "airflow_login": f"{username} / {password}",
                "mlflow": self.settings.mlflow_tracking_uri,
                "endpoint_docs": f"{serving}/docs",
                "endpoint_metrics": f"{serving}/metrics",
                "s3": self.services.processes["s3"].url,
            },
        }

    @staticmethod
    def _stage_summary(record: Mapping[str, Any], timing: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        """One stage for the summary: its verdict, its figures, every check, and its time on the clock."""
        clock = timing.get(record["slug"], {})
        figures = ("version", "requests", "errors", "error_rate", "p99_latency_ms", "mean_score")
        return {
            "stage": record["stage"],
            "verdict": record["verdict"],
            "reason": record["reason"],
            "seconds": clock.get("seconds"),
            "waiting_s": clock.get("waiting_s"),
            "champion": {key: record["champion"].get(key) for key in figures},
            "candidate": {key: record["candidate"].get(key) for key in figures},
            "paired_requests": record["paired_requests"],
            "psi": record["psi"],
            "ks": record["ks"],
            "agreement": record["agreement"],
            "checks": [
                {key: check[key] for key in ("name", "passed", "value", "threshold", "reason")}
                for check in record["checks"]
            ],
        }


def render(summary: dict[str, Any]) -> str:
    lines = [
        "",
        "=" * 100,
        f"SUMMARY  loop closed: {summary['loop_closed']}   wall time: {summary['wall_seconds']:.0f} s",
        "",
    ]
    lines.append("Trainings (oldest first):")
    for t in summary["trainings"]:
        auc = t["holdout_roc_auc"]
        champion_auc = t["champion_holdout_roc_auc"]
        version = f"v{t['registered_version']}" if t["registered_version"] else "not registered"
        lines.append(
            f"  {t['dag_run_id']}: {t['decision']}  -> {version} {t['aliases'] or ''}  holdout ROC AUC "
            f"{auc:.4f}" + (f" (champion {champion_auc:.4f})" if champion_auc is not None else "")
        )
        lines.append(f"    reason: {t['reason']}")
        lines.append(f"    record: {t['decision_record']}")
        lines.append(f"    MLflow: {t['mlflow_run']}")
    settings = summary.get("rollout_settings") or {}
    lines.append("Rollouts:")
    lines.append("  settings: " + ", ".join(f"{key}={value}" for key, value in settings.items()))
    for r in summary.get("rollouts", []):
        if not r["stages"]:
            lines.append(
                f"  v{r['version']} ({r['dag_run_id']}): no rollout stages (CT_ROLLOUT=direct): {r['outcome']}"
            )
        else:
            lines.append(
                f"  v{r['version']} beside champion v{r['beside_champion']} ({r['dag_run_id']}): {r['outcome']}"
            )
        for stage in r["stages"]:
            clock = f" in {stage['seconds']:.0f} s" if stage["seconds"] is not None else ""
            waiting = f" (waiting for traffic {stage['waiting_s']:.0f} s)" if stage["waiting_s"] is not None else ""
            lines.append(
                f"    {stage['stage']}: {stage['verdict'].upper()}{clock}{waiting}; requests scored: candidate "
                f"{stage['candidate']['requests']}, champion {stage['champion']['requests']}, "
                f"paired {stage['paired_requests']}"
            )
            for check in stage["checks"]:
                status = {True: "ok  ", False: "FAIL", None: "n/a "}[check["passed"]]
                lines.append(f"      {status} {check['name']}: {check['reason']}")
        clients = r["clients"]
        versions = ", ".join(f"v{v}: {n}" for v, n in clients["versions"].items()) or "none"
        lines.append(
            f"    clients meanwhile: {clients['requests']} requests, {clients['failed']} failed, p99 "
            f"{clients['p99_ms']:.0f} ms; answered by {versions}; {clients['labels_sent']} labels sent to feedback/"
        )
        loop = r["loop"]
        lines.append(
            f"    loop: batch lands -> champion serving {loop['total_s']:.0f} s with the rollout, about "
            f"{loop['without_rollout_s']:.0f} s without: the stages added {loop['rollout_s']:.0f} s"
            if r["stages"]
            else f"    loop: batch lands -> champion serving {loop['total_s']:.0f} s"
        )
    lines.append("Quarantined objects:")
    for q in summary["quarantined"]:
        lines.append(f"  {q['key']}: {q['reason'][:160]}")
        lines.append(f"    report: {q['report']}")
    lines.append("Drift decisions:")
    for d in summary["drift"]:
        lines.append(f"  {d['window']}: {d['action']}: {'; '.join(d['reasons'] or [])[:300]}")
    lines.append("Reports:")
    lines += [f"  {uri}" for uri in summary["reports"]]
    lines.append("URLs:")
    lines += [f"  {name:17s} {url}" for name, url in summary["urls"].items()]
    lines.append("=" * 100)
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m devtools.demo`` (the usage line of the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m devtools.demo", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--exit", action="store_true", help="stop everything after the summary; exit 0 if the loop closed"
    )
    parser.add_argument("--home", type=Path, default=PROJECT_ROOT / ".demo", help="working directory (wiped at start)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    demo = Demo(home=args.home, log=lambda line: print(line, flush=True))
    stop_requested = False

    def on_signal(signum: int, frame: Any) -> None:
        nonlocal stop_requested
        if stop_requested:  # a second Ctrl-C while stopping: let the clean-up finish
            return
        stop_requested = True
        raise KeyboardInterrupt

    # Both, explicitly: a process started in the background inherits SIGINT as ignored.
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        demo.start()
        summary = demo.scenario()
        (demo.home / "summary.json").write_text(json.dumps(summary, indent=2))
        print(render(summary), flush=True)
        print(f"summary written to {demo.home / 'summary.json'}", flush=True)
        if args.exit:
            return 0 if summary["loop_closed"] else 1
        print("Everything stays up: open the URLs above. Ctrl-C stops it all.", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("stopping…", flush=True)
        return 0
    except (StackError, AirflowAPIError) as error:
        print(f"DEMO FAILED: {error}", file=sys.stderr, flush=True)
        return 1
    finally:
        demo.stop()
        if stop_requested:
            print("stopped", flush=True)


if __name__ == "__main__":
    sys.exit(main())
