"""Checkpoint files that a kill or a full disk cannot destroy, and resumption that skips a damaged one.

MONAI's ``CheckpointSaver`` (through ignite's ``Checkpoint``) deletes the previous file *before* it writes the next
one, and writes in place: a process killed, or a disk filled, in between leaves a 0-byte or truncated
``checkpoint_epoch=K.pt`` with the previous one already gone, and the best-model rewrite loses ``model.pt``
altogether. Here:

- :func:`atomic_save` writes a temporary file in the target's folder, flushes and ``fsync``\\ s it, and renames it
  over the target (``os.replace``, atomic on one file system): the target is always either the old complete file or
  the new complete file (:func:`medsemiseg.atomic_io.atomic_write`; a full disk names the file and the space it
  needs). A failed write removes its temporary file; a killed one leaves it behind, named
  ``.<name>.<pid>.<random>.partial`` (never mistaken for a checkpoint), and :func:`remove_partial_writes` clears it
  when the next training in that folder starts.
- :class:`AtomicDiskSaver` is ignite's ``DiskSaver`` writing that way, and removing the file a new one supersedes
  only once the new one is complete.
- :class:`AtomicCheckpointSaver` is MONAI's ``CheckpointSaver`` (same arguments) with its savers replaced by
  :class:`AtomicDiskSaver`: the bundles' ``validate#best_model_saver`` (``models/model.pt``) and the training-state
  saver of :class:`medsemiseg.bundle.resume.TrainCheckpointer`.
- :func:`keep_copy` keeps an earlier run's ``model.pt`` as a dated copy before a new run replaces it.
- :func:`read_checkpoint` loads a checkpoint or says in words why it cannot (0 bytes, truncated, damaged -- a record
  failing the CRC-32 stored with it, which PyTorch never checks --, not a torch file, not a plain weights file)
  instead of PyTorch's "mmap can only be used with files saved with ...", and :func:`newest_loadable_checkpoint`
  is what ``--resume true`` resumes from: the newest ``checkpoint_epoch=K.pt`` that loads, with the newer ones it
  skipped and why.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import re
import shutil
import time
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import ignite.distributed as idist
import torch
from ignite.handlers import DiskSaver
from monai.handlers import CheckpointSaver

from medsemiseg.atomic_io import atomic_write

__all__ = [
    "atomic_save",
    "remove_partial_writes",
    "keep_copy",
    "AtomicDiskSaver",
    "AtomicCheckpointSaver",
    "CheckpointReadError",
    "read_checkpoint",
    "checkpoint_files",
    "LoadableCheckpoint",
    "newest_loadable_checkpoint",
]

logger = logging.getLogger(__name__)

#: the training-state files a ``CheckpointSaver`` writes (``checkpoint_epoch=K.pt``, ``checkpoint_iteration=K.pt``)
CHECKPOINT_RE = re.compile(r"^checkpoint.*?(epoch|iteration)=(\d+)\.pt$")
#: a temporary file of :func:`atomic_save`: ``.<target name>.<pid>.<8 hex digits>.partial``
PARTIAL_RE = re.compile(r"^\.(?P<target>.+)\.(?P<pid>\d+)\.[0-9a-f]{8}\.partial$")


def atomic_save(obj: Any, path: str | os.PathLike, save: Callable[..., Any] = torch.save, **kwargs: Any) -> None:
    """``save(obj, file, **kwargs)`` into ``path`` so that ``path`` is never left incomplete.

    :func:`medsemiseg.atomic_io.atomic_write`: the data go to ``.<name>.<pid>.<random>.partial`` in the same folder,
    are flushed and ``fsync``\\ ed, and the file is renamed over ``path``. Any failure removes the temporary file and
    leaves ``path`` as it was; a full disk is a :class:`~medsemiseg.atomic_io.DiskFullError` naming ``path`` and the
    size of the checkpoint. The file gets the permissions ``open(path, "wb")`` would give it, not ``tempfile``'s
    owner-only ones (which is why MONAI turns ignite's own atomic writing off).
    """
    atomic_write(path, lambda f: save(obj, f, **kwargs))


def remove_partial_writes(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that killed :func:`atomic_save` calls left in ``folder`` (logged), and return them.

    Only for a folder no other process writes to: :class:`~medsemiseg.bundle.resume.TrainCheckpointer` calls it
    when a training starts, holding the folder's training lock."""
    d = Path(folder)
    if not d.is_dir():
        return []
    removed = []
    for p in sorted(d.iterdir()):
        m = PARTIAL_RE.match(p.name)
        if m and p.is_file():
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
                removed.append(p)
                logger.info(f"removed {p.name}: an unfinished write of {m.group('target')} by a process that was "
                            f"stopped while writing it (pid {m.group('pid')}); {m.group('target')} itself is intact.")
    return removed


def _same_content(a: Path, b: Path, chunk: int = 1 << 20) -> bool:
    if a.stat().st_size != b.stat().st_size:
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(chunk), fb.read(chunk)
            if x != y:
                return False
            if not x:
                return True


def keep_copy(path: str | os.PathLike) -> Path:
    """Copy ``path`` to ``<stem>.<its mtime, YYYYmmdd-HHMMSS>[.n]<suffix>`` beside it, and return that name.

    A copy, not a hard link, which a later in-place ``torch.save(..., path)`` (a user's script) would overwrite
    along with ``path``; written like :func:`atomic_save`, so a kill mid-copy leaves no incomplete copy. A copy with
    the same content under that name already (a run that failed before replacing ``path``, started again): nothing
    is added. The name follows the evaluation reports' (:func:`medsemiseg.metrics.write_report`)."""
    path = Path(path)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(path.stat().st_mtime))
    target, n = path.with_name(f"{path.stem}.{stamp}{path.suffix}"), 1
    while target.exists():
        if _same_content(target, path):
            return target
        target, n = path.with_name(f"{path.stem}.{stamp}.{n}{path.suffix}"), n + 1
    with open(path, "rb") as src:
        atomic_save(src, target, lambda f_in, f_out: shutil.copyfileobj(f_in, f_out))
    shutil.copystat(path, target)
    return target


