"""The endpoint's column-wise batch encoder against its record-by-record one, and the bulk metric updates.

A batch is checked and encoded a column at a time (``encode_columns``) for speed; the per-record
path (``encode_records_by_row``) is what words the errors and what small requests take. They must
agree bit for bit on every valid batch, mark the same records, and refuse the same batches with the
same messages.
"""

from __future__ import annotations

import copy
import json
import math
import uuid

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Histogram, Summary

from devtools.datasets import BatchSpec, generate_batch
from devtools.public_tables import load_table
from include.continuous_training.config import load_settings
from include.continuous_training.features import FeatureSpec
from include.continuous_training.serving.app import (
    UNKNOWN_CATEGORIES_FIELD,
    encode_columns,
    encode_records,
    encode_records_by_row,
    observe_many,
    prediction_ids,
)
from include.continuous_training.serving.model_store import ServedModel
from include.continuous_training.validation import build_suite_from_reference, nullable_features
from tests.unit.test_nullable_features import PENGUIN_ENV


def served(spec: FeatureSpec) -> ServedModel:
    lookups = {name: {value: i for i, value in enumerate(values)} for name, values in spec.categories.items()}
    return ServedModel("1", None, spec, None, 0.0, lookups)  # type: ignore[arg-type]  # no booster: encoding only


def records_of(frame, columns) -> list[dict]:
    """Rows as the endpoint receives them: plain JSON values (ints stay ints, missing values are null)."""

    def plain(value):
        value = value.item() if hasattr(value, "item") else value
        return None if isinstance(value, float) and math.isnan(value) else value

    return [{k: plain(v) for k, v in row.items()} for row in frame[columns].to_dict(orient="records")]


@pytest.fixture(scope="module")
def transactions():
    settings = load_settings({})
    frame = generate_batch(BatchSpec(rows=400, seed=11))
    spec = FeatureSpec.from_frame(frame, settings)
    return frame, spec, records_of(frame, [*settings.feature_columns, settings.id_column])


@pytest.fixture(scope="module")
def penguins(tmp_path_factory):
    settings = load_settings(PENGUIN_ENV)
    table = load_table("penguins")
    suite = tmp_path_factory.mktemp("suite") / "penguins.json"
    suite.write_text(json.dumps(build_suite_from_reference(table, settings, name="penguins")))
    settings = load_settings({**PENGUIN_ENV, "CT_EXPECTATION_SUITE": str(suite)})
    # Trained on part of the islands and years: the rest are unknown categories at the endpoint.
    spec = FeatureSpec.from_frame(table[table["island"] != "Torgersen"], settings, nullable=nullable_features(settings))
    return table, spec, records_of(table, list(settings.feature_columns))


def both(records: list, model: ServedModel):
    """(column-wise result, per-record result), each on its own copy of the records."""
    by_columns, by_rows = copy.deepcopy(records), copy.deepcopy(records)
    return (encode_records(by_columns, model), by_columns), (encode_records_by_row(by_rows, model), by_rows)


def assert_same(records: list, model: ServedModel) -> np.ndarray:
    assert encode_columns(copy.deepcopy(records), model) is not None, "the batch took the per-record path"
    ((matrix, errors), marked), ((expected, expected_errors), expected_marked) = both(records, model)
    assert errors == expected_errors == []
    assert matrix.dtype == expected.dtype == np.float32
    assert matrix.tobytes() == expected.tobytes()  # bit for bit, NaN included
    assert marked == expected_marked  # the same records name the same unknown features
    return matrix


def test_real_transactions_encode_bit_for_bit_alike_and_as_training_does(transactions):
    frame, spec, records = transactions
    model = served(spec)
    matrix = assert_same(records, model)
    assert matrix.tobytes() == spec.matrix(frame).tobytes()  # the training encoding of the same rows


def test_ints_floats_unknown_categories_and_nulls_encode_alike(penguins, transactions):
    _, spec, records = penguins
    model = served(spec)
    assert any(value is None for record in records for value in record.values())  # missing values
    assert {type(record["year"]) for record in records} == {int}
    assert any(record["island"] == "Torgersen" for record in records)  # never seen in training
    matrix = assert_same(records, model)
    assert np.isnan(matrix).any()
    marked = copy.deepcopy(records)
    encode_records(marked, model)
    assert {r.get(UNKNOWN_CATEGORIES_FIELD) for r in marked} == {None, "island"}

    _, spec, records = transactions
    model = served(spec)
    mixed = copy.deepcopy(records[:50])
    for i, record in enumerate(mixed):
        record["hour_of_day"] = int(record["hour_of_day"])  # ints where floats are usual, and back
        record["amount"] = float(round(record["amount"])) if i % 2 else round(record["amount"])
        if i % 7 == 0:
            record["channel"] = "carrier pigeon"
        if i % 11 == 0:
            record["country"] = "Atlantis"
        if i % 5 == 0:
            record["transactions_last_24h"] = 2**53 + 1  # ints float64 cannot hold exactly
        if i % 13 == 0:
            record["amount"] = 18446744073709551615  # the largest integer orjson gives as an int
    assert_same(mixed, model)
    for one in ([mixed[0]], [mixed[7]]):  # a single record, were it encoded column-wise, encodes alike
        encoded = encode_columns(copy.deepcopy(one), model)
        assert encoded is not None
        assert encoded[0].tobytes() == encode_records_by_row(copy.deepcopy(one), model)[0].tobytes()


