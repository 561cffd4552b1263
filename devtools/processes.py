"""Process groups: every server the local stack starts leads a group of its own.

A server's workers (uvicorn's, gunicorn's, the scheduler's task processes) join its group, so a
signal to the group reaches them all, and "gone" means no member of the group is left, not only
the process we started. Linux only (``/proc``), like the rest of the local stack.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping
from contextlib import suppress
from pathlib import Path


def spawn_group(argv: list[str], env: Mapping[str, str], cwd: Path, log_path: Path) -> subprocess.Popen[bytes]:
    """Start ``argv`` as the leader of a new process group, output appended to ``log_path``, no stdin."""
    with log_path.open("ab") as log:
        return subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,
        )


def signal_group(pid: int, sig: signal.Signals) -> None:
    """Send ``sig`` to the process group led by ``pid``; a group that is gone already is fine."""
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def group_alive(pid: int) -> bool:
    """True while any process of the group led by ``pid`` runs (a zombie leader alone does not count)."""
    try:
        os.killpg(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    # A zombie leader still "exists" for killpg; a group of nothing but an unreaped leader is gone.
    return not _is_zombie(pid) or _has_members(pid)


def stop_groups(pids: Iterable[int], grace: float = 10.0) -> None:
    """SIGTERM every group, SIGKILL what still runs after ``grace`` seconds, reap leaders that are ours."""
    leaders = list(pids)
    for pid in leaders:
        signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for pid in leaders:
        while group_alive(pid) and time.monotonic() < deadline:
            reap(pid)
            time.sleep(0.1)
    for pid in leaders:
        if group_alive(pid):
            kill_group(pid)
        reap(pid)


def kill_group(pid: int, timeout: float = 10.0) -> None:
    """SIGKILL the group at once (a crash, not a shutdown) and wait up to ``timeout`` s until it is gone."""
    signal_group(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while group_alive(pid) and time.monotonic() < deadline:
        reap(pid)
        time.sleep(0.1)
    reap(pid)


def reap(pid: int) -> None:
    """Collect the exit status of ``pid`` if it is our child and has exited; never blocks."""
    with suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def _has_members(pgid: int) -> bool:
    return any(member != pgid for member in group_members(pgid))


def group_members(pgid: int) -> list[int]:
    """The pids of the running (not zombie) processes in group ``pgid``, the leader included."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members
