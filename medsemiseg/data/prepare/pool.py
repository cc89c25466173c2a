"""The pool of prepared items and the datalists written from it (``pool.json`` -> ``datalist.json``).

``pool.json`` fixes each item's role at preparation time (training pool with labels, extra unlabelled images,
validation, test); :func:`build_datalist` draws the labelled subset for a fraction and seed, and
:func:`resplit_prepared` writes the datalist of another fraction / seed next to it without touching the slices.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..io import DataReadError
from ..splits import (
    carve_heldout,
    fraction_tag,
    fraction_text,
    num_labeled,
    resolve_count,
    split_labeled,
)
from .core import (
    _OUTPUT_DIRS,
    _RUN,
    _STAGE_PREFIX,
    DATALIST_FILE,
    POOL_FILE,
    PrepareWarning,
    _warn,
    write_json,
)

#: the keys of a prepared item the datalist keeps (``fov`` and ``second_observer``: :mod:`.public`)
ITEM_KEYS = ("image", "label", "fov", "second_observer")
#: a test item also keeps the volume it was cut from and its slice there (per-volume scoring, :mod:`.folder`)
TEST_KEYS = ITEM_KEYS + ("volume", "slice")


def _strip(items: Sequence[dict], keys=ITEM_KEYS) -> list[dict]:
    return [{k: it[k] for k in keys if k in it} for it in items]


def build_datalist(pool: dict, labeled_fraction: Any = "1/8", seed: int = 0) -> dict:
    """Datalist for one labelled fraction and seed from a prepared ``pool`` (see module doc).

    A pool prepared with ``--group-by`` (``meta.group_by``) labels whole groups: the fraction or count is one of
    the training pool's groups (patients), and ``meta.counts`` gains ``train_groups`` / ``labeled_groups``."""
    train = pool["train"]
    if not train:
        raise ValueError("the prepared pool has no labelled training images; nothing to split.")
    groups = [it["group"] for it in train] if pool["meta"].get("group_by") else None
    labeled, rest = split_labeled(train, labeled_fraction, seed, groups)
    meta = dict(pool["meta"])
    unlabeled = _strip(rest, ("image",)) + _strip(pool.get("extra_unlabeled", []), ("image",))
    counts = {
        "train": len(train),
        "labeled": len(labeled),
        "unlabeled": len(unlabeled),
        "extra_unlabeled": len(pool.get("extra_unlabeled", [])),
        "validation": len(pool["validation"]),
        "test": len(pool["test"]),
    }
    if groups is not None:
        counts.update(train_groups=len(set(groups)), labeled_groups=len({it["group"] for it in labeled}))
    meta.update(labeled_fraction=fraction_text(labeled_fraction), seed=int(seed), counts=counts)
    return {
        "labeled": _strip(labeled),
        "unlabeled": unlabeled,
        "validation": _strip(pool["validation"]),
        "test": _strip(pool["test"], TEST_KEYS),
        "meta": meta,
    }


def datalist_filename(labeled_fraction: Any, seed: int) -> str:
    """``datalist_1-8_seed0.json`` style name for one fraction / seed."""
    return f"datalist_{fraction_tag(labeled_fraction)}_seed{int(seed)}.json"


def resplit_prepared(
    prepared_dir: str | os.PathLike, labeled_fraction: Any = "1/8", seed: int = 0, filename: str | None = None
) -> Path:
    """Write a datalist for another labelled fraction / seed of an already prepared folder; no slice is rewritten.

    Validation and test stay exactly those fixed at preparation.  Returns the new JSON path
    (``prepared_dir/datalist_<fraction>_seed<seed>.json`` unless ``filename`` is given).
    """
    prepared_dir = Path(prepared_dir)
    pool_path = prepared_dir / POOL_FILE
    if not pool_path.exists():
        raise FileNotFoundError(
            f"{pool_path}: not found; {prepared_dir} is not a folder written by `python -m medsemiseg.prepare`."
        )
    try:
        pool = json.loads(pool_path.read_text())
    except ValueError as e:  # a truncated or hand-edited pool.json: name it, not only the JSON position
        raise DataReadError(pool_path, f"is not valid JSON ({e}); prepare {prepared_dir} again.") from e
    return write_json(prepared_dir / (filename or datalist_filename(labeled_fraction, seed)),
                      build_datalist(pool, labeled_fraction, seed))


