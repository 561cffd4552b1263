"""Apply ``airflow_settings.yaml`` (the Astro CLI format) to an Airflow metadata database.

The file is the one source of this package's connections, variables and pools: ``astro dev start``
reads it, the compose ``airflow-init`` service and ``make demo`` apply it with this module::

    python -m include.continuous_training.airflow_settings apply [--file airflow_settings.yaml]
    python -m include.continuous_training.airflow_settings check [--file airflow_settings.yaml]

Applying creates what is missing and updates what differs; it never deletes anything. Connections
set through ``AIRFLOW_CONN_<ID>`` environment variables (or a secrets backend) still win over the
database at run time, which is how credentials stay out of the file.

The file is validated before anything is written: an unknown key, a missing id, a duplicate or a
wrong type is reported with its place in the file (``airflow.pools[0].pool_slot: …``) and nothing
is applied.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from include.continuous_training.errors import ConfigurationError

DEFAULT_FILE = Path(__file__).resolve().parents[2] / "airflow_settings.yaml"

_CONNECTION_KEYS = {
    "conn_id": str,
    "conn_type": str,
    "conn_host": str,
    "conn_schema": str,
    "conn_login": str,
    "conn_password": str,
    "conn_port": int,
    "conn_extra": (dict, str),
    "conn_uri": str,
    "conn_description": str,
}
_POOL_KEYS = {"pool_name": str, "pool_slot": int, "pool_description": str}
_VARIABLE_KEYS = {"variable_name": str, "variable_value": (str, int, float, bool, dict, list)}


class SettingsFileError(ConfigurationError):
    """The settings file is not valid; the message names the place in the file."""


@dataclass(frozen=True)
class ConnectionSpec:
    conn_id: str
    conn_type: str | None = None
    host: str | None = None
    schema: str | None = None
    login: str | None = None
    password: str | None = field(default=None, repr=False)
    port: int | None = None
    extra: str | None = None
    uri: str | None = None
    description: str | None = None


@dataclass(frozen=True)
class PoolSpec:
    name: str
    slots: int
    description: str = ""


@dataclass(frozen=True)
class VariableSpec:
    key: str
    value: str


@dataclass(frozen=True)
class AirflowSettingsFile:
    connections: tuple[ConnectionSpec, ...] = ()
    pools: tuple[PoolSpec, ...] = ()
    variables: tuple[VariableSpec, ...] = ()


def _entries(section: Any, where: str) -> list[dict[str, Any]]:
    if section is None:
        return []
    if not isinstance(section, list):
        raise SettingsFileError(f"{where}: expected a list, got {type(section).__name__}")
    for index, entry in enumerate(section):
        if not isinstance(entry, dict):
            raise SettingsFileError(f"{where}[{index}]: expected a mapping, got {type(entry).__name__}")
    return section


def _check_keys(entry: dict[str, Any], allowed: dict[str, Any], required: str, where: str) -> None:
    unknown = sorted(set(entry) - set(allowed))
    if unknown:
        raise SettingsFileError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")
    if not entry.get(required):
        raise SettingsFileError(f"{where}: {required} is required")
    for key, value in entry.items():
        expected = allowed[key]
        if value is None:
            continue
        # bool is an int in Python; a pool of `true` slots is a mistake, not 1.
        if isinstance(value, bool) and bool not in (expected if isinstance(expected, tuple) else (expected,)):
            raise SettingsFileError(f"{where}.{key}: expected {_type_name(expected)}, got a boolean")
        if not isinstance(value, expected):
            raise SettingsFileError(f"{where}.{key}: expected {_type_name(expected)}, got {type(value).__name__}")


def _type_name(expected: Any) -> str:
    types = expected if isinstance(expected, tuple) else (expected,)
    return " or ".join(t.__name__ for t in types)


def _unique(names: list[str], where: str, what: str) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise SettingsFileError(f"{where}: {what} {name!r} appears twice")
        seen.add(name)


def parse(document: Any) -> AirflowSettingsFile:
    """Validate a loaded YAML document; raise :class:`SettingsFileError` naming the first problem."""
    if document is None:
        return AirflowSettingsFile()
    if not isinstance(document, dict) or set(document) - {"airflow"}:
        raise SettingsFileError("top level: expected a mapping with the single key 'airflow'")
    body = document.get("airflow") or {}
    if not isinstance(body, dict):
        raise SettingsFileError("airflow: expected a mapping")
    unknown = sorted(set(body) - {"connections", "pools", "variables"})
    if unknown:
        raise SettingsFileError(f"airflow: unknown section(s) {unknown}; allowed: connections, pools, variables")

    connections = []
    for index, entry in enumerate(_entries(body.get("connections"), "airflow.connections")):
        where = f"airflow.connections[{index}]"
        _check_keys(entry, _CONNECTION_KEYS, "conn_id", where)
        if not entry.get("conn_type") and not entry.get("conn_uri"):
            raise SettingsFileError(f"{where}: conn_type (or conn_uri) is required")
        extra = entry.get("conn_extra")
        connections.append(
            ConnectionSpec(
                conn_id=entry["conn_id"],
                conn_type=entry.get("conn_type"),
                host=entry.get("conn_host"),
                schema=entry.get("conn_schema"),
                login=entry.get("conn_login"),
                password=entry.get("conn_password"),
                port=entry.get("conn_port"),
                extra=json.dumps(extra, sort_keys=True) if isinstance(extra, dict) else extra,
                uri=entry.get("conn_uri"),
                description=entry.get("conn_description"),
            )
        )
    pools = []
    for index, entry in enumerate(_entries(body.get("pools"), "airflow.pools")):
        where = f"airflow.pools[{index}]"
        _check_keys(entry, _POOL_KEYS, "pool_name", where)
        slots = entry.get("pool_slot")
        if slots is None or slots < -1:
            raise SettingsFileError(f"{where}.pool_slot: a whole number >= 0 (or -1 for unlimited) is required")
        pools.append(PoolSpec(entry["pool_name"], slots, entry.get("pool_description") or ""))
    variables = []
    for index, entry in enumerate(_entries(body.get("variables"), "airflow.variables")):
        where = f"airflow.variables[{index}]"
        _check_keys(entry, _VARIABLE_KEYS, "variable_name", where)
        value = entry.get("variable_value")
        text = value if isinstance(value, str) else json.dumps(value)
        variables.append(VariableSpec(entry["variable_name"], "" if value is None else text))

    _unique([c.conn_id for c in connections], "airflow.connections", "conn_id")
    _unique([p.name for p in pools], "airflow.pools", "pool_name")
    _unique([v.key for v in variables], "airflow.variables", "variable_name")
    return AirflowSettingsFile(tuple(connections), tuple(pools), tuple(variables))


def load(path: Path = DEFAULT_FILE) -> AirflowSettingsFile:
    import yaml

    try:
        document = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise SettingsFileError(f"{path}: not valid YAML: {error}") from None
    try:
        return parse(document)
    except SettingsFileError as error:
        raise SettingsFileError(f"{path}: {error}") from None


def apply(spec: AirflowSettingsFile) -> list[str]:
    """Create or update every connection, pool and variable; one transaction; return what changed."""
    # The ORM models (the Task SDK's Connection / Variable are read-only views for tasks).
    from airflow.models.connection import Connection
    from airflow.models.pool import Pool
    from airflow.models.variable import Variable
    from airflow.utils.session import create_session
    from sqlalchemy import select

    changes: list[str] = []
    with create_session() as session:
        for conn in spec.connections:
            wanted = Connection(
                conn_id=conn.conn_id,
                conn_type=conn.conn_type,
                description=conn.description,
                host=conn.host,
                login=conn.login,
                password=conn.password,
                schema=conn.schema,
                port=conn.port,
                extra=conn.extra,
                uri=conn.uri,
            )
            existing = session.scalar(select(Connection).where(Connection.conn_id == conn.conn_id))
            if existing is None:
                session.add(wanted)
                changes.append(f"connection {conn.conn_id}: created")
                continue
            fields = ("conn_type", "description", "host", "login", "password", "schema", "port", "extra")
            differing = [name for name in fields if getattr(existing, name) != getattr(wanted, name)]
            for name in differing:
                setattr(existing, name, getattr(wanted, name))
            # Never name the values: a password or a token in extra must not reach a log.
            changes.append(f"connection {conn.conn_id}: " + (f"updated {differing}" if differing else "unchanged"))
        for pool in spec.pools:
            before = session.scalar(select(Pool).where(Pool.pool == pool.name))
            state = "created" if before is None else "unchanged"
            if before is not None and (before.slots, before.description or "") != (pool.slots, pool.description):
                state = "updated"
            Pool.create_or_update_pool(pool.name, pool.slots, pool.description, False, session=session)
            changes.append(f"pool {pool.name}: {state} ({pool.slots} slot(s))")
        for variable in spec.variables:
            current = Variable.get(variable.key, default_var=None)
            if current != variable.value:
                Variable.set(variable.key, variable.value, session=session)
            state = "created" if current is None else ("updated" if current != variable.value else "unchanged")
            changes.append(f"variable {variable.key}: {state}")
    return changes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m include.continuous_training.airflow_settings", description=__doc__.split("\n")[0]
    )
    parser.add_argument("command", choices=["apply", "check"])
    parser.add_argument("--file", type=Path, default=DEFAULT_FILE)
    args = parser.parse_args(argv)
    try:
        spec = load(args.file)
    except (OSError, SettingsFileError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.command == "check":
        print(
            f"{args.file}: {len(spec.connections)} connection(s), {len(spec.pools)} pool(s), "
            f"{len(spec.variables)} variable(s): valid"
        )
        return 0
    for line in apply(spec):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
