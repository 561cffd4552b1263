"""airflow_settings.yaml validation: every mistake is named with its place in the file."""

from __future__ import annotations

import pytest

from include.continuous_training.airflow_settings import DEFAULT_FILE, SettingsFileError, load, parse


def test_the_repository_file_is_valid_and_declares_the_gpu_pool_and_s3_connection():
    spec = load(DEFAULT_FILE)
    assert [(p.name, p.slots) for p in spec.pools] == [("gpu", 1)]
    (conn,) = spec.connections
    assert (conn.conn_id, conn.conn_type, conn.password) == ("aws_ct", "aws", None)
    assert '"region_name": "us-east-1"' in (conn.extra or "")


def test_values_are_normalised():
    spec = parse(
        {
            "airflow": {
                "connections": [{"conn_id": "db", "conn_type": "postgres", "conn_port": 5432, "conn_extra": "{}"}],
                "variables": [
                    {"variable_name": "n", "variable_value": 3},
                    {"variable_name": "j", "variable_value": {"a": [1]}},
                    {"variable_name": "empty"},
                ],
            }
        }
    )
    assert spec.connections[0].port == 5432
    assert [(v.key, v.value) for v in spec.variables] == [("n", "3"), ("j", '{"a": [1]}'), ("empty", "")]
    assert parse(None).pools == ()


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (
            {"airflow": {"pools": [{"pool_name": "gpu", "pool_slots": 1}]}},
            "airflow.pools[0]: unknown key(s) ['pool_slots']",
        ),
        ({"airflow": {"pools": [{"pool_slot": 1}]}}, "airflow.pools[0]: pool_name is required"),
        ({"airflow": {"pools": [{"pool_name": "gpu"}]}}, "airflow.pools[0].pool_slot: a whole number"),
        ({"airflow": {"pools": [{"pool_name": "gpu", "pool_slot": "2"}]}}, "pool_slot: expected int, got str"),
        ({"airflow": {"pools": [{"pool_name": "gpu", "pool_slot": True}]}}, "pool_slot: expected int, got a boolean"),
        ({"airflow": {"pools": [{"pool_name": "gpu", "pool_slot": -5}]}}, "pool_slot: a whole number >= 0"),
        (
            {"airflow": {"pools": [{"pool_name": "a", "pool_slot": 1}, {"pool_name": "a", "pool_slot": 2}]}},
            "pool_name 'a' appears twice",
        ),
        (
            {"airflow": {"connections": [{"conn_id": "x"}]}},
            "airflow.connections[0]: conn_type (or conn_uri) is required",
        ),
        ({"airflow": {"connections": [{"conn_type": "aws"}]}}, "conn_id is required"),
        ({"airflow": {"connections": {"conn_id": "x"}}}, "airflow.connections: expected a list, got dict"),
        ({"airflow": {"connections": ["aws_ct"]}}, "airflow.connections[0]: expected a mapping, got str"),
        ({"airflow": {"variables": [{"variable_name": "v", "value": 1}]}}, "unknown key(s) ['value']"),
        ({"airflow": {"secrets": []}}, "unknown section(s) ['secrets']"),
        ({"connections": []}, "top level: expected a mapping with the single key 'airflow'"),
    ],
)
def test_each_mistake_is_reported_with_its_place(document, message):
    with pytest.raises(SettingsFileError) as raised:
        parse(document)
    assert message in str(raised.value)


def test_broken_yaml_names_the_file(tmp_path):
    path = tmp_path / "airflow_settings.yaml"
    path.write_text("airflow:\n  pools: [\n")
    with pytest.raises(SettingsFileError, match=r"airflow_settings\.yaml: not valid YAML"):
        load(path)
