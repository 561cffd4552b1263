"""Tables as users bring them: real dtypes, no id or event-time column, wrong settings, quarantine replays.

The table is the Palmer penguins (the ``palmerpenguins`` package ships it): real nulls in numeric and
text columns, a small real categorical vocabulary. Every test runs against the real S3 server (and, where
it trains, the real MLflow server) on loopback.
"""

from __future__ import annotations

import dataclasses
import io
import json
import threading
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from palmerpenguins import load_penguins

from include.continuous_training.config import DERIVED_EVENT_TIME_COLUMN, DERIVED_ID_COLUMN, Settings
from include.continuous_training.features import FeatureSpec
from include.continuous_training.ingestion import (
    AlreadyClaimed,
    BatchQuarantined,
    batch_id_for,
    derived_row_ids,
    find_new_objects,
    ingest_object,
    quarantined_objects,
    read_manifest,
    replay_object,
)
from include.continuous_training.storage import get_json, list_objects, read_json_uri, read_parquet_uri
from include.continuous_training.training import (
    ColumnNotInCuratedData,
    assemble_training_data,
    train_challenger,
)
from include.continuous_training.validation import SettingNotInSuite, build_suite_from_reference
from tests.integration.conftest import asset_events, keys_under, run_dag

NUMERIC = ("bill_length_mm", "flipper_length_mm", "body_mass_g", "heavy", "banded")
CATEGORICAL = ("island", "sex")
INGESTED_AT = datetime(2026, 12, 1, 12, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _isolated(empty_bucket, s3, settings):
    """Every test starts from an empty bucket, and leaves one: the penguins are not the other tests' table."""
    yield
    for ref in list(list_objects(s3, settings.s3_bucket, "")):
        if not ref.key.startswith("mlflow/"):
            s3.delete_object(Bucket=settings.s3_bucket, Key=ref.key)


def penguins(event_time: str = "aware") -> pd.DataFrame:
    """The penguins, shuffled (so every time split holds both classes), with one column per common dtype."""
    raw = load_penguins().sample(frac=1.0, random_state=7).reset_index(drop=True)
    times = pd.Timestamp("2026-10-01", tz="UTC") + pd.to_timedelta(np.arange(len(raw)) * 3, unit="h")
    event_times = {"aware": times, "naive": times.tz_localize(None), "date": times.strftime("%Y-%m-%d")}
    return pd.DataFrame(
        {
            "penguin_id": np.arange(len(raw)) + 1000,
            "observed_at": event_times[event_time],  # tz-aware, naive, or dates as text ("2026-11-02")
            "is_adelie": (raw["species"] == "Adelie").astype(int),
            "island": raw["island"].astype("category"),  # a pandas categorical
            "sex": raw["sex"].astype(pd.ArrowDtype(pa.dictionary(pa.int32(), pa.string()))),  # Arrow dictionary, NA
            "bill_length_mm": raw["bill_length_mm"],  # float with NaN
            "flipper_length_mm": raw["flipper_length_mm"].astype("Int64"),  # nullable int with NA
            "body_mass_g": raw["body_mass_g"].astype("Int64"),
            "heavy": (raw["body_mass_g"] > 4000).astype("boolean").mask(raw["body_mass_g"].isna()),  # boolean + NA
            "banded": raw["bill_depth_mm"] > 17,  # plain bool
            "year": raw["year"],  # not a feature: passes through
            "tagged_at_local": times.tz_convert("Europe/Oslo"),  # a tz-aware datetime, not a feature
            "measured_on": times.strftime("%Y-%m-%d"),  # dates as text, not a feature
        }
    )


def table_settings(settings: Settings, tmp_path: Path, reference: pd.DataFrame, **overrides: Any) -> Settings:
    """Settings for the penguin table, with a suite built from ``reference`` and saved under ``tmp_path``."""
    chosen: dict[str, Any] = {
        "label_column": "is_adelie",
        "id_column": "penguin_id",
        "timestamp_column": "observed_at",
        "numeric_columns": NUMERIC,
        "categorical_columns": CATEGORICAL,
        "slice_column": "island",
        "training_window_days": 120,
    }
    columns = dataclasses.replace(settings, **{**chosen, **overrides})
    suite_path = tmp_path / f"penguins-{uuid.uuid4().hex[:6]}.json"
    suite_path.write_text(json.dumps(build_suite_from_reference(reference, columns, name="penguins"), default=str))
    return dataclasses.replace(columns, expectation_suite_path=suite_path)


def as_bytes(frame: pd.DataFrame, file_format: str) -> bytes:
    buffer = io.BytesIO()
    if file_format == "parquet":
        frame.to_parquet(buffer, index=False)
    else:
        frame.to_csv(buffer, index=False)
    return buffer.getvalue()


def land(s3: Any, settings: Settings, name: str, data: bytes) -> str:
    key = settings.landing_prefix + name
    s3.put_object(Bucket=settings.s3_bucket, Key=key, Body=data)
    return key


def stored_json(s3: Any, bucket: str, key: str) -> dict[str, Any]:
    document = get_json(s3, bucket, key)
    assert isinstance(document, dict), f"s3://{bucket}/{key} is missing"
    return document


def ingest_all(s3: Any, settings: Settings, at: datetime = INGESTED_AT) -> list[Any]:
    return [
        ingest_object(s3, settings, ref, "test-your-table", ingested_at=at) for ref in find_new_objects(s3, settings)
    ]


@pytest.mark.parametrize("event_time", ["aware", "naive", "date"])
def test_every_common_dtype_round_trips_from_parquet_and_csv_into_a_trained_model(s3, settings, tmp_path, event_time):
    frame = penguins(event_time)
    table = table_settings(settings, tmp_path, frame, mlflow_experiment=f"penguins-{uuid.uuid4().hex[:8]}")
    land(s3, table, "penguins.parquet", as_bytes(frame, "parquet"))
    land(s3, table, "penguins.csv", as_bytes(frame, "csv"))

    results = ingest_all(s3, table)

    assert [(r.source.key.rsplit("/", 1)[-1], r.status, r.bad_rows, r.good_rows) for r in results] == [
        ("penguins.csv", "ingested", 0, len(frame)),
        ("penguins.parquet", "ingested", 0, len(frame)),
    ], [r.reason for r in results]
    assert keys_under(s3, table.s3_bucket, table.quarantine_prefix) == []
    for result in results:
        assert result.curated_uri is not None
        curated = read_parquet_uri(s3, table, result.curated_uri)
        assert str(curated["observed_at"].dtype).startswith("datetime64"), curated.dtypes
        assert curated["heavy"].dtype == "float64"  # booleans are numeric 0/1 features
        assert curated["heavy"].isna().sum() == frame["heavy"].isna().sum()

    data = assemble_training_data(s3, table, not_after=INGESTED_AT)
    uris = {"train": data["train_uri"], "validation": data["validation_uri"], "holdout": data["holdout_uri"]}
    splits = {name: read_parquet_uri(s3, table, uri) for name, uri in uris.items()}
    rows = pd.concat(splits.values(), ignore_index=True)
    assert len(rows) == len(frame)  # the same rows from Parquet and CSV: deduplicated on penguin_id
    assert rows["penguin_id"].is_unique
    spec = FeatureSpec.from_frame(splits["train"], table)
    assert spec.categories == {"island": ["Biscoe", "Dream", "Torgersen"], "sex": ["female", "male"]}
    matrix = spec.encoded_frame(rows)
    expected_nulls = frame.set_index("penguin_id").loc[rows["penguin_id"], list(NUMERIC + CATEGORICAL)].isna().sum()
    assert matrix.isna().sum().to_dict() == expected_nulls.to_dict()
    assert set(matrix["heavy"].dropna()) == {0.0, 1.0}
    assert set(matrix["banded"]) == {0.0, 1.0}
    assert sorted(rows["observed_at"]) == rows["observed_at"].tolist()  # the time split ran on parsed times

    model = train_challenger(s3, table, data, dag_run_id=f"penguins-{event_time}")
    assert model["best_iteration"] >= 0
    assert model["run_id"]


def test_a_table_without_id_or_event_time_gets_stable_ids_and_splits_by_ingest_batch(s3, settings, tmp_path):
    frame = penguins().drop(columns=["penguin_id", "observed_at"])
    table = table_settings(settings, tmp_path, frame, id_column="", timestamp_column="")
    assert (table.row_id_column, table.event_time_column) == (DERIVED_ID_COLUMN, DERIVED_EVENT_TIME_COLUMN)
    older, newer = frame.iloc[:200], frame.iloc[200:]
    land(s3, table, "a-older.csv", as_bytes(older, "csv"))
    [first] = ingest_all(s3, table, at=INGESTED_AT)
    land(s3, table, "b-newer.parquet", as_bytes(newer, "parquet"))
    land(s3, table, "c-twin.parquet", as_bytes(newer, "parquet"))  # the same bytes under another key
    second, twin = ingest_all(s3, table, at=INGESTED_AT + timedelta(hours=1))

    curated = {r.source.key: read_parquet_uri(s3, table, str(r.curated_uri)) for r in (first, second, twin)}
    ids = {key: batch[DERIVED_ID_COLUMN].tolist() for key, batch in curated.items()}
    assert ids[first.source.key] == derived_row_ids(first.source, range(200))  # same object version, same ids
    assert not set(ids[second.source.key]) & set(ids[twin.source.key])  # two objects never collide
    assert set(curated[first.source.key][DERIVED_EVENT_TIME_COLUMN]) == {pd.Timestamp("2026-12-01 12:00")}

    data = assemble_training_data(s3, table, not_after=INGESTED_AT + timedelta(hours=2))
    holdout = read_parquet_uri(s3, table, data["holdout_uri"])
    assert set(holdout[DERIVED_EVENT_TIME_COLUMN]) == {pd.Timestamp("2026-12-01 13:00")}  # newest ingested batch
    manifest = read_json_uri(s3, table, data["manifest_uri"])
    assert manifest["split"]["order"] == [DERIVED_EVENT_TIME_COLUMN, DERIVED_ID_COLUMN]
    assert sum(manifest["rows"].values()) == len(frame) + len(newer)  # the twin's rows are rows of their own


def test_a_setting_the_suite_does_not_know_fails_ingest_before_any_object_is_read(s3, settings, tmp_path):
    frame = penguins()
    table = table_settings(settings, tmp_path, frame)
    wrong = dataclasses.replace(table, categorical_columns=(*CATEGORICAL, "species"))
    land(s3, wrong, "penguins.csv", as_bytes(frame, "csv"))
    [ref] = find_new_objects(s3, wrong)

    with pytest.raises(SettingNotInSuite, match=r"CT_CATEGORICAL_COLUMNS names 'species'"):
        ingest_object(s3, wrong, ref, "test-wrong-settings")

    assert keys_under(s3, wrong.s3_bucket, wrong.manifest_prefix) == []  # not even claimed
    assert keys_under(s3, wrong.s3_bucket, wrong.quarantine_prefix) == []
    assert keys_under(s3, wrong.s3_bucket, wrong.curated_prefix) == []


def test_a_configured_column_absent_from_curated_data_fails_assembly_naming_the_variable(s3, settings, tmp_path):
    frame = penguins()
    table = table_settings(settings, tmp_path, frame)
    land(s3, table, "penguins.parquet", as_bytes(frame, "parquet"))
    ingest_all(s3, table)
    wrong = dataclasses.replace(table, categorical_columns=(*CATEGORICAL, "species"))

    with pytest.raises(ColumnNotInCuratedData, match=r"'species' \(from CT_CATEGORICAL_COLUMNS\)"):
        assemble_training_data(s3, wrong, not_after=INGESTED_AT)
    assert keys_under(s3, wrong.s3_bucket, wrong.training_prefix) == []


def strict_then_fixed_suites(settings: Settings, tmp_path: Path, frame: pd.DataFrame) -> tuple[Settings, Settings]:
    """Suite v1 knows only two islands (a mistake: the reference was a sample); v2, built from every row, all three."""
    v2 = table_settings(settings, tmp_path, frame)
    suite = json.loads(v2.expectation_suite_path.read_text())
    v1_suite = json.loads(json.dumps(suite))
    v1_suite["meta"]["version"] = "1"
    for expectation in v1_suite["expectations"]:
        if expectation["type"] == "expect_column_values_to_be_in_set" and expectation["kwargs"]["column"] == "island":
            expectation["kwargs"]["value_set"] = ["Dream", "Torgersen"]
    suite["meta"]["version"] = "2"
    v1_path, v2_path = tmp_path / "suite-v1.json", tmp_path / "suite-v2.json"
    v1_path.write_text(json.dumps(v1_suite))
    v2_path.write_text(json.dumps(suite))
    return (
        dataclasses.replace(v2, expectation_suite_path=v1_path),
        dataclasses.replace(v2, expectation_suite_path=v2_path),
    )


def table_environment(table: Settings) -> dict[str, str]:
    """The penguin table's settings as the environment variables a task or a CLI reads."""
    return {
        "CT_LABEL_COLUMN": table.label_column,
        "CT_ID_COLUMN": table.id_column,
        "CT_TIMESTAMP_COLUMN": table.timestamp_column,
        "CT_NUMERIC_COLUMNS": ",".join(table.numeric_columns),
        "CT_CATEGORICAL_COLUMNS": ",".join(table.categorical_columns),
        "CT_SLICE_COLUMN": table.slice_column,
        "CT_EXPECTATION_SUITE": str(table.expectation_suite_path),
    }


def test_two_replays_at_once_curate_a_quarantined_object_once_and_keep_both_outcomes(s3, settings, tmp_path):
    frame = penguins()
    v1, v2 = strict_then_fixed_suites(settings, tmp_path, frame)
    key = land(s3, v1, "penguins.csv", as_bytes(frame, "csv"))
    [ref] = find_new_objects(s3, v1)
    with pytest.raises(BatchQuarantined):
        ingest_object(s3, v1, ref, "run-v1", ingested_at=INGESTED_AT)
    assert find_new_objects(s3, v2) == []  # the sensor never offers it again
    assert quarantined_objects(s3, v2, [key]) == [ref]

    outcomes: list[Any] = []
    start = threading.Barrier(2)

    def replay(run_id: str) -> None:
        start.wait()
        try:
            outcomes.append(replay_object(s3, v2, ref, run_id, ingested_at=INGESTED_AT))
        except AlreadyClaimed as error:
            outcomes.append(error)

    threads = [threading.Thread(target=replay, args=(f"replay-{i}",)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    curated = [o for o in outcomes if not isinstance(o, AlreadyClaimed)]
    assert len(outcomes) == 2
    assert len(curated) == 1, outcomes
    assert curated[0].status == "ingested"
    assert curated[0].good_rows == len(frame)
    assert len(keys_under(s3, v2.s3_bucket, v2.curated_prefix)) == 1
    again = replay_object(s3, v2, ref, "replay-again")  # the same suite again: the recorded outcome, no new write
    assert again.curated_uri == curated[0].curated_uri

    entry = stored_json(s3, v2.s3_bucket, f"{v2.manifest_prefix}done/{batch_id_for(ref)}.json")
    assert (entry["status"], entry["suite_version"]) == ("ingested", "2")
    assert [(a["status"], a["suite_version"]) for a in entry["attempts"]] == [("quarantined", "1")]
    assert (
        stored_json(s3, v2.s3_bucket, f"{v2.quarantine_prefix}{batch_id_for(ref)}/report.json")["suite"]["version"]
        == "1"
    )


def test_the_ingest_dag_replays_quarantined_keys_given_as_a_param(
    dagbag, airflow_db, s3, settings, tmp_path, monkeypatch
):
    frame = penguins()
    v1, v2 = strict_then_fixed_suites(settings, tmp_path, frame)
    for name, value in table_environment(v1).items():
        monkeypatch.setenv(name, value)
    key = land(s3, v1, "penguins.csv", as_bytes(frame, "csv"))
    assert run_dag(dagbag, "ingest_new_data").states_of("ingest_batch") == {0: "failed"}  # quarantined under v1
    events_before = len(asset_events("curated_batches"))

    monkeypatch.setenv("CT_EXPECTATION_SUITE", str(v2.expectation_suite_path))  # the fixed suite is deployed
    outcome = run_dag(dagbag, "ingest_new_data", run_conf={"replay_keys": [key]})

    assert outcome.states_of("ingest_batch") == {0: "success"}, outcome.task_states
    [entry] = read_manifest(s3, v2)
    assert (entry.status, entry.good_rows) == ("ingested", len(frame))
    assert asset_events("curated_batches")[events_before:] == [entry.asset_extra()]
    raw = stored_json(s3, v2.s3_bucket, f"{v2.manifest_prefix}done/{entry.batch_id}.json")
    assert [(a["status"], a["suite_version"]) for a in raw["attempts"]] == [("quarantined", "1")]
    assert raw["suite_version"] == "2"
    assert len(list(list_objects(s3, v2.s3_bucket, v2.curated_prefix))) == 1


def test_the_replay_command_curates_every_quarantined_object_under_the_fixed_suite(
    s3, settings, tmp_path, monkeypatch, capsys
):
    from include.continuous_training.ingestion import main

    frame = penguins()
    v1, v2 = strict_then_fixed_suites(settings, tmp_path, frame)
    for name, value in table_environment(v2).items():
        monkeypatch.setenv(name, value)
    key = land(s3, v1, "penguins.parquet", as_bytes(frame, "parquet"))
    with pytest.raises(BatchQuarantined):
        ingest_all(s3, v1)

    assert main(["replay", "--key", "landing/never-landed.csv"]) == 2
    assert "replay_keys ['landing/never-landed.csv']: no quarantined object" in capsys.readouterr().out
    assert main(["replay", "--all-quarantined"]) == 0

    printed = capsys.readouterr().out
    assert f"{key}: curated {len(frame)} rows" in printed
    assert "replayed 1 object(s): 1 curated, 0 not" in printed
    [entry] = read_manifest(s3, v2)
    assert entry.status == "ingested"
    assert quarantined_objects(s3, v2) == []