class AtomicDiskSaver(DiskSaver):
    """ignite's ``DiskSaver`` that writes with :func:`atomic_save` and defers removals until the next save is complete.

    ignite's ``Checkpoint`` calls ``remove(old)`` and *then* saves the new file: with n_saved files kept, the oldest
    would go before its successor exists, and with a fixed name (MONAI's ``key_metric_filename="model.pt"``) the only
    copy would. Here ``remove`` only notes the name; the noted files are deleted after the next save has been renamed
    into place (a name saved again is simply replaced). A save that fails leaves them, and the previous files, on
    disk.

    Args:
        dirname: folder of the files (created).
        filename: a fixed name for every save, as MONAI's ``CheckpointSaver`` uses for ``key_metric_filename`` /
            ``final_filename``; ``None``: the name ignite's ``Checkpoint`` gives.
        kwargs: ``DiskSaver``'s (``save_on_rank``, ``torch.save`` keyword arguments...), except ``atomic`` and
            ``require_empty`` (always atomic; files already in the folder are expected).
    """

    def __init__(self, dirname: str | os.PathLike, filename: str | None = None, **kwargs: Any) -> None:
        super().__init__(dirname=dirname, atomic=True, require_empty=False, **kwargs)
        self.filename = filename
        self._superseded: list[str] = []

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        if self.filename is not None:
            filename = self.filename
        super().__call__(checkpoint, filename, metadata)
        superseded, self._superseded = self._superseded, []
        for name in superseded:
            if name != filename:
                with contextlib.suppress(FileNotFoundError):
                    (self.dirname / name).unlink()

    def _save_func(self, checkpoint: Mapping, path: Path, func: Callable) -> None:
        atomic_save(checkpoint, path, func, **self.kwargs)

    def remove(self, filename: str) -> None:
        if self.filename is not None:
            filename = self.filename
        if idist.get_rank() == self.save_on_rank:
            self._superseded.append(filename)


class AtomicCheckpointSaver(CheckpointSaver):
    """MONAI's ``CheckpointSaver`` (same arguments, same files) whose files are written atomically.

    Each of its ignite ``Checkpoint`` objects (final, key-metric, interval) gets an :class:`AtomicDiskSaver` with
    the same folder and fixed file name instead of MONAI's in-place ``DiskSaver``: a kill or a full disk while
    ``model.pt`` or ``checkpoint_epoch=K.pt`` is written leaves the previous file complete, and a superseded file is
    deleted only after its successor is. Use it wherever a config names ``CheckpointSaver``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for name in ("_final_checkpoint", "_key_metric_checkpoint", "_interval_checkpoint"):
            if not hasattr(self, name):  # a MONAI version that keeps its savers elsewhere must fail here, not write
                raise RuntimeError(f"AtomicCheckpointSaver: MONAI's CheckpointSaver has no {name} any more; "
                                   "medsemiseg/checkpoint_io.py needs updating for this MONAI version.")
            checkpoint = getattr(self, name)
            if checkpoint is not None:
                fixed = getattr(checkpoint.save_handler, "filename", None)
                checkpoint.save_handler = AtomicDiskSaver(self.save_dir, filename=fixed)


# ----------------------------------------------------------------------------------------------------- reading


class CheckpointReadError(ValueError):
    """A checkpoint file cannot be loaded; ``reason`` says why in words (0 bytes, truncated, damaged, not a torch file,
    not a plain weights file)."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path, self.reason = Path(path), reason
        super().__init__(f"{path}: {reason}")


#: the first bytes of a file ``torch.save`` wrote: a zip archive (PyTorch >= 1.6), or a pickle (the legacy format)
_ZIP_MAGIC = b"PK\x03\x04"


