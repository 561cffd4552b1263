"""Unknown trigger-conf keys are named, against the DAG's declared Params (not the merged ones)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from include.continuous_training.run_conf import UnknownConfKeys, check_run_conf, unknown_keys


def _context(conf, declared):
    merged = {**declared, **(conf or {})}  # what Airflow puts in context["params"]
    return {"dag_run": SimpleNamespace(conf=conf), "dag": SimpleNamespace(params=declared), "params": merged}


def test_declared_keys_pass_and_unknown_ones_are_named():
    declared = {"reason": "", "window_days": None}
    check_run_conf(_context({"reason": "x"}, declared))
    check_run_conf(_context(None, declared))
    with pytest.raises(
        UnknownConfKeys, match=r"unknown key\(s\) \['window_dayz', 'zzz'\].*takes \['reason', 'window_days'\]"
    ):
        check_run_conf(_context({"window_dayz": 7, "zzz": 1, "reason": "x"}, declared))
    assert unknown_keys({"a": 1}, {"a": 0}) == []
