"""One exception hierarchy, one mapping to Airflow's fail / skip / retry."""

from __future__ import annotations

import pytest
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from include.continuous_training.airflow_settings import SettingsFileError
from include.continuous_training.config import SettingsError
from include.continuous_training.errors import (
    ConfigurationError,
    ContinuousTrainingError,
    DataError,
    DeploymentError,
    NothingToDo,
    task_outcome,
)
from include.continuous_training.ingestion import AlreadyClaimed, BatchQuarantined
from include.continuous_training.run_conf import UnknownConfKeys
from include.continuous_training.storage import MissingObject, PreconditionFailed
from include.continuous_training.training import NoCuratedData, NothingCuratedYet, TrainingDataError, WindowShrank
from include.continuous_training.validation import UnreadableBatchError


def _outcome(error: Exception) -> type[BaseException]:
    """The exception Airflow sees when a task body raises ``error`` inside :func:`task_outcome`."""
    try:
        with task_outcome():
            raise error
    except BaseException as seen:  # whatever comes out is the result under test
        return type(seen)
    raise AssertionError("task_outcome swallowed the error")


@pytest.mark.parametrize(
    "error",
    [
        BatchQuarantined("landing/a.csv: bad"),
        TrainingDataError("one class"),
        WindowShrank("window holds 1,000 rows, the previous training had 8,000 (12%)"),
        NoCuratedData("nothing yet"),
        UnknownConfKeys("window_dayz"),
        UnreadableBatchError("truncated"),
        MissingObject("s3://b/k is missing"),
        PreconditionFailed("changed"),
        DeploymentError("refused version 2"),
        ConfigurationError("CT_X"),
        SettingsFileError("airflow.pools[0]: pool_name is required"),
        SettingsError("CT_MAX_DEPTH='six': expected an integer"),
    ],
)
def test_errors_retrying_cannot_fix_fail_the_task_at_once(error):
    assert _outcome(error) is AirflowFailException


@pytest.mark.parametrize("error", [AlreadyClaimed("claimed by run-1"), NothingCuratedYet("fresh installation")])
def test_nothing_to_do_skips_the_task(error):
    assert _outcome(error) is AirflowSkipException


def test_a_retryable_error_propagates_so_airflow_retries():
    error = DeploymentError("endpoint unreachable", retryable=True)
    assert _outcome(error) is DeploymentError


def test_errors_outside_the_hierarchy_propagate_untouched():
    assert _outcome(ConnectionResetError("S3 went away")) is ConnectionResetError


def test_the_message_reaches_airflow_unchanged():
    with pytest.raises(AirflowFailException, match=r"^landing/a\.csv: missing columns"), task_outcome():
        raise BatchQuarantined("landing/a.csv: missing columns ['amount']")


def test_every_error_the_package_raises_on_purpose_shares_the_base():
    for kind in (ConfigurationError, DataError, NothingToDo, DeploymentError, AlreadyClaimed, PreconditionFailed):
        assert issubclass(kind, ContinuousTrainingError)
    # Existing callers that catch ValueError keep working.
    assert issubclass(UnknownConfKeys, ValueError)
    assert issubclass(TrainingDataError, ValueError)
