"""Tests and benchmarks use the project's public API only; the shipped package never needs the local stack.

A test that reaches for ``obj._private()`` is telling us a public API is missing, and it breaks the
day the private name is renamed. The check reads the source (AST), so it cannot know whose object
``obj`` is: any ``obj._name`` outside the test's own classes counts, like ``from x import _name``
from a project module and ``getattr(obj, "_name")``. Dunder names and namedtuple's documented
``_asdict`` / ``_replace`` / ``_fields`` / ``_make`` are public.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import ROOT

PROJECT_PACKAGES = {"devtools", "include", "plugins", "dags", "tests", "benchmarks", "tools"}
SHIPPED = ("dags", "include", "plugins")
PUBLIC_UNDERSCORE = {"_asdict", "_replace", "_fields", "_field_defaults", "_make"}


def _private(name: str) -> bool:
    dunder = name.startswith("__") and name.endswith("__")
    return name.startswith("_") and not dunder and name not in PUBLIC_UNDERSCORE


class _PrivateUses(ast.NodeVisitor):
    def __init__(self) -> None:
        self.found: list[tuple[int, str]] = []
        self.class_depth = 0

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self.class_depth += 1
        self.generic_visit(node)
        self.class_depth -= 1

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = node.module or ""
        if node.level == 0 and module.split(".")[0] in PROJECT_PACKAGES:
            if any(_private(part) for part in module.split(".")):
                self.found.append((node.lineno, f"from {module} import …"))
            for alias in node.names:
                if _private(alias.name):
                    self.found.append((node.lineno, f"from {module} import {alias.name}"))
        self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            parts = alias.name.split(".")
            if parts[0] in PROJECT_PACKAGES and any(_private(part) for part in parts):
                self.found.append((node.lineno, f"import {alias.name}"))
        self.generic_visit(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        own = isinstance(node.value, ast.Name) and node.value.id in ("self", "cls") and self.class_depth > 0
        if _private(node.attr) and not own:
            self.found.append((node.lineno, f"{ast.unparse(node.value)}.{node.attr}"))
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        if (
            isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "setattr", "hasattr", "delattr")
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
            and _private(node.args[1].value)
        ):
            self.found.append((node.lineno, f"{node.func.id}(…, {node.args[1].value!r})"))
        self.generic_visit(node)


def private_uses(source: str) -> list[tuple[int, str]]:
    """(line, what) for every use of a private name of another module or object in ``source``."""
    visitor = _PrivateUses()
    visitor.visit(ast.parse(source))
    return visitor.found


def _python_files(*folders: str) -> list[Path]:
    return sorted(path for folder in folders for path in (ROOT / folder).rglob("*.py"))


def test_the_check_catches_private_names_and_allows_a_tests_own():
    offending = """
from include.continuous_training.deployment import _http
from devtools import _internal
import devtools._impl
demo._wait_run("ingest_new_data", run_id)
payload = api._send("GET", "/api/v2/dags")
hidden = getattr(target, "_client")()
def helper(self):
    return self._token
"""
    assert [what for _, what in private_uses(offending)] == [
        "from include.continuous_training.deployment import _http",
        "from devtools import _internal",
        "import devtools._impl",
        "demo._wait_run",
        "api._send",
        "getattr(…, '_client')",
        "self._token",  # `self` outside a class of the test: someone else's object
    ]
    allowed = """
class Proxy:
    def __init__(self):
        self._lock = None
        type(self).__name__
    def close(self):
        return self._lock, cls._registry if False else None
record = point._replace(x=1)._asdict()
def _local_helper():
    return _local_helper.__doc__
"""
    assert private_uses(allowed) == []


@pytest.mark.parametrize("path", _python_files("tests", "benchmarks"), ids=lambda p: str(p.relative_to(ROOT)))
def test_tests_and_benchmarks_use_public_names_only(path):
    found = private_uses(path.read_text())
    assert not found, f"{path.relative_to(ROOT)} uses private names (make them public, or use a public API): " + (
        "; ".join(f"line {line}: {what}" for line, what in found)
    )


def test_the_shipped_package_never_imports_the_local_stack():
    """``devtools/`` is not in the image (Dockerfile) nor in a user's Airflow: nothing shipped may need it."""
    importers = []
    for path in _python_files(*SHIPPED):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                modules = [node.module or ""]
            else:
                continue
            if any(module.split(".")[0] == "devtools" for module in modules):
                importers.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert importers == []
    assert list((ROOT / "devtools").glob("*.py")), "the check above looks at nothing"
