"""The datalist a bundle run trains, validates and evaluates on.

``dataset_dir`` names it: empty for the built-in synthetic data set (generated into ``cache_dir`` on first use), a
datalist JSON, or a folder written by ``python -m medsemiseg.prepare``, whose split for this run's labelled fraction
and seed is written next to it once. :func:`resolve_datalist` returns the datalist's path, logs what the run trains
on and checks the data set's classes and channels against the bundle's; the splits are read with
:func:`medsemiseg.data.datalist.load_split`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medsemiseg.data.datalist import meta_and_sizes

from .settings import BundleConfigError, is_empty

__all__ = [
    "DATALIST_NAMES",
    "DEFAULT_FRACTION",
    "datalist_in",
    "effective_fraction",
    "resolve_datalist",
    "unlabeled_loader_for",
]

logger = logging.getLogger(__name__)

#: file names looked for, in this order, in a prepared data set folder given as ``dataset_dir``
DATALIST_NAMES = ("datalist.json", "dataset.json")


def datalist_in(folder: Path) -> Path | None:
    """The datalist of a prepared data set folder (the first of :data:`DATALIST_NAMES` there), else ``None``."""
    for n in DATALIST_NAMES:
        if (folder / n).is_file():
            return folder / n
    return None


#: the labelled share of the built-in synthetic data sets when ``labeled_fraction`` is left empty (the paper's 1/8).
DEFAULT_FRACTION = "1/8"


def effective_fraction(dataset_dir: Any, labeled_fraction: Any) -> Any:
    """``labeled_fraction``, or, when it is empty (the bundles' default), the one a prepared folder was prepared
    with (``python -m medsemiseg.prepare ... --labeled-fraction``; a user who prepared with ``full`` trains on every
    mask without repeating it), else :data:`DEFAULT_FRACTION`."""
    if not is_empty(labeled_fraction):
        return labeled_fraction
    if not is_empty(dataset_dir):
        from medsemiseg.data.prepare import DATALIST_FILE, POOL_FILE

        folder = Path(str(dataset_dir)).expanduser()
        if (folder / POOL_FILE).is_file() and (folder / DATALIST_FILE).is_file():
            chosen = meta_and_sizes(folder / DATALIST_FILE)[0].get("labeled_fraction")
            if not is_empty(chosen):
                return "full" if str(chosen) == "1" else chosen  # "1": how earlier versions of prepare wrote full
    return DEFAULT_FRACTION


def resolve_datalist(
    dataset_dir: str | os.PathLike | None,
    task: str,
    cache_dir: str | os.PathLike,
    labeled_fraction: Any = None,
    seed: int = 0,
    classes: Sequence[str] | None = None,
    in_channels: int | None = None,
) -> str:
    """The datalist JSON a bundle trains / validates / evaluates on (``docs/architecture.md`` format).

    Args:
        dataset_dir: ``None``/``""``: the built-in synthetic data set of ``task``, generated into ``cache_dir`` on
            first use (deterministic by ``seed``) with ``labeled_fraction`` of its training images labelled;
            a datalist JSON file; or a folder written by ``python -m medsemiseg.prepare`` (``pool.json`` +
            ``datalist.json``).
        task: ``"covid"`` or ``"chase"``.
        cache_dir: where the synthetic data set is generated.
        labeled_fraction: ``"1/8"``, ``"1/4"``, ``"1/2"``, a count, or ``"full"``: which share of the training
            pool is labelled (synthetic data set, or a prepared folder with ``pool.json``: the datalist for this
            fraction / seed is written next to it once; a datalist JSON given directly is used as is). Empty
            (``None``, the bundles' default): the prepared folder's own fraction, 1/8 for the synthetic data set
            (:func:`effective_fraction`).
        seed: labelled-subset seed.
        classes: the bundle's class names; when given and the datalist declares its own (``meta.classes``), a
            different number of classes is an error (the network would have the wrong number of outputs and the
            report the wrong names) and different names a warning.
        in_channels: the network's input channels; a datalist whose ``meta.in_channels`` differs (RGB photographs
            given to the CT bundle) is an error naming the bundle to use, instead of a crash in the first iteration.

    The chosen datalist and its split sizes are logged; a prepared folder whose ``prepare`` run chose another
    labelled fraction than this run's gets a warning saying how to train on the prepared split.
    """
    labeled_fraction = effective_fraction(dataset_dir, labeled_fraction)
    if is_empty(dataset_dir):
        from medsemiseg.data.builtin import ensure_synthetic_datalist

        path = Path(ensure_synthetic_datalist(task, str(cache_dir), labeled_fraction, int(seed)))
        return _checked(path, labeled_fraction, seed, classes, in_channels=in_channels)
    p = Path(str(dataset_dir)).expanduser()
    if p.is_file() and p.suffix.lower() == ".json":
        return _checked(p.absolute(), labeled_fraction, seed, classes, fixed=True, in_channels=in_channels)
    if p.is_dir():
        from medsemiseg.data.prepare import POOL_FILE, resplit_prepared

        if (p / POOL_FILE).is_file():  # a prepared folder: the split for this fraction / seed (written once)
            from medsemiseg.data.prepare import datalist_filename

            _warn_if_prepared_otherwise(p, labeled_fraction)
            existing = p / datalist_filename(labeled_fraction, seed)
            path = existing if existing.is_file() else resplit_prepared(p, labeled_fraction, int(seed))
            return _checked(Path(path).absolute(), labeled_fraction, seed, classes, in_channels=in_channels)
        found = datalist_in(p)
        if found is not None:
            return _checked(found.absolute(), labeled_fraction, seed, classes, fixed=True, in_channels=in_channels)
        raise BundleConfigError(
            f"dataset_dir={str(dataset_dir)!r} holds no {' or '.join(DATALIST_NAMES)}: it is not a prepared data "
            f"set. Prepare it first into another folder, e.g. `python -m medsemiseg.prepare folder {dataset_dir} "
            f"--out {p.name}_prepared` (or `prepare chase` / `prepare covid` for those data sets' own layouts), "
            f"and pass --dataset_dir {p.name}_prepared; or pass a datalist JSON file itself."
        )
    raise BundleConfigError(
        f"dataset_dir={str(dataset_dir)!r} does not exist: give a prepared data set folder, a datalist JSON, or "
        "leave it empty (null) to use the built-in synthetic data set."
    )


def _warn_if_prepared_otherwise(folder: Path, labeled_fraction: Any) -> None:
    """A user who prepared with ``--labeled-fraction 1/2`` and trains with the bundle's default 1/8 is told so."""
    from medsemiseg.data.prepare import DATALIST_FILE
    from medsemiseg.data.splits import fraction_text

    prepared = folder / DATALIST_FILE
    if not prepared.is_file():
        return
    meta, sizes = meta_and_sizes(prepared)
    chosen = meta.get("labeled_fraction")
    chosen = "full" if str(chosen) == "1" else chosen  # how earlier versions of prepare wrote full
    try:
        requested = fraction_text(labeled_fraction)
    except (ValueError, TypeError):
        return  # a bad fraction is reported by the split itself, with its own message
    if chosen is not None and str(chosen) != requested:
        logger.warning(
            f"{folder} was prepared with labelled fraction {chosen} ({sizes.get('labeled', '?')} labelled in "
            f"{DATALIST_FILE}); this run uses labeled_fraction {requested}. Pass --labeled_fraction {chosen} to "
            "train on the prepared split."
        )


def _fraction_words(labeled_fraction: Any) -> str:
    """How the log names the labelled share: ``labeled_fraction 1/8``, or ``all listed labelled images`` for
    ``full`` (every labelled image the data set lists, which need not be a fully labelled training set)."""
    from medsemiseg.data.splits import fraction_text

    try:
        text = fraction_text(labeled_fraction)
    except (ValueError, TypeError):
        text = str(labeled_fraction)
    return "all listed labelled images" if text == "full" else f"labeled_fraction {text}"


def _checked(
    path: Path,
    labeled_fraction: Any,
    seed: int,
    classes: Sequence[str] | None,
    fixed: bool = False,
    in_channels: int | None = None,
) -> str:
    """Log what the run will train on and check the datalist's classes and channels against the bundle's."""
    meta, sizes = meta_and_sizes(path)
    theirs_ch = meta.get("in_channels")
    if in_channels is not None and isinstance(theirs_ch, int) and theirs_ch != int(in_channels):
        kind = {1: "grey (CT) images", 3: "RGB pictures"}
        other = {1: "bundles/covid (grey CT)", 3: "bundles/chase (RGB fundus photographs)"}.get(theirs_ch)
        raise BundleConfigError(
            f"datalist {path} holds {kind.get(theirs_ch, f'{theirs_ch}-channel images')} (meta.in_channels "
            f"{theirs_ch}), but this bundle's network takes {in_channels} channel(s): "
            + (f"train it with {other}." if other else f"pass --in_channels {theirs_ch}.")
        )
    split = ", ".join(f"{sizes.get(k, 0)} {k}" for k in ("labeled", "unlabeled", "validation", "test"))
    how = "as written" if fixed else f"{_fraction_words(labeled_fraction)}, seed {seed}"
    logger.info(f"datalist {path}: {split} ({how})")
    declared = meta.get("classes")
    if classes is not None and isinstance(declared, list) and declared:
        ours = [str(c) for c in classes]
        theirs = [str(c) for c in declared]
        if len(ours) != len(theirs):
            raise BundleConfigError(
                f"datalist {path} declares {len(theirs)} classes {theirs}, but the bundle is set up for "
                f"{len(ours)} {ours}: the network would have the wrong number of outputs. Pass --classes "
                f"\"{theirs}\" (the class count follows it), or prepare the data with the bundle's classes."
            )
        if ours != theirs:
            logger.warning(
                f"datalist {path} names its classes {theirs}; the bundle's reports will use {ours} "
                f"(pass --classes \"{theirs}\" to report the data set's names)."
            )
    return str(path)


def unlabeled_loader_for(method: Any, loader: Any, datalist: str | os.PathLike | None = None) -> Any:
    """``loader`` when ``method`` trains on unlabelled images, else ``None`` (the ``supervised`` method).

    A method that needs unlabelled images with none in the data set is an error that says why, rather than an empty
    loader failing later: a ``datalist`` without an ``unlabeled`` split at all (a hand-written one; the message also
    names the other splits training needs that it lacks), or one whose split is empty (every training image is
    labelled, e.g. ``labeled_fraction`` ``full`` on a data set without extra unlabelled volumes).
    """
    if not bool(getattr(method, "requires_unlabeled", True)):
        return None
    if len(getattr(loader, "dataset", ())) == 0:
        sizes: dict[str, int] | None = None
        if datalist is not None:
            try:
                sizes = meta_and_sizes(datalist)[1]
            except Exception:  # noqa: BLE001 - an unreadable datalist is reported by load_split, with its message
                sizes = None
        if sizes is not None and "unlabeled" not in sizes:
            lacking = [k for k in ("unlabeled", "labeled", "validation") if k not in sizes]
            raise BundleConfigError(
                f"datalist {datalist} has no {' / '.join(repr(k) for k in lacking)} split"
                f"{'s' if len(lacking) > 1 else ''} (it has {sizes}); method {type(method).__name__} trains on "
                "unlabelled images and training validates on the 'validation' split: add them (docs/architecture.md "
                "has the format; `python -m medsemiseg.prepare` writes them), or use --method supervised if it has "
                "no unlabelled images."
            )
        raise BundleConfigError(
            f"method {type(method).__name__} trains on unlabelled images, but the datalist's 'unlabeled' split is "
            "empty (every training image is labelled, e.g. labeled_fraction 'full'): use --method supervised, a "
            "smaller --labeled_fraction, or add unlabelled images when preparing the data set."
        )
    return loader
