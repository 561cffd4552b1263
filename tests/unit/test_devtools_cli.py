"""The command lines the local stack's docstrings advertise are the ones argparse accepts."""

from __future__ import annotations

import argparse
import importlib
import re
import shlex

import pytest

MODULES = ("devtools.demo", "devtools.traffic", "devtools.datasets", "devtools.services")
# Modules whose docstring gives a synopsis (``[--flag]``): it must list every option, not only valid ones.
SYNOPSES = ("devtools.demo", "devtools.traffic")


def usage_lines(doc: str, module: str) -> list[list[str]]:
    """The arguments of every ``python -m <module> …`` line of ``doc``, brackets dropped, continuations joined."""
    joined = re.sub(r"\\\n\s*", " ", doc)
    prefix = f"python -m {module} "
    return [
        shlex.split(line.strip().removeprefix(prefix).replace("[", " ").replace("]", " "))
        for line in joined.splitlines()
        if line.strip().startswith(prefix)
    ]


FLAG = r"(?<![\w-])--[a-z][a-z0-9-]*"


def options(parser: argparse.ArgumentParser) -> set[str]:
    """Every long option of ``parser`` (its usage line lists them all), ``--help`` aside."""
    return set(re.findall(FLAG, parser.format_usage())) - {"--help"}


def problems(doc: str, module: str, parser: argparse.ArgumentParser, synopsis: bool) -> list[str]:
    """What is wrong between ``doc`` and ``parser``: a usage line argparse rejects, an unknown flag, a missing one."""
    found = []
    for args in usage_lines(doc, module):
        try:
            parser.parse_args(args)
        except SystemExit:
            found.append(f"argparse rejects `{shlex.join(args)}`")
    flags = set(re.findall(FLAG, doc))
    found += [f"{flag} is not an option" for flag in sorted(flags - options(parser))]
    if synopsis:
        found += [f"{flag} is missing from the docstring" for flag in sorted(options(parser) - flags)]
    return found


@pytest.mark.parametrize("module", MODULES)
def test_the_docstring_usage_matches_the_parser(module):
    imported = importlib.import_module(module)
    doc = imported.__doc__ or ""
    assert problems(doc, module, imported.build_parser(), module in SYNOPSES) == []
    if module in SYNOPSES:
        assert usage_lines(doc, module), f"{module}: no usage line found"


def test_a_flag_the_parser_lacks_is_caught():
    from devtools.demo import build_parser

    doc = "Usage::\n\n    python -m devtools.demo [--exit] [--home .demo] [--keep-going]\n"
    found = problems(doc, "devtools.demo", build_parser(), synopsis=True)
    assert "--keep-going is not an option" in found
    assert any(message.startswith("argparse rejects") for message in found)
    assert problems("python -m devtools.demo [--exit]\n", "devtools.demo", build_parser(), True) == [
        "--home is missing from the docstring"
    ]


def test_services_up_prints_the_commands_the_readme_runs_next(monkeypatch):
    from devtools.services import DEFAULT_STATE_DIR, PROJECT_ROOT, next_steps
    from tests.readme import commands, dev_path

    monkeypatch.chdir(PROJECT_ROOT)  # the README runs the path from the project root
    readme = commands(dev_path())
    assert readme[0] == "make services-up"
    assert next_steps(DEFAULT_STATE_DIR / "env.sh") == readme[1:4]
