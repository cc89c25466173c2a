"""The built-in synthetic data sets: generated and prepared on first use, cached afterwards.

Bundles call :func:`ensure_synthetic_datalist` when no data set is configured, so training works on a fresh
machine with nothing downloaded.  The raw files come from :mod:`medsemiseg.data.synthetic` in the real layouts
(MedSeg NIfTI stacks, CHASE_DB1 JPG/PNG) and go through exactly the preparation code of
``python -m medsemiseg.prepare``, so the built-in data exercises the same path as real data.

Layout under ``root``::

    root/<task>[-<hash of generator kwargs>]/
        raw/                         generator output
        images/ labels/ pool.json    prepared slices (see medsemiseg.data.prepare)
        datalist_<fraction>_seed<seed>.json

Another fraction or seed only writes one more small JSON (:func:`resplit_prepared`); slices are never regenerated.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

from ..tasks import TASKS
from .prepare import POOL_FILE, datalist_filename, prepare_chase, prepare_covid, resplit_prepared

__all__ = ["SYNTHETIC_TASKS", "ensure_synthetic_datalist", "resplit_prepared", "synthetic_task_dir"]

#: the tasks with a built-in synthetic data set (:data:`medsemiseg.tasks.TASKS`)
SYNTHETIC_TASKS = tuple(t.name for t in TASKS.values() if t.synthetic)

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


def _build(task: str, final: Path, generator_kwargs: dict, progress: bool) -> None:
    """Generate + prepare into a private temporary folder, then move it into place (safe if two runs race)."""
    from . import synthetic

    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
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
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / POOL_FILE).exists():  # a genuine failure, not a concurrent run that finished first
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
    labelled subset; the generator's own ``seed`` is a generator keyword.
    """
    task_dir = synthetic_task_dir(task, root, **generator_kwargs)
    path = task_dir / datalist_filename(labeled_fraction, seed)
    if path.exists():
        return path
    if not (task_dir / POOL_FILE).exists():
        if task_dir.exists() and any(task_dir.iterdir()):
            raise ValueError(
                f"{task_dir}: exists but holds no {POOL_FILE}; it is not a built-in data set folder. "
                "Remove it or choose another root."
            )
        task_dir.parent.mkdir(parents=True, exist_ok=True)
        if task_dir.exists():
            task_dir.rmdir()
        # otherwise the run is silent for the seconds the generation takes (2 s to 10 s on a 2-core CPU)
        logger.info(f"generating the built-in synthetic {task} data set into {task_dir} (first use only) ...")
        start = time.perf_counter()
        _build(task, task_dir, dict(generator_kwargs), progress)
        logger.info(f"generated the synthetic {task} data set in {time.perf_counter() - start:.1f} s")
    return resplit_prepared(task_dir, labeled_fraction, seed)
