"""The drift check reads the rows the champion answered: old log files (before rollouts) count as the champion's."""

from __future__ import annotations

import io

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from include.continuous_training.drift import champion_served


def _parquet(columns: dict) -> pd.DataFrame:
    """A table written and read back as the inference log writes it (pyarrow) and the drift check reads it."""
    buffer = io.BytesIO()
    pq.write_table(pa.table(columns), buffer)
    return pd.read_parquet(io.BytesIO(buffer.getvalue()))


def test_only_champion_served_rows_old_rows_included():
    old = _parquet({"prediction_id": ["o1", "o2"], "score": [0.1, 0.2]})  # written before variants existed
    new = _parquet(
        {
            "prediction_id": ["s1", "s1", "c1", "c1", "f1", "f1"],
            "score": [0.3, 0.35, 0.4, 0.45, None, 0.5],
            "variant": ["champion", "candidate", "candidate", "champion", "candidate", "champion"],
            "served": [True, False, True, False, False, True],
            "error": [None, None, None, None, "refused", None],
        }
    )
    rows = pd.concat([old, new], ignore_index=True)
    kept = champion_served(rows)
    assert list(kept["prediction_id"]) == ["o1", "o2", "s1", "f1"]
    assert champion_served(old).equals(old)
    assert champion_served(new)["prediction_id"].tolist() == ["s1", "f1"]
