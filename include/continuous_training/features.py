"""The model's input contract: which columns feed the model, how they are encoded, what may be tuned.

Training, evaluation, the drift check and the serving endpoint all encode rows through
:class:`FeatureSpec`, which is stored next to every model (``feature_spec.json``), so a row is encoded
the same way wherever it is scored. Light on purpose: the DAG file imports this module at parse time
(for the hyper-parameter Param schema) and the endpoint imports it without the trainer; numpy, pandas
and xgboost are imported only inside the methods that need them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from include.continuous_training.config import Settings

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import xgboost as xgb

# XGBoost parameters a run may override (the ``hyperparameters`` Param), with their types.
TUNABLE_PARAMS = {
    "max_depth": int,
    "learning_rate": float,
    "min_child_weight": float,
    "subsample": float,
    "colsample_bytree": float,
    "reg_lambda": float,
    "reg_alpha": float,
    "gamma": float,
    "max_bin": int,
    "scale_pos_weight": float,
    "num_boost_round": int,
    "early_stopping_rounds": int,
}
# Where a training run keeps what the other stages read back (MLflow artifact paths in the run).
FEATURE_SPEC_FILE = "feature_spec.json"
REFERENCE_ARTIFACT = "reference/reference.parquet"
MANIFEST_ARTIFACT = "data/manifest.json"
EVALUATION_ARTIFACT = "evaluation/evaluation.json"
DECISION_ARTIFACT = "evaluation/decision.json"


def configured_columns(settings: Settings) -> dict[str, str]:
    """Every column the settings name, with the setting that names it (for error messages).

    Without ``CT_ID_COLUMN`` / ``CT_TIMESTAMP_COLUMN`` the columns ingest derives take their place.
    """
    derived = {
        settings.row_id_column: "CT_ID_COLUMN" if settings.id_column else "CT_ID_COLUMN (empty: derived at ingest)",
        settings.event_time_column: (
            "CT_TIMESTAMP_COLUMN" if settings.timestamp_column else "CT_TIMESTAMP_COLUMN (empty: derived at ingest)"
        ),
    }
    return {
        settings.label_column: "CT_LABEL_COLUMN",
        **derived,
        **{name: "CT_NUMERIC_COLUMNS" for name in settings.numeric_columns},
        **{name: "CT_CATEGORICAL_COLUMNS" for name in settings.categorical_columns},
    }


@dataclass(frozen=True)
class FeatureSpec:
    """How raw columns become the model's float matrix; stored next to every model.

    Categorical values become their index in ``categories[column]`` (unknown values: missing), so
    training, evaluation and the serving endpoint encode exactly alike, with no pandas needed.
    """

    numeric: tuple[str, ...]
    categories: dict[str, list[str]]
    label: str

    @property
    def feature_names(self) -> list[str]:
        return [*self.numeric, *self.categories]

    @property
    def feature_types(self) -> list[str]:
        return ["q"] * len(self.numeric) + ["c"] * len(self.categories)

    def to_dict(self) -> dict[str, Any]:
        return {"numeric": list(self.numeric), "categories": self.categories, "label": self.label}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> FeatureSpec:
        return cls(tuple(raw["numeric"]), {k: list(v) for k, v in raw["categories"].items()}, raw["label"])

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, settings: Settings) -> FeatureSpec:
        categories = {c: sorted(str(v) for v in frame[c].dropna().unique()) for c in settings.categorical_columns}
        return cls(tuple(settings.numeric_columns), categories, settings.label_column)

    def matrix(self, frame: pd.DataFrame) -> np.ndarray:
        """The float32 feature matrix for ``frame`` (missing or unknown values are NaN)."""
        import numpy as np
        import pandas as pd

        columns = [frame[c].to_numpy(dtype=np.float32, na_value=np.nan) for c in self.numeric]
        for column, values in self.categories.items():
            codes = pd.Categorical(frame[column].astype("string"), categories=values).codes.astype(np.float32)
            codes[codes < 0] = np.nan  # unknown or missing category
            columns.append(codes)
        return np.column_stack(columns) if columns else np.empty((len(frame), 0), np.float32)

    def encoded_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        """:meth:`matrix` as a DataFrame with the feature names as columns."""
        import pandas as pd

        return pd.DataFrame(self.matrix(frame), columns=self.feature_names)

    def dmatrix(self, frame: pd.DataFrame, with_label: bool = True) -> xgb.DMatrix:
        import xgboost as xgb

        label = frame[self.label].to_numpy() if with_label else None
        return xgb.DMatrix(
            self.matrix(frame),
            label=label,
            feature_names=self.feature_names,
            feature_types=self.feature_types,
            enable_categorical=True,
            missing=float("nan"),
        )
