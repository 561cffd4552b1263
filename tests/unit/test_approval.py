"""What a reviewer is shown and what is kept of the answer (`CT_APPROVAL=required`)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from include.continuous_training.approval import approval_body, approval_record, approval_subject
from include.continuous_training.config import SettingsError, load_settings

DECISION = {
    "verdict": "promote",
    "gates": [
        {"name": "floor", "passed": True, "detail": "ROC AUC 0.89 vs floor 0.70"},
        {"name": "slices", "passed": False, "detail": "worst slice channel=pos | gain -0.03"},
    ],
}
STAGE = {
    "stage": "canary 20%",
    "verdict": "pass",
    "checks": [
        {"name": "error rate", "passed": True, "reason": "candidate 0.00%"},
        {"name": "realized roc_auc", "passed": None, "reason": "too few feedback labels"},
    ],
}


def test_the_body_has_every_gate_and_every_check_as_table_rows():
    body = approval_body(DECISION, [STAGE, None])
    assert "**Offline decision: PROMOTE**" in body
    assert "| floor | yes | ROC AUC 0.89 vs floor 0.70 |" in body
    assert "| slices | NO | worst slice channel=pos \\| gain -0.03 |" in body  # a pipe cannot break the table
    assert "**Rollout stage canary 20%: PASS**" in body
    assert "| error rate | ok | candidate 0.00% |" in body
    assert "| realized roc_auc | n/a | too few feedback labels |" in body


def test_without_rollout_stages_the_body_says_the_candidate_served_nothing():
    body = approval_body(DECISION, [])
    assert "none (`CT_ROLLOUT=direct`)" in body
    assert "not found" in approval_body(None, [])


def test_the_subject_names_the_version_and_the_champion_it_would_replace():
    assert approval_subject("fraud", "4", "3") == "Promote fraud version 4 to champion? (champion now: version 3)"
    assert approval_subject("fraud", "1", None).endswith("(the first model: no champion yet)")


def test_the_approval_record_keeps_who_when_and_why():
    when = datetime(2026, 12, 2, 15, 0, tzinfo=UTC)
    answer = {
        "chosen_options": ["Approve"],
        "params_input": {"comment": "looks right"},
        "responded_at": when,
        "responded_by_user": {"id": "u7", "name": "alice"},
    }
    assert approval_record(answer) == {
        "approved_by": "alice",
        "approved_by_id": "u7",
        "approved_at": "2026-12-02T15:00:00+00:00",
        "comment": "looks right",
    }
    assert approval_record(None) is None


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CT_APPROVAL": "yes"}, "CT_APPROVAL 'yes': expected one of ('none', 'required')"),
        ({"CT_APPROVAL_TIMEOUT_HOURS": "0"}, "CT_APPROVAL_TIMEOUT_HOURS must be > 0"),
    ],
)
def test_a_bad_approval_setting_fails_naming_it(monkeypatch, env, message):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(SettingsError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_settings()


def test_approvers_are_a_comma_separated_list(monkeypatch):
    monkeypatch.setenv("CT_APPROVERS", "alice, bob")
    assert load_settings().approvers == ("alice", "bob")
