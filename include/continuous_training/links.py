"""The XCom keys behind the Airflow UI's extra-link buttons, declared once.

A task stores a URL with :func:`persist_link`; the plugin's link class (``plugins/continuous_training_links.py``)
reads the same key back. Renaming the plugin class no longer changes the key, so no button goes
silently dead (the amazon provider's ``BaseAwsLink.key`` / ``persist()`` shape). The values are the
keys Airflow derived from the class names before, so the buttons of earlier runs keep working.
Standard library only: DAG files and the plugin import it at parse time.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

MLFLOW_RUN_LINK_KEY = "_link_MlflowRunLink"
DRIFT_REPORT_LINK_KEY = "_link_DriftReportLink"
MODEL_CARD_LINK_KEY = "_link_ModelCardLink"
LINK_KEYS = (MLFLOW_RUN_LINK_KEY, DRIFT_REPORT_LINK_KEY, MODEL_CARD_LINK_KEY)


def persist_link(context: Mapping[str, Any], key: str, url: str) -> None:
    """Store ``url`` for the task instance in ``context`` under a link key from this module."""
    if key not in LINK_KEYS:
        raise ValueError(f"unknown extra-link key {key!r}; declared: {LINK_KEYS}")
    context["ti"].xcom_push(key=key, value=url)
