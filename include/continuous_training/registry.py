"""The MLflow model registry, through aliases (never the deprecated stages).

- ``champion``: the version that serves (or, with no deployment target, the best gated model).
- ``challenger``: the newest version that passed every gate.
- ``previous_champion``: what ``champion`` pointed at before the last promotion (the rollback target).

Models are loaded from XGBoost's own UBJ file plus ``feature_spec.json``: nothing downloaded is
ever unpickled.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from include.continuous_training.config import Settings

if TYPE_CHECKING:
    import xgboost as xgb
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

    from include.continuous_training.features import FeatureSpec

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
PREVIOUS_CHAMPION = "previous_champion"
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # progress bars flood task logs


@dataclass(frozen=True)
class LoadedModel:
    booster: xgb.Booster
    spec: FeatureSpec
    uri: str


def tracking_client(settings: Settings) -> MlflowClient:
    import mlflow

    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    return mlflow.MlflowClient(tracking_uri=settings.mlflow_tracking_uri)


def version_by_alias(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    """The version an alias points at, or None when the model or the alias does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as error:
        if error.error_code in {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"}:
            return None
        raise


def load_model(model_uri: str) -> LoadedModel:
    """Download a logged model and load ``model.ubj`` + ``feature_spec.json`` (no pickle)."""
    import mlflow
    import xgboost as xgb

    from include.continuous_training.features import FEATURE_SPEC_FILE, FeatureSpec

    with tempfile.TemporaryDirectory() as tmp:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=tmp))
        model_files = list(local.glob("*.ubj")) + list(local.glob("*.json"))
        model_file = next((p for p in model_files if p.name.startswith("model.")), None)
        spec_file = local / "extra_files" / FEATURE_SPEC_FILE
        if model_file is None or not spec_file.exists():
            raise FileNotFoundError(f"{model_uri}: expected model.ubj and extra_files/{FEATURE_SPEC_FILE}")
        booster = xgb.Booster()
        booster.load_model(str(model_file))
        spec = FeatureSpec.from_dict(json.loads(spec_file.read_text()))
    return LoadedModel(booster=booster, spec=spec, uri=model_uri)


def find_version_for_run(client: MlflowClient, name: str, run_id: str) -> ModelVersion | None:
    versions = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    return max(versions, key=lambda v: int(v.version)) if versions else None


def register_challenger(
    client: MlflowClient,
    settings: Settings,
    run_id: str,
    model_id: str,
    tags: dict[str, Any],
    who: str | None = None,
    why: str = "passed every gate",
    record_uri: str | None = None,
) -> str:
    """Register the run's logged model once (a re-run finds the same version); alias it ``challenger``.

    Every alias move is appended to the audit trail (:mod:`~include.continuous_training.audit`) with
    ``who`` (a DAG run id; default: the OS user), ``why`` and the URI of the record behind it.
    """
    from mlflow.exceptions import MlflowException

    name = settings.model_name
    try:
        client.create_registered_model(name, description="Tabular XGBoost model kept fresh by train_and_deploy")
    except MlflowException as error:
        if error.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    version = find_version_for_run(client, name, run_id)
    if version is None:
        string_tags = {
            k: v if isinstance(v, str) else json.dumps(v, sort_keys=True, default=str) for k, v in tags.items()
        }
        version = client.create_model_version(
            name, f"models:/{model_id}", run_id=run_id, tags=_truncate(string_tags), model_id=model_id
        )
        log.info("registered %s version %s from run %s", name, version.version, run_id)
    else:
        log.info("run %s is already %s version %s: not registering again", run_id, name, version.version)
    before = version_by_alias(client, name, CHALLENGER)
    client.set_registered_model_alias(name, CHALLENGER, version.version)
    if before is None or str(before.version) != str(version.version):
        _audit(settings, CHALLENGER, before, str(version.version), who, why, record_uri)
    return str(version.version)


def _audit(
    settings: Settings,
    alias: str,
    before: ModelVersion | str | None,
    after: str | None,
    who: str | None,
    why: str,
    record_uri: str | None,
) -> None:
    from include.continuous_training.audit import record_alias_move

    previous = before if before is None or isinstance(before, str) else str(before.version)
    record_alias_move(settings, alias, previous, after, who, why, record_uri)


def _truncate(tags: dict[str, str], limit: int = 5000) -> dict[str, str]:
    """MLflow rejects tag values over its limit; keep the head and say it was cut."""
    return {k: v if len(v) <= limit else v[: limit - 20] + "…[truncated]" for k, v in tags.items()}


def promote_champion(
    client: MlflowClient,
    settings: Settings,
    version: str,
    who: str | None = None,
    why: str = "promoted",
    record_uri: str | None = None,
) -> dict[str, str | None]:
    """Move ``champion`` to ``version``; the one it leaves keeps ``previous_champion``. Idempotent.

    Both moves go to the audit trail. A retry after a crash between the alias move and its audit
    event finds the champion already moved and writes the missing event (the trail never lacks the
    move that made the current champion).
    """
    name = settings.model_name
    current = version_by_alias(client, name, CHAMPION)
    previous = str(current.version) if current is not None else None
    if previous == version:
        log.info("%s version %s is already the champion", name, version)
        kept = version_by_alias(client, name, PREVIOUS_CHAMPION)
        _audit_if_missing(settings, version, str(kept.version) if kept else None, who, why, record_uri)
        return {"champion": version, "previous_champion": str(kept.version) if kept else None}
    if previous is not None:
        before = version_by_alias(client, name, PREVIOUS_CHAMPION)
        client.set_registered_model_alias(name, PREVIOUS_CHAMPION, previous)
        _audit(settings, PREVIOUS_CHAMPION, before, previous, who, f"version {version} became the champion", record_uri)
    client.set_registered_model_alias(name, CHAMPION, version)
    client.set_model_version_tag(name, version, "ct.promoted", "true")
    _audit(settings, CHAMPION, previous, version, who, why, record_uri)
    log.info("%s champion: version %s (was %s)", name, version, previous)
    return {"champion": version, "previous_champion": previous}


def _audit_if_missing(
    settings: Settings, version: str, previous: str | None, who: str | None, why: str, record_uri: str | None
) -> None:
    from include.continuous_training.audit import last_move
    from include.continuous_training.storage import s3_client_from_connection

    last = last_move(s3_client_from_connection(settings.aws_conn_id), settings, CHAMPION)
    if last is None or last.to_version != version:
        _audit(settings, CHAMPION, previous, version, who, why + " (recorded on a retry)", record_uri)


def retire_challenger(
    client: MlflowClient,
    settings: Settings,
    version: str,
    who: str | None = None,
    why: str = "rolled back",
    record_uri: str | None = None,
) -> None:
    """A version whose rollout failed: ``challenger`` stops pointing at it; it is tagged ``ct.rolled_back``."""
    name = settings.model_name
    current = version_by_alias(client, name, CHALLENGER)
    if current is not None and str(current.version) == version:
        client.delete_registered_model_alias(name, CHALLENGER)
        _audit(settings, CHALLENGER, version, None, who, why, record_uri)
    client.set_model_version_tag(name, version, "ct.rolled_back", "true")
    log.info("%s version %s rolled back: alias %s cleared", name, version, CHALLENGER)
