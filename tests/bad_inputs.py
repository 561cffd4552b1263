"""The catalogue of bad landing files: each case is a file a producer could really drop in S3."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from devtools.datasets import BatchSpec, generate_batch, to_bytes


@dataclass(frozen=True)
class BadInput:
    case: str
    filename: str
    build: Callable[[pd.DataFrame], bytes]
    reason: str  # a fragment the one-line reason must contain

    @property
    def unreadable(self) -> bool:
        """Rejected before validation: the bytes do not parse as a table at all."""
        return self.case in UNREADABLE


def good_frame(rows: int = 400, seed: int = 11) -> pd.DataFrame:
    return generate_batch(BatchSpec(rows=rows, seed=seed))


def _with(frame: pd.DataFrame, **columns: object) -> pd.DataFrame:
    return frame.assign(**columns)


def _truncated_parquet(frame: pd.DataFrame) -> bytes:
    data = to_bytes(frame, "parquet")
    return data[: len(data) // 2]


UNREADABLE = {
    "zero_bytes",
    "truncated_parquet",
    "binary_garbage",
    "semicolon_delimiter",
    "non_utf8_text",
    "unsupported_type",
}

BAD_INPUTS = [
    BadInput("zero_bytes", "empty.csv", lambda f: b"", "zero-byte object"),
    BadInput("truncated_parquet", "truncated.parquet", _truncated_parquet, "not a readable Parquet file"),
    BadInput("binary_garbage", "garbage.csv", lambda f: np.random.default_rng(0).bytes(4096), "binary content"),
    BadInput("semicolon_delimiter", "semicolon.csv", lambda f: f.to_csv(sep=";", index=False).encode(), "';'"),
    BadInput("header_only", "header.csv", lambda f: to_bytes(f.head(0), "csv"), "expect_table_row_count_to_be_between"),
    BadInput(
        "missing_column",
        "missing.csv",
        lambda f: to_bytes(f.drop(columns=["amount"]), "csv"),
        "missing columns ['amount']",
    ),
    BadInput(
        "extra_column",
        "extra.csv",
        lambda f: to_bytes(_with(f, promo_code="X1"), "csv"),
        "unexpected columns ['promo_code']",
    ),
    BadInput(
        "renamed_column",
        "renamed.parquet",
        lambda f: to_bytes(f.rename(columns={"channel": "chan"}), "parquet"),
        "missing columns ['channel']; unexpected columns ['chan']",
    ),
    BadInput("wrong_dtype", "dtype.csv", lambda f: to_bytes(_with(f, amount="twelve"), "csv"), "column `amount`"),
    BadInput(
        "all_null_column", "nulls.parquet", lambda f: to_bytes(_with(f, country=None), "parquet"), "column `country`"
    ),
    BadInput(
        "labels_outside_0_1", "labels.csv", lambda f: to_bytes(_with(f, is_fraud=2), "csv"), "exceed the bad-row budget"
    ),
    BadInput(
        "non_utf8_text",
        "latin1.csv",
        lambda f: to_bytes(_with(f, country="Ñ"), "csv").decode().encode("latin-1"),
        "not UTF-8 text",
    ),
    BadInput("unsupported_type", "batch.json", lambda f: f.to_json().encode(), "unsupported file type"),
]
