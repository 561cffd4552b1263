"""Trigger conf checks that Airflow's Param validation does not do.

Airflow validates the *values* of declared Params when a run is created (a wrong type never makes a
run), but it accepts keys that match no Param and leaves them in ``dag_run.conf``, where a typo such
as ``window_dayz`` would silently do nothing. The first task of each DAG calls :func:`check_run_conf`,
so such a run fails at once with the keys named and nothing else done.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from include.continuous_training.errors import ConfigurationError


class UnknownConfKeys(ConfigurationError):
    """The trigger conf names keys this DAG does not take."""


def unknown_keys(conf: Mapping[str, Any] | None, params: Mapping[str, Any]) -> list[str]:
    return sorted(set(conf or {}) - set(params))


def check_run_conf(context: Mapping[str, Any]) -> None:
    """Raise :class:`UnknownConfKeys` naming every conf key that is not a Param of this DAG.

    Compared with the DAG's *declared* Params: ``context["params"]`` already has the conf merged in.
    """
    declared = context["dag"].params
    unknown = unknown_keys(getattr(context["dag_run"], "conf", None), declared)
    if unknown:
        raise UnknownConfKeys(
            f"unknown key(s) {unknown} in the trigger conf; this DAG takes {sorted(declared)}. "
            "Nothing was run: trigger again without them."
        )
