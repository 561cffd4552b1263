"""``CT_APPROVAL=required``: a person approves a promotion in Airflow, shown what justifies it.

The approval is Airflow's own human-in-the-loop operator (standard provider, Airflow 3.1+): the
task parks (``awaiting_input`` on Airflow 3.3+; deferred before) until someone answers in the UI's
*Required Actions* page or through the REST API (``PATCH /api/v2/dags/{dag_id}/dagRuns/{run_id}/
taskInstances/approve_promotion/-1/hitlDetails``), and holds no worker slot meanwhile. The request
shows the decision record (every gate with its numbers) and each rollout stage's analysis; an
optional comment is kept with the answer.

- **Approve**: ``promote_champion`` runs; the model version is tagged with who approved, when and
  the comment (``ct.approval``).
- **Reject**, or no answer within ``CT_APPROVAL_TIMEOUT_HOURS``: the task fails with
  :class:`PromotionRejected` (who rejected, or that nobody answered), so ``rollback_deployment``
  takes the candidate out and the alert says why. Rejecting is a decision, not an outage: the task
  is never retried (a retry would ask again).
- ``CT_APPROVERS``: the Airflow user ids who may answer; empty lets anyone who may edit the DAG.

:func:`approval_body` is pure (tested on records alone); the operator is imported by the DAG file
only when approval is required, so other installations never load the HITL machinery.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from airflow.providers.standard.exceptions import HITLRejectException, HITLTimeoutError
from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import Param

from include.continuous_training.config import Settings
from include.continuous_training.errors import ContinuousTrainingError

APPROVAL_TASK_ID = "approve_promotion"
COMMENT_PARAM = "comment"


class PromotionRejected(ContinuousTrainingError):
    """The reviewer rejected the promotion, or nobody answered in time: the candidate is rolled back."""


def approval_subject(model_name: str, version: str | None, previous: str | None) -> str:
    against = f" (champion now: version {previous})" if previous else " (the first model: no champion yet)"
    return f"Promote {model_name} version {version} to champion?{against}"


def approval_body(decision: dict[str, Any] | None, analyses: Sequence[dict[str, Any] | None]) -> str:
    """The Markdown a reviewer reads: the decision record's gates, then each rollout stage's checks."""
    lines: list[str] = []
    if decision:
        lines += [f"**Offline decision: {str(decision.get('verdict', '?')).upper()}**", ""]
        lines += ["| gate | passed | detail |", "|---|---|---|"]
        for gate in decision.get("gates", []):
            detail = str(gate.get("detail", "")).replace("|", "\\|")
            lines.append(f"| {gate.get('name')} | {'yes' if gate.get('passed') else 'NO'} | {detail} |")
        lines.append("")
    else:
        lines += ["**Offline decision**: not found (decide_promotion left no record)", ""]
    stages = [a for a in analyses if a]
    if not stages:
        lines.append("**Rollout**: none (`CT_ROLLOUT=direct`): the candidate has served no traffic yet.")
    for analysis in stages:
        lines += [f"**Rollout stage {analysis.get('stage')}: {str(analysis.get('verdict', '?')).upper()}**", ""]
        lines += ["| check | result | detail |", "|---|---|---|"]
        for check in analysis.get("checks", []):
            result = {True: "ok", False: "FAIL", None: "n/a"}[check.get("passed")]
            detail = str(check.get("reason", "")).replace("|", "\\|")
            lines.append(f"| {check.get('name')} | {result} | {detail} |")
        lines.append("")
    lines.append("Approve to make it the champion on every replica; reject to roll it back.")
    return "\n".join(lines)


class PromotionApproval(ApprovalOperator):
    """Airflow's approval operator, with the request built from this run's decision and rollout records."""

    def __init__(
        self, *, model_name: str, analysis_task_ids: Sequence[str], timeout_hours: float, **kwargs: Any
    ) -> None:
        self.model_name = model_name
        self.analysis_task_ids = list(analysis_task_ids)
        self.timeout_hours = timeout_hours
        super().__init__(
            subject=f"Promote {model_name}?",  # replaced in execute, once the version is known
            response_timeout=timedelta(hours=timeout_hours),
            fail_on_reject=True,  # a reject must roll back, which a skip would not trigger
            **kwargs,
        )

    def execute(self, context: Any) -> Any:
        ti = context["ti"]
        deployment = ti.xcom_pull(task_ids="deploy_challenger") or {}
        version = ti.xcom_pull(task_ids="register_challenger")
        self.subject = approval_subject(self.model_name, version, deployment.get("previous"))
        self.body = approval_body(
            ti.xcom_pull(task_ids="decide_promotion", key="decision"),
            [ti.xcom_pull(task_ids=task_id) for task_id in self.analysis_task_ids],
        )
        print(f"{self.subject}\n{self.body}")
        return super().execute(context)

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        version = context["ti"].xcom_pull(task_ids="register_challenger")
        try:
            answer = super().execute_complete(context=context, event=event)
        except HITLTimeoutError:
            raise PromotionRejected(
                f"version {version}: nobody answered the approval within CT_APPROVAL_TIMEOUT_HOURS="
                f"{self.timeout_hours:g}; rolled back"
            ) from None
        except HITLRejectException:
            who = (event.get("responded_by_user") or {}).get("name") or "a reviewer"
            comment = (event.get("params_input") or {}).get(COMMENT_PARAM) or "no comment"
            raise PromotionRejected(f"version {version} REJECTED by {who} ({comment}); rolled back") from None
        return answer


def approval_task(settings: Settings, analysis_task_ids: Sequence[str]) -> PromotionApproval:
    """The ``approve_promotion`` task of ``train_and_deploy`` (``CT_APPROVAL=required``)."""
    return PromotionApproval(
        task_id=APPROVAL_TASK_ID,
        model_name=settings.model_name,
        analysis_task_ids=analysis_task_ids,
        timeout_hours=settings.approval_timeout_hours,
        assigned_users=[{"id": user, "name": user} for user in settings.approvers] or None,
        params={COMMENT_PARAM: Param("", type="string", maxLength=2000, description="Why (kept with the answer).")},
        retries=0,  # a reject is an answer; a retry would ask again
    )


def approval_record(answer: dict[str, Any] | None) -> dict[str, Any] | None:
    """What ``promote_champion`` tags the version with: who approved, when, and their comment."""
    if not answer:
        return None
    user = answer.get("responded_by_user") or {}
    responded_at: Any = answer.get("responded_at")
    return {
        "approved_by": user.get("name") or user.get("id"),
        "approved_by_id": user.get("id"),
        "approved_at": responded_at.isoformat() if hasattr(responded_at, "isoformat") else responded_at,
        "comment": (answer.get("params_input") or {}).get(COMMENT_PARAM, ""),
    }
