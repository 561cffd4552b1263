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
from include.continuous_training.errors import DataError

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


class LabelDoesNotFitTask(DataError):
    """The label column cannot be what ``CT_TASK`` says (one class, too many classes, not a number, …)."""


def native(value: Any) -> Any:
    """A label value as plain Python (``numpy.int64(1)`` → ``1``), so it survives JSON unchanged."""
    item = getattr(value, "item", None)
    return item() if callable(item) else value


def _sorted_values(values: list[Any]) -> list[Any]:
    try:
        return sorted(values)
    except TypeError:  # mixed types: a stable order all the same
        return sorted(values, key=str)


def _names(value: Any, wanted: str) -> bool:
    """Does the ``CT_POSITIVE_CLASS`` text ``wanted`` name the label value ``value``?"""
    if str(value) == wanted or str(value).lower() == wanted.lower():
        return True
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return float(wanted) == float(value)
        except ValueError:
            return False
    return False


def label_classes(values: pd.Series, settings: Settings) -> tuple[Any, ...]:
    """The classes a label column holds for ``settings.task``, checked before anything trains.

    Binary: its two values as ``(negative, positive)``; the positive one is the value
    ``CT_POSITIVE_CLASS`` names, else the larger of the two sorted values. Multiclass: every value,
    sorted (at most ``CT_MAX_CLASSES``). Regression: ``()`` once the column is numeric. Raises
    :class:`LabelDoesNotFitTask` naming the column and the task, and :class:`SettingsError` when
    ``CT_POSITIVE_CLASS`` names neither value.
    """
    import pandas as pd

    from include.continuous_training.config import SettingsError

    column, task = settings.label_column, settings.task
    where = f"label column {column!r} (CT_TASK={task})"
    missing = int(values.isna().sum())
    if missing:
        raise LabelDoesNotFitTask(f"{where} has {missing:,} missing values: every training row needs a label")
    if task == "regression":
        if pd.api.types.is_bool_dtype(values) or not pd.api.types.is_numeric_dtype(values):
            example = values.head(3).tolist()
            raise LabelDoesNotFitTask(
                f"{where}: a regression label must be numeric, got dtype {values.dtype} (e.g. {example}); "
                "set CT_TASK to binary or multiclass for a label of classes"
            )
        return ()
    found = _sorted_values([native(v) for v in values.unique()])
    if len(found) < 2:
        raise LabelDoesNotFitTask(f"{where} holds one class only ({found}): a classifier needs at least two")
    if task == "binary":
        if len(found) != 2:
            shown = found[:10]
            raise LabelDoesNotFitTask(
                f"{where} holds {len(found)} classes ({shown}{' …' if len(found) > 10 else ''}); binary needs exactly "
                "two: set CT_TASK=multiclass"
            )
        positive = found[1]
        if settings.positive_class:
            named = [v for v in found if _names(v, settings.positive_class)]
            if len(named) != 1:
                raise SettingsError(
                    f"CT_POSITIVE_CLASS {settings.positive_class!r} names neither of the two values {found} of "
                    f"label column {column!r}"
                )
            positive = named[0]
        return (found[0] if positive == found[1] else found[1], positive)
    if len(found) > settings.max_classes:
        raise LabelDoesNotFitTask(
            f"{where} holds {len(found)} distinct values, more than CT_MAX_CLASSES={settings.max_classes} "
            f"(e.g. {found[:5]}): is it an id or a number (CT_TASK=regression)?"
        )
    return tuple(found)


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
    """How raw columns become the model's float matrix, and the label its target; stored next to every model.

    Categorical values become their index in ``categories[column]`` (unknown values: missing), so
    training, evaluation and the serving endpoint encode exactly alike, with no pandas needed.
    ``task`` is what the model predicts; ``classes`` are the label values of a classifier in the
    order of its outputs (binary: ``(negative, positive)``; regression: empty).
    """

    numeric: tuple[str, ...]
    categories: dict[str, list[str]]
    label: str
    task: str = "binary"
    classes: tuple[Any, ...] = (0, 1)

    @property
    def is_classifier(self) -> bool:
        return self.task != "regression"

    @property
    def positive_class(self) -> Any:
        """The class whose probability a binary model outputs (None for other tasks)."""
        return self.classes[1] if self.task == "binary" else None

    @property
    def feature_names(self) -> list[str]:
        return [*self.numeric, *self.categories]

    @property
    def feature_types(self) -> list[str]:
        return ["q"] * len(self.numeric) + ["c"] * len(self.categories)

    def to_dict(self) -> dict[str, Any]:
        raw: dict[str, Any] = {
            "numeric": list(self.numeric),
            "categories": self.categories,
            "label": self.label,
            "task": self.task,
            "classes": list(self.classes),
        }
        if self.task == "binary":
            raw["positive_class"] = self.positive_class
        return raw

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> FeatureSpec:
        """The spec back from :meth:`to_dict`; a spec written before tasks existed is a binary 0/1 one."""
        task = raw.get("task", "binary")
        default: list[Any] = [0, 1] if task == "binary" else []
        return cls(
            tuple(raw["numeric"]),
            {k: list(v) for k, v in raw["categories"].items()},
            raw["label"],
            task,
            tuple(raw.get("classes", default)),
        )

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, settings: Settings) -> FeatureSpec:
        """The spec of the training rows ``frame``: categories seen, and the label checked against the task."""
        categories = {c: sorted(str(v) for v in frame[c].dropna().unique()) for c in settings.categorical_columns}
        classes = label_classes(frame[settings.label_column], settings)
        return cls(tuple(settings.numeric_columns), categories, settings.label_column, settings.task, classes)

    def label_vector(self, frame: pd.DataFrame) -> np.ndarray:
        """The label of ``frame`` as the model's target: class index (classifiers) or float (regression).

        Raises :class:`LabelDoesNotFitTask` for a missing label or a class the model was not trained on.
        """
        import numpy as np

        values = frame[self.label]
        if not self.is_classifier:
            return values.to_numpy(dtype=np.float64)
        index = {value: position for position, value in enumerate(self.classes)}
        codes = values.map(lambda v: index.get(native(v), -1)).to_numpy(dtype=np.int64)
        unknown = codes < 0
        if unknown.any():
            seen = _sorted_values(list({native(v) for v in values[unknown]}))[:10]
            raise LabelDoesNotFitTask(
                f"label column {self.label!r} (task {self.task}) holds {int(unknown.sum()):,} rows with values "
                f"{seen} that are not among the model's classes {list(self.classes)}"
            )
        return codes

    def predict(self, booster: xgb.Booster, matrix: np.ndarray) -> np.ndarray:
        """The booster's output for ``matrix``: P(positive) (binary), one row of class probabilities per
        record (multiclass, shape ``[n, classes]``) or the predicted value (regression)."""
        import numpy as np

        output = np.asarray(booster.inplace_predict(matrix))
        if self.task == "multiclass":
            return output.reshape(len(matrix), len(self.classes))
        return output.reshape(len(matrix))

    def scores(self, output: np.ndarray) -> np.ndarray:
        """One number per row of :meth:`predict`'s output: P(positive), P(predicted class) or the prediction."""
        import numpy as np

        return np.asarray(output.max(axis=1) if self.task == "multiclass" else output, dtype=np.float64)

    def predicted_labels(self, output: np.ndarray, threshold: float) -> list[Any]:
        """The predicted class of each row (binary: positive at ``score >= threshold``); None for regression."""
        import numpy as np

        if self.task == "multiclass":
            return [self.classes[i] for i in np.argmax(output, axis=1).tolist()]
        if self.task == "binary":
            negative, positive = self.classes
            return [positive if p >= threshold else negative for p in output.tolist()]
        return [None] * len(output)

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

        label = self.label_vector(frame) if with_label else None
        return xgb.DMatrix(
            self.matrix(frame),
            label=label,
            feature_names=self.feature_names,
            feature_types=self.feature_types,
            enable_categorical=True,
            missing=float("nan"),
        )
