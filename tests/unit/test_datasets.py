from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest

from devtools.datasets import BatchSpec, generate_batch, main, to_bytes


def test_same_spec_gives_the_same_rows_and_other_seeds_differ():
    a = generate_batch(BatchSpec(rows=500, seed=3))
    b = generate_batch(BatchSpec(rows=500, seed=3))
    c = generate_batch(BatchSpec(rows=500, seed=4))
    pd.testing.assert_frame_equal(a, b)
    assert not a["amount"].equals(c["amount"])
    assert a["transaction_id"].is_unique
    assert set(a["transaction_id"]).isdisjoint(c["transaction_id"])


@pytest.mark.parametrize("rate", [0.02, 0.1, 0.3])
def test_label_rate_follows_the_knob(rate):
    frame = generate_batch(BatchSpec(rows=20000, seed=1, fraud_rate=rate))
    assert set(frame["is_fraud"].unique()) <= {0, 1}
    assert frame["is_fraud"].mean() == pytest.approx(rate, abs=0.02)


def test_covariate_drift_moves_inputs():
    base = generate_batch(BatchSpec(rows=20000, seed=1))
    drifted = generate_batch(BatchSpec(rows=20000, seed=1, covariate_drift=1.0))
    assert drifted["amount"].median() > 1.5 * base["amount"].median()
    assert (drifted["channel"] == "online").mean() > (base["channel"] == "online").mean() + 0.2
    assert drifted["is_fraud"].mean() == pytest.approx(base["is_fraud"].mean(), abs=0.02)


def test_concept_drift_changes_what_predicts_the_label():
    base = generate_batch(BatchSpec(rows=20000, seed=1))
    shifted = generate_batch(BatchSpec(rows=20000, seed=1, concept_drift=1.0))

    def lift(frame: pd.DataFrame) -> float:
        new_card = frame["card_age_days"] < 60
        return float(frame.loc[new_card, "is_fraud"].mean() - frame.loc[~new_card, "is_fraud"].mean())

    assert lift(shifted) > lift(base) + 0.05
    # Inputs look the same: concept drift is invisible to a covariate check on amount.
    assert shifted["amount"].median() == pytest.approx(base["amount"].median(), rel=0.05)


def test_events_are_inside_the_window_and_ordered():
    spec = BatchSpec(rows=1000, seed=2, hours=6)
    frame = generate_batch(spec)
    assert frame["event_time"].is_monotonic_increasing
    assert frame["event_time"].min() >= pd.Timestamp(spec.start)
    assert frame["event_time"].max() <= pd.Timestamp(spec.start) + pd.Timedelta(hours=6)


@pytest.mark.parametrize("file_format", ["csv", "parquet"])
def test_serialised_batches_read_back(file_format):
    frame = generate_batch(BatchSpec(rows=200, seed=5))
    data = to_bytes(frame, file_format)
    back = pd.read_csv(io.BytesIO(data)) if file_format == "csv" else pd.read_parquet(io.BytesIO(data))
    assert list(back.columns) == list(frame.columns)
    assert np.allclose(back["amount"], frame["amount"])


def test_cli_writes_a_local_file(tmp_path, capsys):
    target = tmp_path / "batch.csv"
    assert main(["--rows", "50", "--seed", "9", "--output", str(target)]) == 0
    assert len(pd.read_csv(target)) == 50
    assert "wrote 50 rows" in capsys.readouterr().out


def test_rejects_nonsense_specs():
    with pytest.raises(ValueError, match="rows"):
        generate_batch(BatchSpec(rows=0))
    with pytest.raises(ValueError, match="fraud_rate"):
        generate_batch(BatchSpec(fraud_rate=1.0))
