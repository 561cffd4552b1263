"""Alerts: always logged; also posted to a Slack-compatible webhook when ``CT_ALERT_WEBHOOK_URL`` is set.

For email, PagerDuty or Slack through an Airflow connection, pass one of Airflow's notifiers as the
DAGs' ``on_failure_callback`` instead; this module keeps the default dependency-free.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from typing import Any

from include.continuous_training.config import Settings, SettingsError, load_settings, runtime_settings

log = logging.getLogger(__name__)


def send_alert(settings: Settings, title: str, text: str) -> bool:
    """Log the alert and post it to the webhook if one is configured; True when it was delivered."""
    log.warning("ALERT %s: %s", title, text)
    if not settings.alert_webhook_url:
        return False
    body = json.dumps({"text": f"*{title}*\n{text}"}).encode()
    if not settings.alert_webhook_url.startswith(("https://", "http://")):
        log.error("CT_ALERT_WEBHOOK_URL must be an http(s) URL; alert not posted")
        return False
    request = urllib.request.Request(  # noqa: S310 (scheme checked above)
        settings.alert_webhook_url, data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (checked above)  # nosec B310
            return 200 <= int(response.status) < 300
    except (urllib.error.URLError, OSError) as error:
        # An alert channel that is down must not turn a rejection into a task failure.
        log.error("alert webhook failed: %s", error)
        return False


def alert_on_failure(context: Any) -> None:
    """Airflow ``on_failure_callback``: one line naming the DAG run, the task and the error."""
    ti = context.get("task_instance") or context.get("ti")
    error = context.get("exception")
    where = f"{getattr(ti, 'dag_id', '?')}.{getattr(ti, 'task_id', '?')} run {context.get('run_id', '?')}"
    try:
        settings = runtime_settings()  # a webhook set as an Airflow Variable is honoured too
    except SettingsError:  # the failure may be that very misconfiguration: alert with the environment's
        settings = load_settings()
    send_alert(settings, f"Task failed: {where}", f"{type(error).__name__ if error else 'failure'}: {error}")
