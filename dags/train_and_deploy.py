"""
### Train and deploy

Retrains the model's XGBoost (binary, multiclass or regression, as its model file says) and promotes it
only when it earns it.

**Runs** when `ingest_new_data` curates a batch (the `curated_batches` Asset), every Monday 04:00 UTC,
by hand (the trigger form shows the Params below), or from `monitor_drift` (conf carries the reason,
the drift report URI and its decision). One run at a time.

1. **assemble_training_data**: curated batches in the window (ending at the newest event at or
   before this run's time, so no batch can push it) → train / validation / holdout (the newest
   rows), a data manifest (the window, each batch in or out and why, a content hash); a window that
   lost most of the previous training's rows fails (`CT_WINDOW_SHRINK_*`); only S3 URIs move on.
2. **train_challenger**: XGBoost `hist` with early stopping, on queue and pool `gpu`; `device="cuda"`
   when the worker sees a CUDA device, else `cpu` (the log says which and why). Logged to MLflow with
   the model (UBJ), its feature spec, signature, input example, data manifest, git commit, library
   versions and the reference sample for drift checks.
3. **evaluate_challenger**: challenger and champion on the SAME holdout (the task's metrics: ROC AUC /
   PR AUC / log loss / Brier / accuracy / F1 for binary, macro F1 / accuracy / log loss for multiclass,
   RMSE / MAE / R² for regression; per slice), paired bootstrap of the gate metric's gain (`CT_GATE_METRIC`).
4. **decide_promotion**: the gates (floor, not constant, beats champion, slices) → a decision record in
   the log and in MLflow, then one branch:
   - **register_challenger** → new model version aliased `challenger`, tagged with the decision, the
     data manifest and this run → **deploy_challenger** (the endpoint loads it beside the old model and
     swaps atomically) → **smoke_test** (golden set over HTTP equals offline predictions, p99 within
     budget, zero errors) → **promote_champion** (alias `champion` moves, the old one keeps
     `previous_champion`). With `CT_ROLLOUT=shadow`, `canary` or `shadow,canary` the challenger is
     loaded beside the champion without traffic, smoke-tested through `/admin/predict?variant=candidate`,
     then each stage runs **start_<stage>** (the desired deployment every replica follows) →
     **wait_for_<stage>_traffic** (deferred: `CT_ROLLOUT_MIN_REQUESTS` candidate-scored requests or
     `CT_ROLLOUT_MAX_MINUTES`) → **analyze_<stage>** (error rate, p99, PSI / KS, label agreement,
     realized metric on the same live traffic; the record in the log and in MLflow `rollout/`); a
     failing stage, or too little traffic (`CT_ROLLOUT_INSUFFICIENT_TRAFFIC=rollback`), rolls back.
     With `CT_APPROVAL=required`, **approve_promotion** (Airflow's HITL approval: Required Actions in
     the UI, or the REST API) shows the decision record and the rollout analysis before the alias
     moves (the challenger waits beside the champion meanwhile); a reject or no answer within
     `CT_APPROVAL_TIMEOUT_HOURS` rolls back.
     Deploy, smoke test or a stage fails → **rollback_deployment** puts the endpoint back
     on the champion, aliases unchanged, the run fails and an alert fires. With
     `CT_DEPLOYMENT_TARGET=none` the deploy steps skip and the champion alias moves directly;
   - **reject_challenger** → nothing registered, champion untouched, the run tagged rejected, an alert;
   - **report_dry_run** (Param `dry_run`) → the decision is recorded; nothing changes.

Re-running a run never makes a second model version.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, Param, TriggerRule, chain, dag, task

from include.continuous_training.assets import curated_batches_asset
from include.continuous_training.config import load_settings, task_settings
from include.continuous_training.errors import task_outcome
from include.continuous_training.features import TUNABLE_PARAMS
from include.continuous_training.links import MLFLOW_RUN_LINK_KEY, MODEL_CARD_LINK_KEY, persist_link
from include.continuous_training.model_files import ModelFile, model_doc, models_to_build
from include.continuous_training.notifications import alert_on_failure
from include.continuous_training.records import Deployment, Evaluation, TrainedModel, TrainingData
from include.continuous_training.rollout import rollout_stages
from include.continuous_training.sensors import WaitForRolloutTraffic

HYPERPARAMETER_SCHEMA = {
    name: {"type": "integer" if kind is int else "number"} for name, kind in TUNABLE_PARAMS.items()
}


def build_train_and_deploy(model_file: ModelFile) -> None:
    """This DAG for one model file."""
    settings = load_settings(model=model_file)
    curated_batches = curated_batches_asset(model_file, settings)
    stages = rollout_stages(settings)  # CT_ROLLOUT as the parsing process sees it (environment, model file)
    approval = settings.approval == "required"  # CT_APPROVAL, likewise
    held_back = (
        bool(stages) or approval
    )  # a challenger beside a champion takes no traffic until a stage or a person lets it

    @dag(
        dag_id=model_file.dag_id("train_and_deploy"),
        doc_md=model_doc(model_file, __doc__),
        schedule=AssetOrTimeSchedule(
            timetable=CronTriggerTimetable(model_file.schedules["train"], timezone="UTC"), assets=[curated_batches]
        ),
        start_date=datetime(2026, 11, 1, tzinfo=UTC),
        catchup=False,
        max_active_runs=1,
        tags=["continuous-training", "training", model_file.tag],
        params={
            "reason": Param("", type="string", maxLength=500, description="Why this run (shown in MLflow)."),
            "window_days": Param(
                None, type=["null", "integer"], minimum=1, maximum=3650, description="Training window; empty = default."
            ),
            "hyperparameters": Param(
                {},
                type="object",
                properties=HYPERPARAMETER_SCHEMA,
                additionalProperties=False,
                description='XGBoost overrides, e.g. {"max_depth": 8}.',
            ),
            "dry_run": Param(False, type="boolean", description="Decide and record; register and promote nothing."),
            "report_uri": Param(None, type=["null", "string"], description="Set by monitor_drift: the drift report."),
            "decision": Param(None, type=["null", "object"], description="Set by monitor_drift: its decision record."),
        },
        default_args={
            "owner": "ml-platform",
            "retries": 2,
            "retry_delay": timedelta(minutes=2),
            "on_failure_callback": alert_on_failure,
        },
    )
    def train_and_deploy() -> None:
        @task
        def assemble_training_data(**context: Any) -> TrainingData:
            """Curated batches in the window → split URIs and the data manifest.

            A scheduled tick on a fresh installation (nothing curated yet) is skipped; any other run
            without usable data fails at once (waiting and retrying does not make data appear).
            """
            from include.continuous_training.run_conf import check_run_conf
            from include.continuous_training.storage import s3_client_from_connection
            from include.continuous_training.training import NoCuratedData, NothingCuratedYet
            from include.continuous_training.training import assemble_training_data as assemble

            settings = task_settings(
                model_file
            )  # environment, then the model file, then Airflow Variables, then defaults
            with task_outcome():
                check_run_conf(context)
                s3 = s3_client_from_connection(settings.aws_conn_id)
                try:
                    return assemble(s3, settings, context["params"]["window_days"], context["dag_run"].run_after)
                except NoCuratedData as error:
                    if context["dag_run"].run_type == "scheduled":
                        raise NothingCuratedYet(f"{error} (scheduled tick before any data has arrived)") from None
                    raise

        @task(
            queue=settings.gpu_queue,
            pool=settings.gpu_pool,
            execution_timeout=timedelta(minutes=settings.training_timeout_minutes),
        )
        def train_challenger(data: TrainingData, **context: Any) -> TrainedModel:
            """XGBoost on cuda when visible, else cpu; everything logged to MLflow."""
            from include.continuous_training.storage import s3_client_from_connection
            from include.continuous_training.training import run_reason, train_challenger

            settings = task_settings(
                model_file
            )  # environment, then the model file, then Airflow Variables, then defaults
            s3 = s3_client_from_connection(settings.aws_conn_id)
            params = context["params"]
            reason = run_reason(params["reason"], context["dag_run"].run_type, params["report_uri"])
            with task_outcome():
                model = train_challenger(s3, settings, data, context["run_id"], params["hyperparameters"], reason)
            persist_link(context, MLFLOW_RUN_LINK_KEY, model["run_url"])  # the task's "MLflow run" button
            return model

        @task
        def evaluate_challenger(data: TrainingData, model: TrainedModel) -> Evaluation:
            """Challenger and champion on the same holdout."""
            from include.continuous_training.evaluation import evaluate_challenger as evaluate
            from include.continuous_training.storage import s3_client_from_connection

            settings = task_settings(
                model_file
            )  # environment, then the model file, then Airflow Variables, then defaults
            with task_outcome():
                return evaluate(s3_client_from_connection(settings.aws_conn_id), settings, data, model["model_uri"])

        @task.branch
        def decide_promotion(evaluation: Evaluation, model: TrainedModel, **context: Any) -> str:
            """Gates → decision record (logged here and in MLflow) → the branch to follow."""
            from include.continuous_training.evaluation import decide_promotion as decide
            from include.continuous_training.evaluation import log_decision

            settings = task_settings(
                model_file
            )  # environment, then the model file, then Airflow Variables, then defaults
            decision = decide(evaluation, settings, dry_run=context["params"]["dry_run"])
            print(decision.summary())
            log_decision(settings, model["run_id"], evaluation, decision)
            context["ti"].xcom_push(key="decision", value=decision.as_dict())
            if decision.dry_run:
                return "report_dry_run"
            return "register_challenger" if decision.promoted else "reject_challenger"

        @task
        def register_challenger(model: TrainedModel, data: TrainingData, **context: Any) -> str:
            """New model version aliased `challenger` (once per run), tagged with what justified it."""
            from include.continuous_training.evaluation import DecisionRecord
            from include.continuous_training.model_card import write_model_card
            from include.continuous_training.registry import register_challenger as register
            from include.continuous_training.registry import tracking_client
            from include.continuous_training.storage import read_json_uri, s3_client_from_connection

            settings = task_settings(
                model_file
            )  # environment, then the model file, then Airflow Variables, then defaults
            decision = DecisionRecord.from_dict(context["ti"].xcom_pull(task_ids="decide_promotion", key="decision"))
            with task_outcome():
                s3 = s3_client_from_connection(settings.aws_conn_id)
                manifest = read_json_uri(s3, settings, data["manifest_uri"])
                tags = {
                    "ct.dag_run_id": context["run_id"],
                    "ct.decision": decision.as_dict(),
                    "ct.data_manifest": manifest,
                    "ct.dataset_version": data["dataset_version"],
                }
                version = register(
                    tracking_client(settings),
                    settings,
                    model["run_id"],
                    model["model_id"],
                    tags,
                    who=context["run_id"],
                    why=decision.summary()[:1000],
                    record_uri=f"runs:/{model['run_id']}/evaluation/decision.json",
                )
                card = write_model_card(s3, settings, tracking_client(settings), version)
            print(f"model card: {card.headline} ({card.markdown_uri})")
            persist_link(context, MODEL_CARD_LINK_KEY, card.html_url)
            return version

        @task
        def deploy_challenger(version: str, **context: Any) -> Deployment:
            """Make the endpoint serve the challenger (loaded beside the old model, swapped atomically)."""
            from include.continuous_training.deployment import target_for
            from include.continuous_training.errors import NothingToDo
            from include.continuous_training.registry import CHAMPION, tracking_client, version_by_alias

            settings = task_settings(
                model_file
            )  # environment, then the model file, then Airflow Variables, then defaults
            with task_outcome():
                if settings.deployment_target == "none":
                    raise NothingToDo("CT_DEPLOYMENT_TARGET=none: promoting without deploying")
                champion = version_by_alias(tracking_client(settings), settings.model_name, CHAMPION)
                context["ti"].xcom_push(key="attempted", value=version)  # tells rollback there is something to undo
                target = target_for(settings)
                if held_back and champion is not None:  # beside the champion, no traffic until a stage / approval
                    generation = target.start_rollout(
                        version, "shadow", shadow_percent=0.0, reason="smoke test", updated_by=context["run_id"]
                    )
                    target.wait_converged(generation, timeout=180)
                else:  # direct, or the first model: nothing to roll out beside
                    target.deploy(version)  # unreachable: retried; refused: fails at once
            return Deployment(version=version, previous=str(champion.version) if champion else None)

        @task
        def smoke_test(deployment: Deployment, data: TrainingData) -> dict[str, Any]:
            """Golden set over HTTP: equal to offline predictions, p99 within budget, zero errors."""
            from include.continuous_training.deployment import SmokeTestFailed, run_smoke_test
            from include.continuous_training.storage import s3_client_from_connection

            settings = task_settings(
                model_file
            )  # environment, then the model file, then Airflow Variables, then defaults
            s3 = s3_client_from_connection(settings.aws_conn_id)
            with task_outcome():
                # through the authenticated /admin/predict, never logged: the golden set is not live traffic,
                # so it cannot dilute the drift window or a rollout's analysis
                variant = "candidate" if held_back and deployment["previous"] is not None else "champion"
                report = run_smoke_test(s3, settings, data, deployment["version"], variant=variant)
                print(f"smoke test of version {deployment['version']}: {report.reason()}")
                if not report.passed:
                    raise SmokeTestFailed(f"smoke test failed for version {deployment['version']}: {report.reason()}")
            return report.as_dict()

        @task(trigger_rule=TriggerRule.ONE_FAILED, retries=3, retry_delay=timedelta(seconds=20))
        def rollback_deployment(**context: Any) -> str | None:
            """Deploy or smoke test failed: endpoint back on the champion; the failed version loses `challenger`."""
            from include.continuous_training.deployment import rollback_to_champion
            from include.continuous_training.errors import NothingToDo
            from include.continuous_training.notifications import send_alert

            settings = task_settings(
                model_file
            )  # environment, then the model file, then Airflow Variables, then defaults
            attempted = context["ti"].xcom_pull(task_ids="deploy_challenger", key="attempted")
            with task_outcome():
                if attempted is None:
                    raise NothingToDo("nothing was deployed in this run: nothing to roll back")
                restored = rollback_to_champion(
                    settings,
                    rolled_back=str(attempted),
                    who=context["run_id"],
                    why="its deployment, smoke test, rollout or approval failed in this run",
                )
            served = f"endpoint back on champion version {restored}" if restored else "no champion: endpoint unloaded"
            send_alert(
                settings,
                f"Deployment rolled back ({context['run_id']})",
                f"{served}; version {attempted} is no longer the challenger",
            )
            return restored

        @task(trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS)
        def promote_champion(version: str, **context: Any) -> dict[str, str | None]:
            """Alias `champion` → this version; the previous one keeps `previous_champion`; after a
            rollout, every endpoint replica serves it as the champion."""
            import json

            from include.continuous_training.deployment import complete_rollout
            from include.continuous_training.registry import promote_champion as promote
            from include.continuous_training.registry import tracking_client

            settings = task_settings(
                model_file
            )  # environment, then the model file, then Airflow Variables, then defaults
            with task_outcome():
                client = tracking_client(settings)
                run = client.get_model_version(settings.model_name, version).run_id
                who, why, uri = context["run_id"], "passed every gate", f"runs:/{run}/evaluation/decision.json"
                if stages:
                    why = f"passed every gate and the rollout ({', '.join(stage.name for stage in stages)})"
                    uri = f"runs:/{run}/rollout/{stages[-1].slug}.json"
                if approval:
                    from include.continuous_training.approval import APPROVAL_TASK_ID, approval_record

                    record = approval_record(context["ti"].xcom_pull(task_ids=APPROVAL_TASK_ID)) or {}
                    print(f"approved: {record}")
                    client.set_model_version_tag(settings.model_name, version, "ct.approval", json.dumps(record))
                    who = f"{record.get('approved_by')} (approval in {context['run_id']})"
                    why += f"; approved: {record.get('comment') or 'no comment'}"
                aliases = promote(client, settings, version, who=who, why=why, record_uri=uri)
                if held_back and settings.deployment_target != "none":
                    complete_rollout(settings, version, updated_by=context["run_id"])
                from include.continuous_training.model_card import write_model_card
                from include.continuous_training.storage import s3_client_from_connection

                card = write_model_card(s3_client_from_connection(settings.aws_conn_id), settings, client, version)
            print(f"model card (with the promotion): {card.headline} ({card.markdown_uri})")
            persist_link(context, MODEL_CARD_LINK_KEY, card.html_url)
            return aliases

        @task
        def start_stage(deployment: Deployment, mode: str, percent: float, **context: Any) -> dict[str, Any]:
            """Move the rollout to this stage in the shared desired state; wait until the endpoint applied it.

            A first model has no champion to be compared with: the stages skip and it is promoted.
            """
            import time

            from include.continuous_training.deployment import target_for
            from include.continuous_training.errors import NothingToDo

            settings = task_settings(
                model_file
            )  # environment, then the model file, then Airflow Variables, then defaults
            version = deployment["version"]
            with task_outcome():
                if deployment["previous"] is None:
                    raise NothingToDo(f"version {version} is the first model: no champion to roll out beside")
                target = target_for(settings)
                shadow, canary = (percent, 0.0) if mode == "shadow" else (None, percent)
                generation = target.start_rollout(
                    version,
                    mode,
                    canary_percent=canary,
                    shadow_percent=shadow,
                    reason=f"{mode} {percent:g}%",
                    updated_by=context["run_id"],
                )
                target.wait_converged(generation, timeout=180)
            print(f"rollout of version {version}: {mode} {percent:g}% (generation {generation})")
            return {"started_at": time.time(), "generation": generation, "mode": mode, "percent": percent}

        @task
        def analyze_stage(
            version: str, mode: str, percent: float, started: dict[str, Any], traffic: dict[str, Any], **context: Any
        ) -> dict[str, Any]:
            """Candidate against champion on this stage's live traffic → the analysis record (log, MLflow);
            a failing stage (or too little traffic, unless `CT_ROLLOUT_INSUFFICIENT_TRAFFIC=proceed`) fails
            here and `rollback_deployment` takes the candidate out."""
            from include.continuous_training.rollout import Stage, judge_stage

            settings = task_settings(
                model_file
            )  # environment, then the model file, then Airflow Variables, then defaults
            with task_outcome():
                analysis = judge_stage(
                    settings,
                    version,
                    Stage(mode, percent),
                    float(started["started_at"]),
                    bool(traffic["deadline_passed"]),
                    context["run_id"],
                )
            return analysis

        @task
        def reject_challenger(model: TrainedModel, **context: Any) -> None:
            """Champion untouched; the run is tagged rejected and an alert says why."""
            from include.continuous_training.evaluation import DecisionRecord
            from include.continuous_training.notifications import send_alert
            from include.continuous_training.registry import tracking_client

            settings = task_settings(
                model_file
            )  # environment, then the model file, then Airflow Variables, then defaults
            decision = DecisionRecord.from_dict(context["ti"].xcom_pull(task_ids="decide_promotion", key="decision"))
            tracking_client(settings).set_tag(model["run_id"], "ct.rejected", "true")
            send_alert(settings, f"Challenger rejected ({context['run_id']})", "; ".join(decision.reasons))

        @task
        def report_dry_run(model: TrainedModel, **context: Any) -> None:
            """Dry run: the decision is in the log and in MLflow; nothing is registered or promoted."""
            from include.continuous_training.evaluation import DecisionRecord
            from include.continuous_training.registry import tracking_client

            settings = task_settings(
                model_file
            )  # environment, then the model file, then Airflow Variables, then defaults
            decision = DecisionRecord.from_dict(context["ti"].xcom_pull(task_ids="decide_promotion", key="decision"))
            tracking_client(settings).set_tag(model["run_id"], "ct.dry_run", "true")
            outcome = "promoted" if decision.verdict == "promote" else "rejected"
            print(f"dry run: the challenger would have been {outcome}; nothing changed")

        data = assemble_training_data()
        model = train_challenger(data)
        evaluation = evaluate_challenger(data, model)
        decision = decide_promotion(evaluation, model)
        version = register_challenger(model, data)
        chain(decision, [version, reject_challenger(model), report_dry_run(model)])
        deployment = deploy_challenger(version)
        smoke = smoke_test(deployment, data)
        rollout: list[Any] = []  # CT_ROLLOUT's stages: start, wait for traffic (deferred), analyze
        for stage in stages:
            started = start_stage.override(task_id=f"start_{stage.slug}")(deployment, stage.mode, stage.percent)
            traffic = WaitForRolloutTraffic(
                task_id=f"wait_for_{stage.slug}_traffic",
                stage_task_id=f"start_{stage.slug}",
                aws_conn_id=settings.aws_conn_id,
                model=model_file.name,
                min_requests=settings.rollout_min_requests,
                max_minutes=settings.rollout_max_minutes,
                poke_interval=settings.sensor_poke_seconds,
                # apache/airflow#72716: a trigger firing within seconds of the deferral can fail the resumed
                # task ("state changed externally"); the retry defers again on the same stage start
                retry_delay=timedelta(seconds=5),
            )
            verdict = analyze_stage.override(task_id=f"analyze_{stage.slug}")(
                version, stage.mode, stage.percent, started, traffic.output
            )
            chain(rollout[-1] if rollout else smoke, started, traffic, verdict)
            rollout += [started, traffic, verdict]
        gate: list[Any] = []
        if approval:  # a person answers in Airflow (Required Actions / HITL API); a reject fails it → rollback
            from include.continuous_training.approval import approval_task

            gate = [approval_task(settings, [f"analyze_{stage.slug}" for stage in stages])]
            chain(rollout[-1] if rollout else smoke, gate[0])
        chain((gate or rollout or [smoke])[-1], promote_champion(version))
        chain([deployment, smoke, *rollout, *gate], rollback_deployment())

    train_and_deploy()


for MODEL in models_to_build("train_and_deploy"):  # one DAG per model file (CT_MODELS_DIR)
    build_train_and_deploy(MODEL)