def read_checkpoint(path: str | os.PathLike, mmap: bool = True, verify: bool = True) -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)``, or a :class:`CheckpointReadError` saying why not.

    With ``mmap`` (default) the tensors are memory-mapped, not read: what the file holds (its keys, shapes) is known
    at the cost of its index. A file in PyTorch's legacy format (which cannot be memory-mapped) is read whole.

    With ``verify`` (default) every record of the archive is checked against its CRC-32 first
    (:func:`_verify_checksums`, one read of the file): bytes changed after the write are "damaged", not loaded. A
    file that asks to run Python objects when unpickled (not a plain weights file) is refused as such.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as e:
        raise CheckpointReadError(path, f"cannot be read ({e.strerror or e})") from e
    if size == 0:
        raise CheckpointReadError(path, "empty (0 bytes): its write was interrupted (a killed run or a full disk) or "
                                        "it was copied incompletely")
    is_zip = head == _ZIP_MAGIC
    if is_zip and not zipfile.is_zipfile(path):
        raise CheckpointReadError(
            path, f"truncated ({size} bytes, the end of the torch archive is missing): its write or copy was cut off"
        )
    if not is_zip and head[:1] != b"\x80":
        raise CheckpointReadError(path, f"not a PyTorch checkpoint (it starts with {head!r}, not as torch.save writes)")
    if is_zip and verify:
        _verify_checksums(path)
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True, mmap=mmap and is_zip)
    except pickle.UnpicklingError as e:
        if "weights_only" in str(e) or "Weights only" in str(e):
            raise CheckpointReadError(path, _not_plain_weights(e)) from None
        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise CheckpointReadError(path, f"damaged, PyTorch cannot read it ({type(e).__name__}: {first})") from e
    except Exception as e:  # noqa: BLE001 - every way a damaged torch file fails to load ends here
        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise CheckpointReadError(path, f"damaged, PyTorch cannot read it ({type(e).__name__}: {first})") from e


def _verify_checksums(path: Path) -> None:
    """Check every record of a ``torch.save`` archive against the CRC-32 the writer stored with it.

    PyTorch itself never checks them: a file whose bytes were flipped later (a disk or copy error) loads with
    wrong weights and training goes on. A mismatch, or an archive index that no longer parses, is a
    :class:`CheckpointReadError` saying which record is damaged."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, RuntimeError) as e:
        raise CheckpointReadError(path, f"damaged (its archive index cannot be read: {e}): a disk or copy error") \
            from e
    if bad is not None:
        raise CheckpointReadError(
            path, f"damaged (its record {bad} fails its CRC-32 checksum: bytes changed after it was written, a disk "
                  "or copy error)"
        )


def _not_plain_weights(e: BaseException) -> str:
    """The reason for a file that ``weights_only`` loading refuses: what it asks to run, never PyTorch's advice."""
    import re as _re

    text = str(e)
    found = _re.search(r"GLOBAL\s+([\w.]+)", text)
    what = f" ({found.group(1).strip()})" if found else ""
    return ("not a plain weights file: it asks to import or run Python objects" + what + " when loaded, which this "
            "package never writes, so it is refused unread (it may come from another tool, or have been tampered "
            "with)")


def checkpoint_files(folder: str | os.PathLike) -> list[Path]:
    """The ``checkpoint_epoch=K.pt`` / ``checkpoint_iteration=K.pt`` files in ``folder``, newest first (by ``K``,
    then modification time)."""
    d = Path(folder)
    if not d.is_dir():
        return []
    found = []
    for p in d.iterdir():
        m = CHECKPOINT_RE.match(p.name)
        if m and p.is_file():
            found.append((int(m.group(2)), p.stat().st_mtime, p))
    return [p for *_, p in sorted(found, reverse=True)]


class LoadableCheckpoint(NamedTuple):
    """:func:`newest_loadable_checkpoint`'s answer: the file (``None`` if none loads), what it holds
    (tensors memory-mapped), and the newer files skipped with the reason for each."""

    path: Path | None
    content: Any
    skipped: list[CheckpointReadError]


def newest_loadable_checkpoint(folder: str | os.PathLike) -> LoadableCheckpoint:
    """The newest checkpoint in ``folder`` (:func:`checkpoint_files`) that :func:`read_checkpoint` loads and that
    holds a dict (a training state), with the newer ones skipped and why; ``path`` is ``None`` when none loads."""
    skipped: list[CheckpointReadError] = []
    for p in checkpoint_files(folder):
        try:
            content = read_checkpoint(p)
        except CheckpointReadError as e:
            skipped.append(e)
            continue
        if not isinstance(content, Mapping):
            skipped.append(CheckpointReadError(p, f"not a training state (it holds a {type(content).__name__})"))
            continue
        return LoadableCheckpoint(p, content, skipped)
    return LoadableCheckpoint(None, None, skipped)
