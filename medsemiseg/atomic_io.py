"""Files written whole or not at all, and a full disk that names the file and the space it needs.

Every file the commands write -- checkpoints and ``model.pt`` (:mod:`medsemiseg.checkpoint_io`), ``run.json``,
label maps, evaluation reports, datalists -- goes through :func:`atomic_write`: the data are written to
``.<name>.<pid>.<8 hex digits>.partial`` in the target's folder (the same file system, so the rename is atomic),
flushed and ``fsync``\\ ed, and renamed over the target; the folder is ``fsync``\\ ed so the rename survives a power
cut. The target is therefore always either absent, the previous complete file or the new complete file, and a
failed write removes its temporary file (a *killed* one leaves it behind, never under the target's name;
:func:`medsemiseg.checkpoint_io.remove_partial_writes` clears those in a training's ``models/``).

A write that fails because the disk (or the user's quota) is full raises :class:`DiskFullError`, whose message
names the file, the space it needs, the space free there and the fix, instead of PyTorch's or the C library's
"[Errno 28] No space left on device".
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

__all__ = [
    "DiskFullError",
    "atomic_copy",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "disk_full_error",
    "is_disk_full",
    "partial_name",
]

#: the ``errno`` values of a full disk and of an exhausted quota
_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


class DiskFullError(OSError):
    """A write failed for lack of space; the message names the file, the space it needs and the fix.

    ``errno`` is ``ENOSPC`` (an ``except OSError`` still catches it); ``path``, ``needed`` (bytes, or ``None`` when
    unknown) and ``free`` (bytes free on that file system when it failed) say what happened."""

    def __init__(self, path: Path, needed: int | None, free: int | None, kept: bool, block: int = 1) -> None:
        self.path, self.needed, self.free = Path(path), needed, free
        need = f"it needs {_size(needed)}" if needed is not None else "its size is unknown"
        have = f", {_size(free)} are free there" if free is not None else ""
        block = max(int(block), 1)  # the disk allocates whole blocks: the file takes at least one
        on_disk = -(-needed // block) * block if needed is not None else None
        more = (f"free at least {_size(max(on_disk - (free or 0), block))} on that disk"
                if on_disk is not None else "free space on that disk")
        before = f"; the previous {self.path.name} is intact" if kept else "; nothing was written under that name"
        self.message = (
            f"no space left on the device of {self.path.parent} to write {self.path.name} ({need}{have}{before}): "
            f"{more} (or write to another disk, e.g. --output_dir) and run the command again."
        )
        super().__init__(errno.ENOSPC, self.message, str(path))

    def __str__(self) -> str:
        return self.message

    def __reduce__(self):  # picklable across processes (DataLoader workers, torchrun)
        return (_rebuild_disk_full, (str(self.path), self.needed, self.free, self.message))


def _rebuild_disk_full(path: str, needed: int | None, free: int | None, message: str) -> DiskFullError:
    e = DiskFullError(Path(path), needed, free, kept=False)
    e.message = message
    return e


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} bytes"


def is_disk_full(exc: BaseException) -> bool:
    """True when ``exc`` or an exception behind it is a full disk or quota (``ENOSPC`` / ``EDQUOT``), also when a
    library wrapped it (PyTorch's ``RuntimeError: [enforce fail at inline_container.cc] ... file write failed``
    raised from the ``OSError``)."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in _FULL:
            return True
        if "No space left on device" in str(e) or "Disk quota exceeded" in str(e):
            return True
        e = e.__cause__ or e.__context__
    return False


def _free_bytes(folder: Path) -> int | None:
    try:
        return int(shutil.disk_usage(folder).free)
    except OSError:
        return None


class _Counter(io.RawIOBase):
    """A write-only sink that only counts: how large a file a writer produces, without the disk."""

    def __init__(self) -> None:
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        n = memoryview(b).nbytes
        self.size += n
        return n


def disk_full_error(path: str | os.PathLike, write: Callable[[IO[bytes]], Any] | None = None,
                    needed: int | None = None, kept: bool = False) -> DiskFullError:
    """The :class:`DiskFullError` for ``path``; ``needed`` (bytes) is measured by running ``write`` into a counting
    sink when it is not given (``None`` when that fails too)."""
    path = Path(path)
    if needed is None and write is not None:
        counter = _Counter()
        try:
            write(counter)
            needed = counter.size
        except Exception:  # noqa: BLE001 - the size is a courtesy; the error itself is the full disk
            needed = None
    try:
        block = int(os.statvfs(path.parent).f_frsize)
    except (OSError, AttributeError):  # no statvfs (Windows)
        block = 1
    return DiskFullError(path, needed, _free_bytes(path.parent), kept, block)


def partial_name(path: str | os.PathLike) -> Path:
    """A fresh temporary name beside ``path``: ``.<name>.<pid>.<8 hex digits>.partial``."""
    path = Path(path)
    return path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.partial"


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX); where folders cannot be opened (Windows) the rename stands as is."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> Path:
    """Call ``write(f)`` with a new binary file beside ``path`` and rename it over ``path`` once complete.

    Any failure (``ENOSPC``, an exception in ``write``, ``KeyboardInterrupt``) removes the temporary file and
    leaves ``path`` as it was; a full disk or quota is raised as :class:`DiskFullError` (the module docstring). The
    file gets the permissions ``open(path, "wb")`` would give it (``0o666`` less the umask), not ``tempfile``'s
    owner-only ones. Returns ``path``.
    """
    path = Path(path)
    tmp = partial_name(path)
    try:
        with open(tmp, "xb") as f:  # a new file, with the permissions open(path, "wb") would give path
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(e, Exception) and not isinstance(e, DiskFullError) and is_disk_full(e):
            raise disk_full_error(path, write, kept=path.exists()) from e
        raise
    _fsync_folder(path.parent)
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """:func:`atomic_write` of ``data``."""
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """:func:`atomic_write` of ``text`` (``encoding``, newlines as given)."""
    return atomic_write_bytes(path, text.encode(encoding))


def atomic_copy(src: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """``shutil.copy2(src, dest)`` whole or not at all: the bytes through :func:`atomic_write`, then ``src``'s
    permission bits and times onto ``dest``. Returns ``dest``."""

    def copy(f: IO[bytes]) -> None:
        with open(src, "rb") as s:
            shutil.copyfileobj(s, f)

    atomic_write(dest, copy)
    shutil.copystat(src, dest)
    return Path(dest)
