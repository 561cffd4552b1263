"""The README's runnable blocks: a fenced block found by the marker comment right above it."""

from __future__ import annotations

from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
DEV_PATH_MARKER = "<!-- dev path: run as written, from a fresh clone, by tests/e2e/test_dev_path.py -->"


def fenced_block_after(marker: str, text: str) -> str:
    """The body of the first fenced code block after the line ``marker`` (nothing but blank lines between).

    Raises:
        AssertionError: the marker is missing, or no fenced block follows it.
    """
    lines = text.splitlines()
    assert marker in lines, f"README: the marker {marker!r} is missing"
    rest = lines[lines.index(marker) + 1 :]
    while rest and not rest[0].strip():
        rest.pop(0)
    assert (rest[0] if rest else "").startswith("```"), f"README: no fenced block right after {marker!r}"
    end = next((i for i, line in enumerate(rest[1:], 1) if line.startswith("```")), None)
    assert end is not None, f"README: the block after {marker!r} is not closed"
    return "\n".join(rest[1:end]) + "\n"


def commands(block: str) -> list[str]:
    """The block's command lines, each without its trailing ``# comment``, blank lines dropped."""
    return [line.split("  #", 1)[0].strip() for line in block.splitlines() if line.strip()]


def dev_path() -> str:
    """The README's development path: the block under :data:`DEV_PATH_MARKER`."""
    return fenced_block_after(DEV_PATH_MARKER, README.read_text())
