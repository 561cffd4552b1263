"""One exception hierarchy for every stage, and the one place it becomes Airflow's fail / skip / retry.

Each error says whether trying again can help (``retryable``) and whether it means "nothing to do"
rather than a failure (``skip``). A task body runs inside :func:`task_outcome`:

- ``skip`` errors → ``AirflowSkipException`` (the task is skipped, downstream follows trigger rules);
- ``retryable`` errors → re-raised as they are, so Airflow retries the task as configured;
- every other error of this hierarchy → ``AirflowFailException``: a misconfiguration, bad data or a
  refused deployment does not change on retry, so the task fails at once with the message.

Errors outside the hierarchy (network, S3, MLflow client errors, …) propagate untouched and are
retried: they are the transient kind. This module is standard-library only (DAG files may import it).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class ContinuousTrainingError(Exception):
    """Base of every error this package raises on purpose.

    ``retryable`` (class default, or per instance) is True when trying again may help.
    """

    retryable: bool = False
    skip: bool = False


class ConfigurationError(ContinuousTrainingError, ValueError):
    """A setting, a settings file or a trigger conf is wrong; the message names it."""


class DataError(ContinuousTrainingError, ValueError):
    """The data cannot be used as it is (a quarantined batch, a window that cannot train a model)."""


class NothingToDo(ContinuousTrainingError):
    """Not a failure: there is nothing for this task to do (the task is skipped)."""

    skip = True


class DeploymentError(ContinuousTrainingError, RuntimeError):
    """The endpoint did not take the version, or did not serve it correctly.

    ``retryable`` is True when trying again may help (endpoint unreachable), False when it cannot
    (refused: bad token, a model that does not load).
    """

    def __init__(self, message: str, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable  # per instance: the cause decides


@contextmanager
def task_outcome() -> Iterator[None]:
    """Run a task body; turn this package's errors into Airflow's skip / fail (retryable ones propagate)."""
    try:
        yield
    except ContinuousTrainingError as error:
        from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

        if error.skip:
            raise AirflowSkipException(str(error)) from None
        if error.retryable:
            raise
        raise AirflowFailException(str(error)) from None
