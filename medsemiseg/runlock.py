"""A lock file that says which process owns a folder: one training per ``models/``, one runner per benchmark grid.

The file is created atomically (``O_EXCL``) and holds ``{"host", "pid", "since"}``. A lock whose process is gone on
this host (killed, rebooted) is taken over; one held by a live process, or by another host (which this one cannot
check), is :class:`LockHeld`, and the caller turns it into its own error message.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import socket
import time
from pathlib import Path

__all__ = ["LockHeld", "acquire", "release", "pid_alive", "holder"]


class LockHeld(RuntimeError):
    """The lock belongs to another live process (``holder``: its host, pid and start time)."""

    def __init__(self, path: Path, holder: dict) -> None:
        self.path, self.holder = path, holder
        super().__init__(f"{path} is held by pid {holder.get('pid')} on host {holder.get('host')}")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def holder(path: str | os.PathLike) -> dict | None:
    """The lock's content, or ``None`` when it is missing or unreadable."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def acquire(path: str | os.PathLike, take_own: bool = False) -> dict:
    """Create the lock for this process and return its content; :class:`LockHeld` if another live process has it.

    ``take_own``: a lock of this very process (left by an earlier run in a long-lived process, e.g. a notebook whose
    training failed) is taken over too.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    me = {"host": socket.gethostname(), "pid": os.getpid(), "since": _dt.datetime.now().isoformat(timespec="seconds")}
    for _ in range(20):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            other = holder(path)
            if other is None:  # being written this instant, or garbage: look again shortly
                time.sleep(0.05)
                other = holder(path)
                if other is None:
                    path.unlink(missing_ok=True)
                    continue
            pid, host = other.get("pid"), other.get("host")
            same_host = host == me["host"] and isinstance(pid, int)
            if same_host and (not pid_alive(pid) or (take_own and pid == me["pid"])):
                path.unlink(missing_ok=True)  # its process died (or it is our own leftover): take over
                continue
            raise LockHeld(path, other)
        with os.fdopen(fd, "w") as fh:
            json.dump(me, fh)
        return me
    raise RuntimeError(f"could not take the lock {path}")


def release(path: str | os.PathLike, me: dict) -> None:
    """Remove the lock if it is still ``me``'s."""
    path = Path(path)
    if (holder(path) or {}).get("pid") == me.get("pid") and (holder(path) or {}).get("since") == me.get("since"):
        path.unlink(missing_ok=True)
