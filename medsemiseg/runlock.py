"""A lock file that says which process owns a folder: one training per ``models/``, one runner per benchmark grid.

The file is created atomically (``O_EXCL``) and holds ``{"host", "pid", "since"}``, the holder's process start time
where the system tells it (``"pid_start"``, Linux), and, for a holder that keeps a heartbeat (:class:`Heartbeat`,
the trainings), ``"heartbeat_s"`` and ``"stale_after_s"``: the holder touches the file every ``heartbeat_s``
seconds, so its modification time says when the holder was last alive.

A lock is taken over (with a warning naming its holder and why) when

- its holder declared a heartbeat and the file is older than its ``stale_after_s`` (default
  :data:`STALE_AFTER_S`, 5 minutes): the holder is gone, whatever its host -- a container restarted under another
  host name, a machine that went down;
- its holder is on this host and its pid is gone, or that pid now belongs to another process (a pid reused after a
  restart: its start time differs from the one recorded);
- it is this very process's own lock and ``take_own`` is set.

Otherwise -- a live process on this host, or another host's holder without a heartbeat, or with a fresh one -- it is
:class:`LockHeld`, and the caller turns it into its own error message. Not guaranteed: a holder suspended (``SIGSTOP``,
a laptop asleep) for longer than ``stale_after_s`` loses its lock to the next run.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import socket
import threading
import time
from pathlib import Path

__all__ = ["HEARTBEAT_S", "STALE_AFTER_S", "Heartbeat", "LockHeld", "acquire", "holder", "pid_alive", "release",
           "stale_reason"]

logger = logging.getLogger(__name__)

#: how often a :class:`Heartbeat` touches its lock (seconds)
HEARTBEAT_S = 30.0
#: a lock with a heartbeat whose file is older than this (seconds) belongs to a holder that is gone
STALE_AFTER_S = 300.0


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


def _pid_start(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (``/proc/<pid>/stat`` field 22), or ``None`` where the
    system does not say (not Linux, no such process)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat[stat.rindex(")") + 2:].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def holder(path: str | os.PathLike) -> dict | None:
    """The lock's content, or ``None`` when it is missing or unreadable."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def stale_reason(path: str | os.PathLike, other: dict, now: float | None = None) -> str | None:
    """Why the lock at ``path`` (content ``other``) belongs to a holder that is gone, or ``None`` when it may be alive
    (the module docstring's rules, except ``take_own``)."""
    pid, host = other.get("pid"), other.get("host")
    if isinstance(other.get("heartbeat_s"), (int, float)):
        limit = float(other.get("stale_after_s") or STALE_AFTER_S)
        try:
            age = (time.time() if now is None else now) - Path(path).stat().st_mtime
        except OSError:
            age = 0.0
        if age > limit:
            return f"its heartbeat stopped {age:.0f} s ago (the limit is {limit:.0f} s)"
    if host == socket.gethostname() and isinstance(pid, int):
        if not pid_alive(pid):
            return f"pid {pid} no longer runs on this host"
        recorded, current = other.get("pid_start"), _pid_start(pid)
        if isinstance(recorded, int) and current is not None and current != recorded:
            return f"pid {pid} now belongs to another process (started later: the pid was reused)"
    return None


def acquire(path: str | os.PathLike, take_own: bool = False, heartbeat_s: float | None = None,
            stale_after_s: float = STALE_AFTER_S) -> dict:
    """Create the lock for this process and return its content; :class:`LockHeld` if another live process has it.

    ``take_own``: a lock of this very process (left by an earlier run in a long-lived process, e.g. a notebook whose
    training failed) is taken over too. ``heartbeat_s``: this holder keeps a :class:`Heartbeat` on the lock, so a
    later run may take it over once the file is older than ``stale_after_s`` (recorded in the lock). A stale lock
    taken over is logged with its holder and the reason.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    me: dict = {"host": socket.gethostname(), "pid": os.getpid(),
                "since": _dt.datetime.now().isoformat(timespec="seconds")}
    start = _pid_start(os.getpid())
    if start is not None:
        me["pid_start"] = start
    if heartbeat_s is not None:
        me.update(heartbeat_s=float(heartbeat_s), stale_after_s=float(stale_after_s))
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
            own = take_own and other.get("pid") == me["pid"] and other.get("host") == me["host"]
            reason = None if own else stale_reason(path, other)
            if own or reason is not None:
                path.unlink(missing_ok=True)
                if reason is not None:
                    logger.warning(
                        f"took over the lock {path} of pid {other.get('pid')} on host {other.get('host')} (since "
                        f"{other.get('since')}): {reason}, so that run is gone."
                    )
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


class Heartbeat:
    """Touch the lock ``path`` every ``me["heartbeat_s"]`` seconds from a daemon thread while it is ``me``'s.

    :meth:`start` once the lock is taken, :meth:`stop` (idempotent) before releasing it. A lock found taken over by
    another process (this one was suspended past the limit) stops the heartbeat with a warning."""

    def __init__(self, path: str | os.PathLike, me: dict) -> None:
        self.path, self.me = Path(path), me
        self.interval = float(me.get("heartbeat_s") or HEARTBEAT_S)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat {self.path.name}", daemon=True)

    def start(self) -> Heartbeat:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def beat(self) -> bool:
        """Touch the lock now; ``False`` when it is no longer ``me``'s."""
        current = holder(self.path) or {}
        if current.get("pid") != self.me.get("pid") or current.get("since") != self.me.get("since"):
            return False
        try:
            os.utime(self.path)
        except OSError:
            return False
        return True

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            if not self.beat():
                mine = (holder(self.path) or {}).get("pid") == self.me.get("pid")  # this process's next run took it
                if not self._stop.is_set() and not mine:
                    logger.warning(f"the lock {self.path} is no longer this process's (taken over after its "
                                   "heartbeat stopped?); another run may now write to the same folder.")
                return
