"""The built-in synthetic data sets: generated and prepared on first use, cached afterwards.

Bundles call :func:`ensure_synthetic_datalist` when no data set is configured, so training works on a fresh
machine with nothing downloaded.  The raw files come from :mod:`medsemiseg.data.synthetic` in the real layouts
(MedSeg NIfTI stacks, CHASE_DB1 JPG/PNG) and go through exactly the preparation code of
``python -m medsemiseg.prepare``, so the built-in data exercises the same path as real data.

Layout under ``root``::

    root/<task>[-<hash of generator kwargs>]/
        raw/                         generator output
        images/ labels/ pool.json    prepared slices (see medsemiseg.data.prepare)
        complete.json                every file above with its size, written last
        datalist_<fraction>_seed<seed>.json

Another fraction or seed only writes one more small JSON (:func:`resplit_prepared`, atomically); slices are never
regenerated.

The folder is built whole or not at all: generated and prepared in ``.<name>.tmp-<host>-<pid>`` beside it,
``complete.json`` written last, then renamed into place. A build that is killed leaves only that hidden folder, which
a later build removes once its process is gone (or, for another host's, once it is a day old). A folder that fails
its ``complete.json`` (:func:`incomplete_reason`: none -- an older version's folder or a build cut off --, an
unreadable one, a listed file missing or of another size) is never used: it is logged, set aside and built again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import socket
import time
from pathlib import Path
from typing import Any

from ..atomic_io import atomic_write_text
from ..runlock import pid_alive
from ..tasks import TASKS
from .prepare import POOL_FILE, datalist_filename, prepare_chase, prepare_covid, resplit_prepared

__all__ = ["COMPLETE_FILE", "SYNTHETIC_TASKS", "ensure_synthetic_datalist", "incomplete_reason", "resplit_prepared",
           "synthetic_task_dir"]

#: the tasks with a built-in synthetic data set (:data:`medsemiseg.tasks.TASKS`)
SYNTHETIC_TASKS = tuple(t.name for t in TASKS.values() if t.synthetic)

#: written last into a built folder: ``{"task": ..., "files": {relative path: size in bytes}}``
COMPLETE_FILE = "complete.json"
#: a leftover build folder of another host is removed once it has not changed for this long (seconds)
STALE_BUILD_S = 24 * 3600

logger = logging.getLogger(__name__)


def synthetic_task_dir(task: str, root: str | os.PathLike, **generator_kwargs: Any) -> Path:
    """Folder of one built-in data set; non-default generator arguments get their own folder (hash suffix)."""
    if task not in SYNTHETIC_TASKS:
        raise ValueError(f"unknown synthetic task {task!r}; choose one of {', '.join(SYNTHETIC_TASKS)}.")
    root = Path(root).expanduser()
    if not generator_kwargs:
        return root / task
    key = json.dumps(generator_kwargs, sort_keys=True, default=str)
    return root / f"{task}-{hashlib.sha1(key.encode()).hexdigest()[:8]}"


def _files(folder: Path) -> dict[str, int]:
    """``{relative path: size}`` of every file under ``folder``."""
    return {p.relative_to(folder).as_posix(): p.stat().st_size for p in sorted(folder.rglob("*")) if p.is_file()}


def incomplete_reason(task_dir: str | os.PathLike) -> str | None:
    """Why ``task_dir`` is not a complete built-in data set (a phrase), or ``None`` when it is: its
    ``complete.json`` is readable and every file it lists is there with the size it was written with."""
    task_dir = Path(task_dir)
    try:
        files = json.loads((task_dir / COMPLETE_FILE).read_text())["files"]
        listed = {str(k): int(v) for k, v in files.items()}
    except FileNotFoundError:
        return f"it has no {COMPLETE_FILE}: its build was cut off, or an older version built it"
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        return f"its {COMPLETE_FILE} is unreadable ({type(e).__name__}: {e})"
    for rel, size in listed.items():
        try:
            actual = (task_dir / rel).stat().st_size
        except OSError:
            return f"{rel} is missing"
        if actual != size:
            return f"{rel} has {actual} bytes, not the {size} it was written with"
    return None


def _remove_stale_builds(final: Path) -> None:
    """Remove the folders that stopped builds of ``final`` left beside it (``.<name>.tmp-[<host>-]<pid>``,
    ``.<name>.discard-<host>-<pid>-<hex>``): those of a process gone from this host, and those of another host
    unchanged for :data:`STALE_BUILD_S`."""
    if not final.parent.is_dir():
        return
    pattern = re.compile(rf"\.{re.escape(final.name)}\.(?:tmp|discard)-(?:(?P<host>.+)-)?(?P<pid>\d+)(?:-[0-9a-f]{{8}})?")
    here = socket.gethostname()
    for p in final.parent.iterdir():
        m = pattern.fullmatch(p.name)
        if m is None or not p.is_dir():
            continue
        pid, host = int(m.group("pid")), m.group("host")
        try:
            age = time.time() - p.stat().st_mtime
        except OSError:  # removed meanwhile by another run
            continue
        if (host in (None, here) and pid != os.getpid() and not pid_alive(pid)) or age > STALE_BUILD_S:
            shutil.rmtree(p, ignore_errors=True)
            logger.info(f"removed {p}: the unfinished build of a run that was stopped (pid {pid} on {host or here})")


def _set_aside(task_dir: Path) -> None:
    """Move ``task_dir`` out of the way in one rename, then delete it (another run may have done either first)."""
    aside = task_dir.with_name(f".{task_dir.name}.discard-{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        os.rename(task_dir, aside)
    except FileNotFoundError:
        return
    shutil.rmtree(aside, ignore_errors=True)


def _build(task: str, final: Path, generator_kwargs: dict, progress: bool) -> None:
    """Generate + prepare into a private temporary folder, write ``complete.json`` last, then move the folder into
    place (safe if two runs race)."""
    from . import synthetic

    _remove_stale_builds(final)
    tmp = final.with_name(f".{final.name}.tmp-{socket.gethostname()}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    raw = tmp / "raw"
    try:
        if task == "covid":
            written = synthetic.generate_covid(raw, **generator_kwargs)
            unlabeled = sorted(Path(written["unlabeled_dir"]).glob("*.nii.gz")) if "unlabeled_dir" in written else []
            prepare_covid(written["tr_im"], written["tr_mask"], tmp, unlabeled=unlabeled, overwrite=True,
                          progress=progress)
        else:
            synthetic.generate_chase(raw, **generator_kwargs)
            prepare_chase(raw, tmp, overwrite=True, progress=progress)
        # The prepared paths are relative, the recorded sources point into tmp: make them point at the final place.
        pool = json.loads((tmp / POOL_FILE).read_text())
        pool["meta"] = json.loads(json.dumps(pool["meta"]).replace(str(tmp.resolve()), str(final.resolve())))
        pool["meta"]["synthetic"] = {"task": task, "generator_kwargs": {k: str(v) for k, v in generator_kwargs.items()}}
        (tmp / POOL_FILE).write_text(json.dumps(pool, indent=1) + "\n")
        (tmp / "datalist.json").unlink(missing_ok=True)
        atomic_write_text(tmp / COMPLETE_FILE, json.dumps({"task": task, "files": _files(tmp)}, indent=1) + "\n")
        try:
            os.rename(tmp, final)
        except OSError:
            if incomplete_reason(final) is not None:  # a genuine failure, not a concurrent run that finished first
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def ensure_synthetic_datalist(
    task: str,
    root: str | os.PathLike,
    labeled_fraction: Any = "1/8",
    seed: int = 0,
    progress: bool = False,
    **generator_kwargs: Any,
) -> Path:
    """Path of the datalist of the built-in synthetic ``task`` (``"covid"`` or ``"chase"``) for one fraction / seed.

    First call: writes the raw phantom files with ``medsemiseg.data.synthetic.generate_<task>(**generator_kwargs)``
    and prepares them exactly as the CLI would (covid: ``tr_im``/``tr_mask`` labelled, ``unlabeled/*`` extra
    unlabelled volumes, default 20% test / 10% validation; chase: protocol 20/8, validation = test).  Later calls
    return the cached file, or write only the new datalist JSON for a new fraction / seed.  ``seed`` picks the
    labelled subset; the generator's own ``seed`` is a generator keyword.  A folder that fails its check
    (:func:`incomplete_reason`) is logged, set aside and built again; a non-empty folder holding neither
    ``pool.json`` nor ``complete.json`` is not a built-in one and is refused (``ValueError``).
    """
    task_dir = synthetic_task_dir(task, root, **generator_kwargs)
    path = task_dir / datalist_filename(labeled_fraction, seed)
    reason = incomplete_reason(task_dir) if task_dir.is_dir() else "absent"
    if reason is None:
        _remove_stale_builds(task_dir)  # of a build that lost the race to another run's and was then stopped
        if path.exists():
            return path
    if reason is not None:
        if task_dir.is_dir() and any(task_dir.iterdir()):
            if not (task_dir / POOL_FILE).exists() and not (task_dir / COMPLETE_FILE).exists():
                raise ValueError(
                    f"{task_dir}: exists but holds no {POOL_FILE}; it is not a built-in data set folder. "
                    "Remove it or choose another root."
                )
            logger.warning(f"{task_dir}: not a complete built-in {task} data set ({reason}); building it again")
            _set_aside(task_dir)
        task_dir.parent.mkdir(parents=True, exist_ok=True)
        if task_dir.is_dir():
            with contextlib.suppress(OSError):  # not empty: another run's build landed meanwhile (_build checks it)
                task_dir.rmdir()
        # otherwise the run is silent for the seconds the generation takes (2 s to 10 s on a 2-core CPU)
        logger.info(f"generating the built-in synthetic {task} data set into {task_dir} (first use only) ...")
        start = time.perf_counter()
        _build(task, task_dir, dict(generator_kwargs), progress)
        logger.info(f"generated the synthetic {task} data set in {time.perf_counter() - start:.1f} s")
    return resplit_prepared(task_dir, labeled_fraction, seed)