def _carve(items: list[dict], spec: Any, seed: int, option: str, role: str, where: str) -> tuple[list, list]:
    count = resolve_count(spec, len(items), name=option)
    groups = [it["group"] for it in items]
    try:
        return carve_heldout(items, count, seed, groups)
    except ValueError:
        names = [str(g) for g in dict.fromkeys(groups)]
        shown = ", ".join(names[:8]) + (f", ... ({len(names)} in all)" if len(names) > 8 else "")
        raise ValueError(
            f"{where}{option} {spec} asks for {count} {role} item(s) of {len(items)} labelled items left, but they "
            f"form only {len(names)} group(s) [{shown}] (the slices of one volume stay together), so nothing would "
            f"be left to train on. Lower {option} ({option} 0 for no {role} split) or add labelled images / volumes."
        ) from None


def _holdout(
    train: list[dict], val_fraction: Any, test_fraction: Any, val_seed: int, where: str = ""
) -> tuple[list, list, list]:
    """Carve test, then validation, from labelled items (by their ``group``); ``where`` prefixes errors."""
    train, test = _carve(train, test_fraction, val_seed, "--test-fraction", "test", where)
    train, val = _carve(train, val_fraction, val_seed + 1, "--val-fraction", "validation", where)
    return train, val, test


def _check_plan(
    groups: Sequence[tuple[str, int]], val_fraction: Any, test_fraction: Any, val_seed: int, labeled_fraction: Any,
    where: str = "", by_group: bool = False,
) -> None:
    """Run the hold-out and the labelled split on placeholders (``(group, item count)``) before anything is
    written, so impossible options fail at once and with the same message as the real split (``by_group``: the
    labelled fraction counts groups)."""
    placeholders = [{"group": g} for g, n in groups for _ in range(max(1, int(n)))]
    train, _, _ = _holdout(placeholders, val_fraction, test_fraction, val_seed, where)
    _num_labeled(train, labeled_fraction, by_group, where)


def _num_labeled(train: Sequence[dict], labeled_fraction: Any, by_group: bool, where: str = "") -> int:
    """How many training items (``by_group``: groups) the labelled fraction picks."""
    if not by_group:
        return num_labeled(len(train), labeled_fraction)
    n = len({it["group"] for it in train})
    try:
        return num_labeled(n, labeled_fraction)
    except ValueError as e:
        raise ValueError(
            f"{where}{e} (with --group-by the labelled count is one of groups: {n} in training)."
        ) from None


def _unit(items: Sequence[dict]) -> str:
    """What the items are, for messages: ``slices`` (2D NIfTI written from volumes / DICOM), ``images`` (pictures)."""
    kinds = sorted({"slices" if it["image"].endswith(".nii.gz") else "images" for it in items}, reverse=True)
    return " and ".join(kinds) or "items"


def _warn_hidden_labels(where: str, train: Sequence[dict], labeled_fraction: Any, by_group: bool = False) -> None:
    """``folder``: the user's own masks are data to train on; say so loudly when the labelled fraction (default 1/8,
    the paper's protocol for simulating scarcity) turns most of them into unlabelled items.  Not kept in
    ``meta.warnings``: ``pool.json``'s meta is shared by the datalists of every other fraction.  ``by_group``:
    the fraction counts groups (``--group-by``), and so does the warning."""
    n_labeled = _num_labeled(train, labeled_fraction, by_group, where)
    total = len({it["group"] for it in train}) if by_group else len(train)
    if n_labeled < total:
        unit = f"groups of {_unit(train)} (--group-by)" if by_group else _unit(train)
        warnings.warn(
            f"{where}{total - n_labeled} of your {total} labelled training {unit} are used as unlabelled "
            f"(--labeled-fraction {fraction_text(labeled_fraction)} simulates scarcity, the paper's protocol); pass "
            "--labeled-fraction full to train on every mask (the bundles train on the fraction a folder was "
            "prepared with unless given --labeled_fraction).",
            PrepareWarning, stacklevel=3,
        )


def _warn_splits(where: str, val: Sequence, test: Sequence, test_option: bool = True) -> None:
    """The bundles need a validation list to train and a test list to evaluate: say so now, not at training."""
    if not val:
        _warn(f"{where}: 0 validation items: training (the bundles' train.json) needs a validation split; pass "
              "--val-fraction (a share of the labelled items, or a count >= 1) with enough labelled images.")
    if not test and test_option:
        _warn(f"{where}: 0 test items: evaluating (the bundles' evaluate.json) needs a test split; pass "
              "--test-fraction (a share of the labelled items, or a count >= 1) if you will evaluate this data.")


