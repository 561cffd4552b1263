"""Public tables that ship inside PyPI packages, shaped as a user's own table would arrive.

The loop is proven on these besides our own generator: tables the project did not design.

- ``penguins`` (palmerpenguins): multiclass ``species``, text columns as pandas ``category`` (what
  ``df.to_parquet`` of categoricals writes), missing values, no id, no event time.
- ``breast_cancer`` (scikit-learn): binary ``diagnosis`` as the words ``malignant`` / ``benign``,
  30 numeric columns whose names contain spaces, no categorical column.
- ``diabetes`` (scikit-learn, unscaled): regression ``progression``, numeric only.

Nothing is downloaded: both packages carry their data files.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd


def _penguins() -> pd.DataFrame:
    import palmerpenguins

    frame = palmerpenguins.load_penguins()
    for column in ("species", "island", "sex"):
        frame[column] = frame[column].astype("category")
    return frame


def _breast_cancer() -> pd.DataFrame:
    from sklearn.datasets import load_breast_cancer

    frame = load_breast_cancer(as_frame=True).frame
    frame["diagnosis"] = frame.pop("target").map({0: "malignant", 1: "benign"})
    return frame


def _diabetes() -> pd.DataFrame:
    from sklearn.datasets import load_diabetes

    frame = load_diabetes(as_frame=True, scaled=False).frame
    frame["progression"] = frame.pop("target")
    return frame


@dataclass(frozen=True)
class PublicTable:
    """One public table: its label, its task and how to load it."""

    name: str
    label: str
    task: str
    load: Callable[[], pd.DataFrame]


TABLES = {
    table.name: table
    for table in (
        PublicTable("penguins", "species", "multiclass", _penguins),
        PublicTable("breast_cancer", "diagnosis", "binary", _breast_cancer),
        PublicTable("diabetes", "progression", "regression", _diabetes),
    )
}


def load_table(name: str) -> pd.DataFrame:
    """The table called ``name`` (one of :data:`TABLES`) as a DataFrame, as its package ships it."""
    if name not in TABLES:
        raise KeyError(f"no public table {name!r}; known: {sorted(TABLES)}")
    return TABLES[name].load()


def split_batches(frame: pd.DataFrame, count: int, seed: int = 0) -> list[pd.DataFrame]:
    """``frame`` shuffled (seeded) into ``count`` batches of about equal size: files landing one by one."""
    shuffled = frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    size = -(-len(shuffled) // count)
    return [shuffled.iloc[i : i + size].reset_index(drop=True) for i in range(0, len(shuffled), size)]


def shifted(frame: pd.DataFrame, columns: list[str], factor: float = 1.6) -> pd.DataFrame:
    """``frame`` with the numeric ``columns`` scaled by ``factor``: traffic that drifted."""
    moved = frame.copy()
    for column in columns:
        moved[column] = moved[column] * factor
    return moved
