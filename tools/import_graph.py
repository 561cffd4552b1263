"""Print the project's import graph: which project modules each module imports, and when.

    python -m tools.import_graph            # every module under dags/, include/, plugins/, devtools/
    python -m tools.import_graph --heavy    # also: the heavy libraries each module loads when imported

``top`` imports run when the module is imported; ``lazy`` imports run inside a function body (a
task, or a helper called at run time). The DAG files import only what they need at parse time, and
the endpoint must not reach the trainer at all: ``--check`` fails when it does.
"""

from __future__ import annotations

import argparse
import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("dags", "include", "plugins", "devtools")
HEAVY = ("pandas", "numpy", "xgboost", "sklearn", "mlflow", "great_expectations", "evidently", "pyarrow", "scipy")
# Modules that must never import each other, even lazily: (importer prefix, forbidden module).
FORBIDDEN = (("include.continuous_training.serving", "include.continuous_training.training"),)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[0] in {"dags", "plugins"}:  # Airflow puts these folders themselves on sys.path
        parts = parts[1:]
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "__pycache__" not in path.parts:
                found[module_name(path)] = path
    return found


def imports_of(path: Path, known: set[str]) -> dict[str, set[str]]:
    """Project modules imported by ``path``: ``top`` (at import) and ``lazy`` (in a function body)."""
    tree = ast.parse(path.read_text())
    result: dict[str, set[str]] = {"top": set(), "lazy": set()}

    def visit(node: ast.AST, lazy: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue  # annotations only, never executed
            inner = lazy or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            names: list[str] = []
            if isinstance(child, ast.Import):
                names = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                names = [child.module] + [f"{child.module}.{alias.name}" for alias in child.names]
            for name in names:
                if name in known:
                    result["lazy" if inner else "top"].add(name)
            visit(child, inner)

    visit(tree, lazy=False)
    result["lazy"] -= result["top"]
    return result


def heavy_loaded(module: str) -> list[str]:
    """Heavy libraries present in ``sys.modules`` after importing ``module`` in a fresh interpreter."""
    probe = (
        f"import importlib, json, sys; importlib.import_module({module!r}); "
        f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({list(HEAVY)!r}))))"
    )
    paths = [str(ROOT), str(ROOT / "dags"), str(ROOT / "plugins")]
    env = {"PYTHONPATH": ":".join(paths), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=120)
    if done.returncode != 0:
        return [f"<import failed: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else '?'}>"]
    return list(json.loads(done.stdout.strip().splitlines()[-1]))


def closure(start: str, graph: dict[str, dict[str, set[str]]]) -> set[str]:
    """Every project module ``start`` can reach through top-level or lazy imports."""
    seen, todo = set(), [start]
    while todo:
        current = todo.pop()
        for name in graph.get(current, {}).get("top", set()) | graph.get(current, {}).get("lazy", set()):
            if name not in seen:
                seen.add(name)
                todo.append(name)
    return seen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--heavy", action="store_true", help="also import each module and list heavy libraries")
    parser.add_argument("--check", action="store_true", help="fail when a forbidden import path exists")
    args = parser.parse_args(argv)
    modules = project_modules()
    known = set(modules)
    graph = {name: imports_of(path, known) for name, path in modules.items()}
    for name in sorted(graph):
        edges = graph[name]
        line = f"{name}\n    top:  {', '.join(sorted(edges['top'])) or '-'}"
        line += f"\n    lazy: {', '.join(sorted(edges['lazy'])) or '-'}"
        if args.heavy:
            line += f"\n    heavy at import: {', '.join(heavy_loaded(name)) or '-'}"
        print(line)
    problems = [
        f"{importer} reaches {forbidden}"
        for importer in sorted(graph)
        for prefix, forbidden in FORBIDDEN
        if importer.startswith(prefix) and forbidden in closure(importer, graph)
    ]
    for problem in problems:
        print(f"FORBIDDEN: {problem}")
    return 1 if args.check and problems else 0


if __name__ == "__main__":
    sys.exit(main())