def _prepare_out(
    out: str | os.PathLike, task: str, source: str, overwrite: bool, inputs: Sequence[Path]
) -> tuple[Path, bool]:
    """Check / create the output folder; returns ``(folder, created by this call)``.

    A non-empty folder is reused only if it is an earlier preparation of the same task from the same source, or
    with ``overwrite``; then only what this module writes (``images/``, ``labels/``, ``pool.json``,
    ``datalist*.json``) is replaced, never anything else, and only once the new preparation has succeeded
    (:class:`_Output`).  A staging folder left by a killed run is removed.
    """
    out = Path(out).resolve()
    for p in inputs:
        rp = Path(p).resolve()
        for d in _OUTPUT_DIRS:
            if rp == out / d or (out / d) in rp.parents:
                raise ValueError(
                    f"--out {out}: input {p} lies inside {out / d}, which preparation rewrites; choose another --out."
                )
        if rp == out:
            raise ValueError(f"--out {out} is the input folder itself; choose a separate output folder.")
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder.")
    if out.is_dir():
        for stale in out.glob(_STAGE_PREFIX + "*"):
            shutil.rmtree(stale, ignore_errors=True)
    if out.exists() and any(out.iterdir()):
        same = False
        pool = out / POOL_FILE
        if pool.exists():
            try:
                meta = json.loads(pool.read_text()).get("meta", {})
                same = meta.get("task") == task and meta.get("source") == source
            except (OSError, ValueError):
                same = False
        if not (same or overwrite):
            raise ValueError(
                f"--out {out} is not empty and is not an earlier '{task}' preparation of {source}; "
                "pass --overwrite to replace what preparation writes there, or choose an empty folder."
            )
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    return out, created


def _warn_if_resplit(existing: Path, datalist: dict) -> None:
    """Re-preparing over an earlier preparation with another labelled fraction or seed draws another labelled
    subset: say so (a training on the earlier split, resumed, then refuses the changed datalist)."""
    try:
        before = json.loads(existing.read_text()).get("meta", {})
    except (OSError, ValueError, AttributeError):
        return
    after = datalist.get("meta", {})
    changed = [f"{k} {before.get(k)!r} -> {after.get(k)!r}" for k in ("labeled_fraction", "seed")
               if k in before and before.get(k) != after.get(k)]
    if changed:
        _warn(
            f"{existing} was prepared with another labelled subset ({', '.join(changed)}): it is rewritten with this "
            "run's. A training on the earlier split stops when resumed (pass --allow_changed_data true to continue "
            f"it on the new one); to keep the earlier split, prepare into another --out."
        )


class _Output:
    """``--out`` of one run: items are written to a hidden staging folder inside it and moved into place by
    :meth:`commit` only after everything was read and checked, so a failed run (see :func:`_one_run`) leaves the
    folder as it was, and removes it again if this run created it."""

    def __init__(self, out: str | os.PathLike, task: str, source: str, overwrite: bool, inputs: Sequence[Path]):
        self.root, self.created = _prepare_out(out, task, source, overwrite, inputs)
        run = _RUN.get()
        if run is not None:
            run.outputs.append(self)
        self.stage = self.root / f"{_STAGE_PREFIX}{os.getpid()}"
        self.stage.mkdir()
        self.done = False

    def commit(self, pool: dict, labeled_fraction: Any, seed: int) -> Path:
        """Replace the earlier preparation (only what this module writes) by the staged one; the datalist path."""
        datalist = build_datalist(pool, labeled_fraction, seed)  # a bad fraction fails before anything is replaced
        _warn_if_resplit(self.root / DATALIST_FILE, datalist)
        for d in _OUTPUT_DIRS:
            shutil.rmtree(self.root / d, ignore_errors=True)
        for f in list(self.root.glob("datalist*.json")) + [self.root / POOL_FILE]:
            f.unlink(missing_ok=True)
        for d in _OUTPUT_DIRS:
            os.replace(self.stage / d, self.root / d)
        shutil.rmtree(self.stage, ignore_errors=True)
        write_json(self.root / POOL_FILE, pool)
        path = write_json(self.root / DATALIST_FILE, datalist)
        self.done = True
        return path

    def abort(self) -> None:
        """Remove the staging folder, and ``--out`` itself if this run created it and it is empty again."""
        shutil.rmtree(self.stage, ignore_errors=True)
        if self.created and not self.done:
            try:
                self.root.rmdir()
            except OSError:
                pass