@pytest.mark.parametrize(
    "break_it",
    [
        pytest.param(lambda r: r.pop("amount"), id="field absent"),
        pytest.param(lambda r: r.update(amount="12.5"), id="string for a number"),
        pytest.param(lambda r: r.update(amount=True), id="bool for a number"),
        pytest.param(lambda r: r.update(amount=None), id="null where not nullable"),
        pytest.param(lambda r: r.update(amount=math.nan), id="NaN"),
        pytest.param(lambda r: r.update(card_age_days=-math.inf), id="infinity"),
        pytest.param(lambda r: r.update(amount=10**400), id="int beyond float64"),
        pytest.param(lambda r: r.update(channel=3), id="number for a category"),
        pytest.param(lambda r: r.update(channel=None), id="null category where not nullable"),
        pytest.param(lambda r: r.update(country=["NL"]), id="list for a category"),
        pytest.param(lambda r: r.update(channel={"web": 1}), id="object for a category"),
    ],
)
def test_a_batch_with_a_bad_field_gets_the_per_record_messages(transactions, break_it):
    _, spec, records = transactions
    model = served(spec)
    batch = copy.deepcopy(records[:30])
    for i in (3, 17):
        break_it(batch[i])
    assert encode_columns(copy.deepcopy(batch), model) is None
    try:
        expected = encode_records_by_row(copy.deepcopy(batch), model)[1]
    except OverflowError:  # today's checks cannot word an int beyond float64 (JSON never gives one)
        with pytest.raises(OverflowError):
            encode_records(copy.deepcopy(batch), model)
        return
    errors = encode_records(copy.deepcopy(batch), model)[1]
    assert errors == expected
    assert [e["loc"][0] for e in errors] == [3, 17]  # named by record index and field


def test_records_that_are_not_objects_and_many_errors_are_reported_as_before(transactions):
    _, spec, records = transactions
    model = served(spec)
    batch = [*copy.deepcopy(records[:5]), [1, 2], "text", *copy.deepcopy(records[5:8])]
    assert encode_records(batch, model)[1] == encode_records_by_row(copy.deepcopy(batch), model)[1]
    assert [e["loc"] for e in encode_records(batch, model)[1]] == [[5], [6]]
    hopeless: list[dict] = [{} for _ in range(50)]  # every field of every record missing: cut after 100 errors
    errors = encode_records(hopeless, model)[1]
    assert errors == encode_records_by_row([{} for _ in range(50)], model)[1]
    assert 100 < len(errors) < 100 + len(spec.feature_names) + 1


def exposition(registry: CollectorRegistry) -> dict:
    """Every sample but the creation times."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for m in registry.collect()
        for s in m.samples
        if not s.name.endswith("_created")
    }


def test_observe_many_counts_like_one_observation_per_value():
    values = [0.0, 0.05, 0.050001, 0.1, 0.5, 0.999, 1.0, 1.5, -0.25, 0.05, 0.75, 0.125]  # on and off bounds
    buckets = tuple(i / 20 for i in range(1, 21))
    one, many = CollectorRegistry(), CollectorRegistry()
    single = Histogram("s", "s", buckets=buckets, registry=one)
    bulk = Histogram("s", "s", buckets=buckets, registry=many)
    labelled_one = Summary("v", "v", ["variant"], registry=one).labels("candidate")
    labelled_many = Summary("v", "v", ["variant"], registry=many).labels("candidate")
    for value in values:
        single.observe(value)
        labelled_one.observe(value)
    observe_many(bulk, values)
    observe_many(labelled_many, values)
    assert exposition(many) == exposition(one)
    assert exposition(many)[("s_bucket", (("le", "0.05"),))] == 4  # 0.0, 0.05 twice, -0.25: "le" is <=
    observe_many(bulk, [math.nan] * 5)  # NaN falls in no bucket, as observe() puts it
    for _ in range(5):
        single.observe(math.nan)
    assert {k: v for k, v in exposition(many).items() if k[0] != "s_sum"} == {
        k: v for k, v in exposition(one).items() if k[0] != "s_sum"
    }


def test_prediction_ids_are_fresh_uuid4_hex():
    for n in (1, 3, 100):
        ids = prediction_ids(n)
        assert len(ids) == len(set(ids)) == n
        for text in ids:
            parsed = uuid.UUID(hex=text)
            assert parsed.hex == text
            assert (parsed.version, parsed.variant) == (4, uuid.RFC_4122)
    assert not set(prediction_ids(100)) & set(prediction_ids(100))
