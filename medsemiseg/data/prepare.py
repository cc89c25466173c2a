"""``python -m medsemiseg.prepare {chase,drive,covid,covid-semiseg,folder}``: raw data -> 2D slices + a MONAI datalist JSON.

Every subcommand writes, under ``--out DIR``:

- ``images/`` and ``labels/``: the 2D items.  CT slices are 2D NIfTI ``float32`` in HU with the in-plane spacing
  and the slice's position kept in the affine; CT masks are 2D NIfTI ``uint8``.  Pictures (fundus photographs) are
  copied unchanged (no re-encoding loss); their masks are written as 0/1 (or 0..K-1) PNGs.
- ``pool.json``: every prepared item with its role fixed at preparation time (training pool with labels,
  extra unlabelled images, validation, test).  It lets :func:`resplit_prepared` write a datalist for another
  labelled fraction / seed without touching the slices.
- ``datalist.json``: ``{"labeled", "unlabeled", "validation", "test", "meta"}`` for ``--labeled-fraction`` and
  ``--seed``, paths relative to the JSON's folder (``monai.data.load_decathlon_datalist`` resolves them).

The functions :func:`prepare_covid`, :func:`prepare_chase`, :func:`prepare_folder` are the CLI without argparse;
:mod:`medsemiseg.data.builtin` runs the very same code on the synthetic data.
"""

from __future__ import annotations

import argparse
import contextvars
import functools
import json
import os
import re
import shutil
import sys
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, Flip, Rotate90

from .io import (
    PICTURE_SUFFIXES,
    DataReadError,
    detect_format,
    file_stem,
    is_supported_file,
    iter_slices,
    list_dicom_files,
    read_image,
    read_mask,
)
from .kaggle_medseg import is_npy, read_npy_images, read_npy_masks
from .mask_geometry import align_mask
from .splits import (
    carve_heldout,
    chase_protocol_split,
    fraction_tag,
    fraction_text,
    num_labeled,
    parse_fraction,
    resolve_count,
    split_labeled,
)

__all__ = [
    "CHASE_CLASSES",
    "COVID_CLASSES",
    "ORIENTATIONS",
    "PrepareNote",
    "PrepareWarning",
    "build_datalist",
    "main",
    "orient_slice",
    "prepare_chase",
    "prepare_covid",
    "prepare_folder",
    "resplit_prepared",
]

COVID_CLASSES = ["background", "ground-glass", "consolidation", "pleural effusion"]
CHASE_CLASSES = ["background", "vessel"]
#: Operations on the picture *as displayed upright* (``a[0].T``), applied identically to image and mask.
ORIENTATIONS = ("as-stored", "rot90", "rot180", "rot270", "flip-lr", "flip-ud", "transpose")
POOL_FILE = "pool.json"
DATALIST_FILE = "datalist.json"
_OUTPUT_DIRS = ("images", "labels")
_MASK_SUFFIXES = ("_mask", "_label", "_labels", "_seg", "_gt")
_STAGE_PREFIX = ".prepare-partial-"  # hidden folder in --out where a run writes before it succeeds


class PrepareWarning(UserWarning):
    """A preparation went through but the result needs attention (no validation / test split, ignored masks)."""


class PrepareNote(PrepareWarning):
    """Something preparation could not check (e.g. the orientation of a mask without geometry)."""


class _Run:
    """One preparation: its staged ``--out`` (removed on failure) and the warnings it gave (kept in ``meta``)."""

    def __init__(self) -> None:
        self.outputs: list[_Output] = []
        self.warnings: list[str] = []
        self.background_masks: list[str] = []  # masks without foreground, warned together (_run_warnings)


_RUN: contextvars.ContextVar[_Run | None] = contextvars.ContextVar("medsemiseg_prepare_run", default=None)


def _one_run(fn):
    """A failed ``prepare_*`` removes what it wrote; the earlier contents of ``--out`` stay as they were."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        token = _RUN.set(_Run())
        try:
            return fn(*args, **kwargs)
        except BaseException:
            for o in _RUN.get().outputs:
                o.abort()
            raise
        finally:
            _RUN.reset(token)

    return wrapper


def _warn(message: str, category: type[Warning] = PrepareWarning) -> None:
    run = _RUN.get()
    if run is not None:
        run.warnings.append(message)
    warnings.warn(message, category, stacklevel=3)


def _run_warnings() -> list[str]:
    """The warnings this run gave, after one that names every mask without foreground (:func:`_check_same_size`);
    called when the run's meta is built, once everything was read."""
    run = _RUN.get()
    if run is None:
        return []
    if run.background_masks:
        masks, run.background_masks = run.background_masks, []
        shown = ", ".join(masks[:10]) + (f", ... ({len(masks) - 10} more)" if len(masks) > 10 else "")
        _warn(
            f"{len(masks)} mask(s) hold no foreground at all (every pixel background): {shown}. Check that they are "
            "the right masks (an export that lost its labels, or a --mask-threshold above their values); images "
            "that truly show nothing to segment may stay, they teach the network that."
        )
    return list(run.warnings)


# ------------------------------------------------------------------------------------------------- small utils


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write JSON atomically (temp file + rename), so a reader never sees half a datalist."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=1) + "\n")
    os.replace(tmp, path)
    return path


def _progress(iterable, total: int | None, desc: str, enabled: bool):
    """A tqdm bar on a terminal; plain ``desc: k/N`` lines (start, every tenth, end) when stderr is a file or a
    pipe (a cluster job, nohup), where tqdm would stay silent for the whole preparation."""
    if enabled and not sys.stderr.isatty():
        return _progress_lines(iterable, total, desc)
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit="item", disable=None if enabled else True, leave=False)


def _progress_lines(iterable, total: int | None, desc: str):
    step = max(1, (total or 0) // 10)
    k = 0
    for k, item in enumerate(iterable, 1):
        if k == 1 or k % step == 0 or k == total:
            print(f"[prepare] {desc}: {k}/{total if total else '?'}", file=sys.stderr, flush=True)
        yield item
    if total is None or k != total:
        print(f"[prepare] {desc}: {k} done", file=sys.stderr, flush=True)


def orient_slice(img: MetaTensor, orientation: str) -> MetaTensor:
    """Apply an upright-display operation to a ``(C, X, Y)`` slice; the affine follows (MONAI transforms).

    ``rot90`` turns the displayed picture 90 degrees counter-clockwise (``np.rot90`` on ``a[0].T``), ``flip-lr``
    mirrors it left-right, ``flip-ud`` top-bottom, ``transpose`` swaps its rows and columns.
    """
    if orientation == "as-stored":
        return img
    if orientation not in ORIENTATIONS:
        raise ValueError(f"--orientation {orientation!r}: choose one of {', '.join(ORIENTATIONS)}.")
    if orientation.startswith("rot"):
        op = Rotate90(k=(4 - int(orientation[3:]) // 90) % 4, spatial_axes=(0, 1))  # display ccw == array cw
    elif orientation == "flip-lr":
        op = Flip(spatial_axis=0)
    elif orientation == "flip-ud":
        op = Flip(spatial_axis=1)
    else:  # transpose == flip X after a quarter turn
        op = Compose([Rotate90(k=1, spatial_axes=(0, 1)), Flip(spatial_axis=0)])
    moved = op(img)
    out = MetaTensor(moved.as_tensor().contiguous(), meta=dict(img.meta))  # drop applied_operations bookkeeping
    out.affine = torch.as_tensor(np.round(moved.affine.detach().cpu().numpy().astype(float), 10))
    return out


def _save_nifti_2d(img: torch.Tensor, path: Path, dtype) -> None:
    import nibabel as nib

    arr = np.asarray(img.detach().cpu().numpy()[0], dtype=dtype)  # (X, Y)
    affine = img.affine.detach().cpu().numpy().astype(float) if isinstance(img, MetaTensor) else np.eye(4)
    if affine.shape != (4, 4):
        affine = np.eye(4)
    nimg = nib.Nifti1Image(arr, affine)
    nimg.header.set_data_dtype(dtype)
    nimg.header.set_qform(affine, code=1)
    nimg.header.set_sform(affine, code=1)
    nib.save(nimg, str(path))


def _save_png_mask(mask: torch.Tensor, path: Path) -> None:
    from PIL import Image

    arr = mask.detach().cpu().numpy()[0]
    if arr.max(initial=0) > 255:
        raise ValueError(f"{path}: labels above 255 cannot be stored in an 8-bit PNG.")
    Image.fromarray(np.ascontiguousarray(arr.T.astype(np.uint8))).save(str(path))  # (X, Y) -> rows = Y


def _check_same_size(image: torch.Tensor, mask: torch.Tensor, image_path, mask_path) -> None:
    """Every image / mask pair's check: the same size; a mask without foreground is noted for one warning naming
    all of them (:func:`_run_warnings`)."""
    if tuple(image.shape[1:]) != tuple(mask.shape[1:]):
        raise DataReadError(
            mask_path,
            f"mask size {tuple(mask.shape[1:])} (X, Y[, Z]) differs from its image {image_path} of size "
            f"{tuple(image.shape[1:])}; image and mask must cover the same pixels.",
        )
    run = _RUN.get()
    if run is not None and not bool(torch.as_tensor(mask).any()):
        run.background_masks.append(str(mask_path))


class _Writer:
    """Names output files uniquely and records relative paths."""

    def __init__(self, out: Path):
        self.out = out
        self.used: set[str] = set()
        for d in _OUTPUT_DIRS:
            (out / d).mkdir(parents=True, exist_ok=True)

    def name(self, stem: str, ext: str) -> str:
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", stem) or "item"
        cand, i = stem, 1
        while cand.lower() in self.used:
            cand, i = f"{stem}_{i}", i + 1
        self.used.add(cand.lower())
        return cand + ext

    def ct_pair(self, image: MetaTensor, mask: MetaTensor | None, name: str) -> dict:
        item = {"image": f"images/{name}"}
        _save_nifti_2d(image, self.out / item["image"], np.float32)
        if mask is not None:
            item["label"] = f"labels/{name}"
            _save_nifti_2d(mask, self.out / item["label"], np.uint8)
        return item

    def picture_pair(self, src: Path, mask: MetaTensor | None, name_stem: str) -> dict:
        fname = self.name(name_stem, _ext(src))
        item = {"image": f"images/{fname}"}
        shutil.copyfile(src, self.out / item["image"])
        if mask is not None:
            item["label"] = f"labels/{file_stem(fname)}.png"
            _save_png_mask(mask, self.out / item["label"])
        return item


def _ext(p: Path) -> str:
    return ".nii.gz" if p.name.lower().endswith(".nii.gz") else p.suffix.lower()


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


# ---------------------------------------------------------------------------------------------------- datalist


#: the keys of a prepared item the datalist keeps (``fov`` and ``second_observer``: :mod:`.prepare_public`)
ITEM_KEYS = ("image", "label", "fov", "second_observer")


def _strip(items: Sequence[dict], keys=ITEM_KEYS) -> list[dict]:
    return [{k: it[k] for k in keys if k in it} for it in items]


def build_datalist(pool: dict, labeled_fraction: Any = "1/8", seed: int = 0) -> dict:
    """Datalist for one labelled fraction and seed from a prepared ``pool`` (see module doc)."""
    train = pool["train"]
    if not train:
        raise ValueError("the prepared pool has no labelled training images; nothing to split.")
    labeled, rest = split_labeled(train, labeled_fraction, seed)
    meta = dict(pool["meta"])
    unlabeled = _strip(rest, ("image",)) + _strip(pool.get("extra_unlabeled", []), ("image",))
    meta.update(
        labeled_fraction=fraction_text(labeled_fraction),
        seed=int(seed),
        counts={
            "train": len(train),
            "labeled": len(labeled),
            "unlabeled": len(unlabeled),
            "extra_unlabeled": len(pool.get("extra_unlabeled", [])),
            "validation": len(pool["validation"]),
            "test": len(pool["test"]),
        },
    )
    return {
        "labeled": _strip(labeled),
        "unlabeled": unlabeled,
        "validation": _strip(pool["validation"]),
        "test": _strip(pool["test"]),
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
    where: str = "",
) -> None:
    """Run the hold-out and the labelled split on placeholders (``(group, item count)``) before anything is
    written, so impossible options fail at once and with the same message as the real split."""
    placeholders = [{"group": g} for g, n in groups for _ in range(max(1, int(n)))]
    train, _, _ = _holdout(placeholders, val_fraction, test_fraction, val_seed, where)
    num_labeled(len(train), labeled_fraction)


def _unit(items: Sequence[dict]) -> str:
    """What the items are, for messages: ``slices`` (2D NIfTI written from volumes / DICOM), ``images`` (pictures)."""
    kinds = sorted({"slices" if it["image"].endswith(".nii.gz") else "images" for it in items}, reverse=True)
    return " and ".join(kinds) or "items"


def _warn_hidden_labels(where: str, train: Sequence[dict], labeled_fraction: Any) -> None:
    """``folder``: the user's own masks are data to train on; say so loudly when the labelled fraction (default 1/8,
    the paper's protocol for simulating scarcity) turns most of them into unlabelled items.  Not kept in
    ``meta.warnings``: ``pool.json``'s meta is shared by the datalists of every other fraction."""
    n_labeled = num_labeled(len(train), labeled_fraction)
    if n_labeled < len(train):
        unit = _unit(train)
        warnings.warn(
            f"{where}{len(train) - n_labeled} of your {len(train)} labelled training {unit} are used as unlabelled "
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


# ------------------------------------------------------------------------------------------------------- covid


def _expand_inputs(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """Files stay; a DICOM series folder stays; any other folder becomes its supported files / series sub-folders."""
    out: list[Path] = []
    for p in paths:
        p = Path(p)
        if not p.exists():
            raise DataReadError(p, "no such file or folder.")
        if p.is_dir() and not list_dicom_files(p):
            found = sorted(
                q for q in p.iterdir()
                if not q.name.startswith(".") and (is_supported_file(q) or (q.is_dir() and list_dicom_files(q)))
            )
            if not found:
                raise DataReadError(p, "folder holds no DICOM, NIfTI or picture files.")
            out.extend(found)
        else:
            out.append(p)
    return out


class _Unzip:
    """Zips given to ``prepare covid`` (MedSeg's ``rp_im.zip``, ``rp_msk.zip``), extracted with :mod:`zipfile`
    into one temporary folder that is removed when the run ends, failed or not.  Error messages name the zip
    and its member (``rp_msk.zip:rp_msk/3.nii.gz``), never the temporary copy."""

    def __init__(self) -> None:
        self.tmp: Path | None = None
        self.shown: dict[str, str] = {}  # extraction folder -> "zip path:"

    def __enter__(self) -> _Unzip:
        return self

    def __exit__(self, *exc) -> None:
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def extract(self, zpath: Path) -> Path:
        import tempfile
        import zipfile

        if self.tmp is None:
            self.tmp = Path(tempfile.mkdtemp(prefix="medsemiseg-unzip-")).resolve()
        dest = self.tmp / str(len(self.shown))
        try:
            with zipfile.ZipFile(zpath) as zf:
                for info in zf.infolist():
                    target = (dest / info.filename).resolve()
                    if target != dest and dest not in target.parents:
                        raise DataReadError(zpath, f"member {info.filename!r} would be written outside the "
                                                   "extraction folder; refusing this zip.")
                zf.extractall(dest)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError) as e:
            raise DataReadError(zpath, f"cannot be extracted as a zip file ({e}); download it again.") from None
        self.shown[str(dest)] = f"{zpath}:"
        return dest

    def show(self, path: Path | str) -> str:
        """The name of ``path`` for messages and ``meta``: ``zip:member`` for an extracted file."""
        text = str(path)
        for d, z in self.shown.items():
            if text == d or text.startswith(d + os.sep):
                return z + text[len(d) + 1:]
        return text

    def fix(self, message: str) -> str:
        for d, z in self.shown.items():
            message = message.replace(d + os.sep, z)
        return message


def _is_zip(p: Path) -> bool:
    return p.name.lower().endswith(".zip")


def _volume_name(volume: Path, container: Path | None) -> str:
    """Output stem of a volume: its file stem; a bare number (MedSeg's zips hold ``1.nii.gz`` ... ``9.nii.gz``) gets
    the name of its zip or folder in front, so ``rp_im.zip`` member ``1.nii.gz`` gives ``rp_im_1_000.nii.gz``."""
    stem = file_stem(volume)
    return f"{file_stem(container)}_{stem}" if container is not None and stem.isdigit() else stem


def _covid_volumes(paths: Sequence[str | os.PathLike], unzip: _Unzip) -> tuple[list[Path], dict[Path, str]]:
    """:func:`_expand_inputs`, with ``.zip`` files extracted (:class:`_Unzip`) and replaced by the volumes they hold;
    returns the volumes and their output stems (:func:`_volume_name`)."""
    vols: list[Path] = []
    names: dict[Path, str] = {}
    for arg in paths:
        arg = Path(arg)
        if _is_zip(arg) and arg.is_file():
            root = unzip.extract(arg)
            found = sorted(
                q for q in root.rglob("*")
                if q.is_file() and is_supported_file(q)
                and not any(part.startswith(".") or part == "__MACOSX" for part in q.relative_to(root).parts)
            )
            if not found:
                raise DataReadError(arg, "zip holds no NIfTI, DICOM or picture files.")
        elif arg.is_dir() and not list_dicom_files(arg):
            found = _expand_inputs([arg])
        else:
            found, arg = _expand_inputs([arg]), None
        for v in found:
            vols.append(v)
            names[v] = _volume_name(v, arg)
    return vols, names


def _rp_pairs(rp_image: Path, rp_mask: Path, unzip: _Unzip) -> tuple[list[tuple[Path, Path | None]], dict]:
    """Radiopaedia (MedSeg set 2) image volumes paired with their masks by file name (``1.nii.gz`` in both)."""
    images, names = _covid_volumes([rp_image], unzip)
    if rp_mask is None:
        return [(v, None) for v in images], names
    masks, _ = _covid_volumes([rp_mask], unzip)
    by_key: list[dict[str, Path]] = []
    for vols, option in ((images, "--rp-image"), (masks, "--rp-mask")):
        keyed: dict[str, Path] = {}
        for v in vols:
            key = file_stem(v)
            if key in keyed:
                raise DataReadError(None, f"{option}: two volumes named {key!r}: {unzip.show(keyed[key])} and "
                                          f"{unzip.show(v)}; image and mask volumes are paired by file name.")
            keyed[key] = v
        by_key.append(keyed)
    imgs, msks = by_key
    lonely_img = [unzip.show(imgs[k]) for k in imgs if k not in msks]
    lonely_msk = [unzip.show(msks[k]) for k in msks if k not in imgs]
    if lonely_img or lonely_msk:
        parts = []
        if lonely_img:
            parts.append(f"image volume(s) without a mask of the same file name in {rp_mask}: {', '.join(lonely_img)}")
        if lonely_msk:
            parts.append(f"mask volume(s) without an image of the same file name in {rp_image}: "
                         f"{', '.join(lonely_msk)}")
        raise DataReadError(None, "--rp-image / --rp-mask: " + "; ".join(parts) + ". Image and mask volumes are "
                                  "paired by file name (1.nii.gz with 1.nii.gz); give matching sets (images without "
                                  "masks can go to --unlabeled).")
    return [(imgs[k], msks[k]) for k in imgs], names


def _read_covid_pair(image: Path, mask: Path, segment_map: Mapping | None = None):
    """Image volume + its MedSeg mask (0..3, no 0/255), on the image's grid; ``(img, lab, geometry)``."""
    img = read_image(image)
    lab = read_mask(mask, None, dtype=torch.uint8, reference=img, class_names=COVID_CLASSES, segment_map=segment_map)
    _check_covid_labels(lab, mask)
    _refuse_covid_255(lab, mask)
    lab, geometry = align_mask(img, lab, image, mask)
    _check_same_size(img, lab, image, mask)
    return img, lab, geometry


@_one_run
def prepare_covid(
    image: str | os.PathLike,
    mask: str | os.PathLike,
    out: str | os.PathLike,
    *,
    unlabeled: Sequence[str | os.PathLike] = (),
    labeled_fraction: Any = "1/8",
    seed: int = 0,
    val_fraction: Any = 0.1,
    test_fraction: Any = 0.2,
    val_seed: int = 0,
    orientation: str = "as-stored",
    segment_map: Mapping | None = None,
    rp_image: str | os.PathLike | None = None,
    rp_mask: str | os.PathLike | None = None,
    rp_orientation: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """MedSeg COVID-19 CT (``tr_im.nii.gz`` + ``tr_mask.nii.gz``, or a DICOM series + mask) -> 2D slices.

    Kaggle's NumPy copy works too: ``images_medseg.npy`` + ``masks_medseg.npy`` (one-hot), with
    ``images_radiopedia.npy`` / ``test_images_medseg.npy`` as unlabelled stacks (:mod:`.kaggle_medseg`).
    The mask of a DICOM series may be a DICOM SEG object: its segments get their class by label (``Ground
    glass`` -> 1, ...) or by ``segment_map`` (:mod:`medsemiseg.data.dicom_seg`).

    Each slice of the labelled stack is its own group (MedSeg set 1 mixes >40 patients with no patient ids).
    ``test_fraction`` of the slices is held out as test, then ``val_fraction`` of the rest as validation; the
    remaining training slices are split labelled / unlabelled by ``labeled_fraction`` and ``seed``.  Every slice
    of the ``unlabeled`` volumes joins the unlabelled pool.  Returns the path of ``datalist.json``.

    MedSeg set 2 (Radiopaedia): ``rp_image`` (``rp_im.zip`` or its folder) with ``rp_mask`` (``rp_msk.zip``),
    paired by file name, adds labelled volumes whose slices stay together (one group per volume) in the hold-out;
    ``rp_image`` alone adds them as unlabelled.  ``rp_orientation`` (default ``orientation``) is applied to
    their images and masks alike.  ``.zip`` files are accepted in ``unlabeled`` too.
    """
    for opt, value in (("--orientation", orientation), ("--rp-orientation", rp_orientation)):
        if value is not None and value not in ORIENTATIONS:
            raise ValueError(f"{opt} {value!r}: choose one of {', '.join(ORIENTATIONS)}.")
    if rp_mask is not None and rp_image is None:
        raise ValueError("--rp-mask needs --rp-image (the Radiopaedia image volumes: rp_im.zip or its folder).")
    with _Unzip() as unzip:
        try:
            return _prepare_covid(
                Path(image), Path(mask), out, unzip, unlabeled=unlabeled, labeled_fraction=labeled_fraction,
                seed=seed, val_fraction=val_fraction, test_fraction=test_fraction, val_seed=val_seed,
                orientation=orientation, segment_map=segment_map,
                rp_image=None if rp_image is None else Path(rp_image),
                rp_mask=None if rp_mask is None else Path(rp_mask),
                rp_orientation=orientation if rp_orientation is None else rp_orientation,
                overwrite=overwrite, progress=progress,
            )
        except DataReadError as e:
            if unzip.tmp is None or str(unzip.tmp) not in str(e):
                raise
            raise DataReadError(None, unzip.fix(str(e))) from None
        except ValueError as e:
            if unzip.tmp is None or str(unzip.tmp) not in str(e):
                raise
            raise ValueError(unzip.fix(str(e))) from None


def _prepare_covid(
    image: Path, mask: Path, out, unzip: _Unzip, *, unlabeled, labeled_fraction, seed, val_fraction, test_fraction,
    val_seed, orientation, segment_map, rp_image: Path | None, rp_mask: Path | None, rp_orientation: str, overwrite,
    progress,
) -> Path:
    parse_fraction(labeled_fraction)
    extra, extra_names = _covid_volumes(unlabeled, unzip)
    rp_pairs, rp_names = _rp_pairs(rp_image, rp_mask, unzip) if rp_image is not None else ([], {})
    if rp_pairs:
        rp_args = {rp_image.resolve()} | {v.resolve() for v, _ in rp_pairs}
        for arg in unlabeled:
            if Path(arg).resolve() in rp_args:
                raise ValueError(f"--unlabeled {arg} is also --rp-image: its volumes would be used twice (and, when "
                                 "labelled, validation/test slices would leak into training); leave it out of "
                                 "--unlabeled.")
    source = str(image.resolve())
    img = read_npy_images(image) if is_npy(image) else read_image(image)
    if is_npy(mask):
        lab = read_npy_masks(mask, num_classes=len(COVID_CLASSES))
    else:
        lab = read_mask(mask, None, dtype=torch.uint8, reference=img, class_names=COVID_CLASSES,
                        segment_map=segment_map)
        _check_covid_labels(lab, mask)
        _refuse_covid_255(lab, mask)
    lab, geometry = align_mask(img, lab, image, mask)
    _check_same_size(img, lab, image, mask)
    unchecked = [mask] if geometry == "unchecked" and not is_npy(image) and not is_npy(mask) else []
    reoriented = [mask] if geometry == "reoriented" else []
    rp_sizes: list[int] = []
    for v, m in rp_pairs:  # read and check every Radiopaedia pair before anything is written
        if m is None:
            rp_sizes.append(0)
            continue
        r_img, _r_lab, r_geo = _read_covid_pair(v, m)
        rp_sizes.append(_nz(r_img))
        unchecked += [unzip.show(m)] if r_geo == "unchecked" else []
        reoriented += [unzip.show(m)] if r_geo == "reoriented" else []
        del r_img, _r_lab
    if unchecked:
        _note_unchecked(unchecked)
    _note_reoriented(reoriented)
    plan = [(f"{file_stem(image)}:{k}", 1) for k in range(_nz(img))]
    plan += [(rp_names[v], n) for (v, m), n in zip(rp_pairs, rp_sizes) if m is not None]
    _check_plan(plan, val_fraction, test_fraction, val_seed, labeled_fraction, f"{image}: ")
    inputs = [image, mask, *[Path(u) for u in unlabeled], *[p for p in (rp_image, rp_mask) if p is not None]]
    dest = _Output(out, "covid", source, overwrite, inputs)
    writer = _Writer(dest.stage)
    stem = file_stem(image)
    train: list[dict] = []
    pairs = zip(iter_slices(img), iter_slices(lab))
    for k, (s_img, s_lab) in enumerate(_progress(pairs, _nz(img), f"covid {stem}", progress)):
        name = writer.name(f"{stem}_{k:03d}", ".nii.gz")
        item = writer.ct_pair(orient_slice(s_img, orientation), orient_slice(s_lab, orientation), name)
        train.append({**item, "group": f"{stem}:{k}"})
    del img, lab
    rp_unlabeled = [v for v, m in rp_pairs if m is None]
    for v, m in rp_pairs:
        if m is None:
            continue
        r_img, r_lab, _ = _read_covid_pair(v, m)
        name_stem = rp_names[v]
        pairs = zip(iter_slices(r_img), iter_slices(r_lab))
        for k, (s_img, s_lab) in enumerate(_progress(pairs, _nz(r_img), f"covid {name_stem}", progress)):
            name = writer.name(f"{name_stem}_{k:03d}", ".nii.gz")
            item = writer.ct_pair(orient_slice(s_img, rp_orientation), orient_slice(s_lab, rp_orientation), name)
            train.append({**item, "group": name_stem})  # a whole volume (one patient) is one group
    extra_items = _unlabeled_slices(extra, writer, orientation, progress, names=extra_names)
    extra_items += _unlabeled_slices(rp_unlabeled, writer, rp_orientation, progress, names=rp_names)
    train, val, test = _holdout(train, val_fraction, test_fraction, val_seed, f"{image}: ")
    _warn_splits(str(image), val, test)
    inputs_meta = {"image": source, "mask": str(mask.resolve()),
                   "unlabeled": [unzip.show(p.resolve()) for p in extra]}
    if rp_image is not None:
        inputs_meta.update(rp_image=str(rp_image.resolve()),
                           rp_mask=None if rp_mask is None else str(rp_mask.resolve()),
                           rp_volumes=[[unzip.show(v.resolve()), None if m is None else unzip.show(m.resolve())]
                                       for v, m in rp_pairs])
    pool = {
        "meta": {
            "task": "covid",
            "classes": COVID_CLASSES,
            "source": source,
            "inputs": inputs_meta,
            "orientation": orientation,
            **({"rp_orientation": rp_orientation} if rp_image is not None else {}),
            "val_fraction": val_fraction,
            "test_fraction": test_fraction,
            "val_seed": int(val_seed),
            "format": "2D NIfTI float32 HU images, uint8 masks; arrays (X, Y), show upright as a.T",
            "warnings": _run_warnings(),
        },
        "train": train,
        "extra_unlabeled": extra_items,
        "validation": val,
        "test": test,
    }
    return dest.commit(pool, labeled_fraction, seed)


def _check_covid_labels(lab: torch.Tensor, mask: Path) -> None:
    found = np.unique(lab.detach().cpu().numpy())
    bad = found[found >= len(COVID_CLASSES)]
    if bad.size:
        raise DataReadError(
            mask,
            f"label values {[int(v) for v in bad[:12]]} are outside MedSeg's classes 0..{len(COVID_CLASSES) - 1} "
            f"({', '.join(f'{i} {c}' for i, c in enumerate(COVID_CLASSES))}; values found: "
            f"{[int(v) for v in found[:12]]}). `prepare covid` has exactly these classes: fix the mask (a DICOM SEG: "
            "--segment-map), or prepare data with other classes with `python -m medsemiseg.prepare folder`.",
        )


def _refuse_covid_255(lab: torch.Tensor, mask: Path) -> None:
    """``read_mask`` turns a 0/255 mask into 0/1, which for covid would be class 1 (ground-glass): a MedSeg mask
    holding 255 is an error, not converted."""
    found = torch.unique(lab)
    if not found.numel() or not bool(torch.all((found == 0) | (found == 1))) or not bool(torch.any(found == 1)):
        return  # the 0/255 conversion cannot have happened
    if mask.is_file() and detect_format(mask) == "dicom":
        from .io import _read_dicom_header, is_seg_header

        if is_seg_header(_read_dicom_header(mask)):
            return  # DICOM SEG segments get their class by label, never by 0/255
    raw = read_image(mask)
    if bool(torch.any(raw == 255)):
        found = np.unique(raw.numpy())
        raise DataReadError(
            mask,
            f"label values [255] are outside MedSeg's classes 0..{len(COVID_CLASSES) - 1} "
            f"({', '.join(f'{i} {c}' for i, c in enumerate(COVID_CLASSES))}; values found: "
            f"{[int(v) for v in found[:12]]}). A 0/255 (binary) mask is not turned into class 1 (ground-glass) by "
            "`prepare covid`: give the MedSeg mask with values 0..3, or prepare a binary data set with "
            "`python -m medsemiseg.prepare folder`.",
        )


def _note_unchecked(masks: Sequence[Path]) -> None:
    if masks:
        shown = ", ".join(str(m) for m in masks[:3]) + (", ..." if len(masks) > 3 else "")
        _warn(
            f"orientation could not be checked for {len(masks)} mask(s) against their images, because the mask or "
            f"the image carries no geometry (a picture, or NIfTI with an identity / no affine): {shown}. Only "
            "their array shapes were compared; make sure they are stored in their image's voxel order.",
            PrepareNote,
        )


def _note_reoriented(masks: Sequence[Path]) -> None:
    if masks:
        shown = ", ".join(str(m) for m in masks[:3]) + (", ..." if len(masks) > 3 else "")
        _warn(f"{len(masks)} mask(s) stored in another axis order / orientation than their images were put on the "
              f"image's voxel grid (by their affines): {shown}.", PrepareNote)


def _nz(img: torch.Tensor) -> int:
    return 1 if img.ndim == 3 else int(img.shape[-1])


def _unlabeled_slices(
    paths: Sequence[Path], writer: _Writer, orientation: str, progress: bool, check=None,
    names: Mapping[Path, str] | None = None,
) -> list[dict]:
    """``check(img, path)``, if given, vets each input as read (e.g. CHASE: RGB only) before it is written;
    ``names`` overrides the output stem of some inputs (default: the file's stem)."""
    items: list[dict] = []
    for p in paths:
        fmt = "npy" if is_npy(p) else detect_format(p)
        stem = (names or {}).get(p) or file_stem(p)
        if fmt == "picture":
            img = read_image(p)  # copied as is, but it must decode: a broken file fails here, named, not in training
            if check is not None:
                check(img, p)
            items.append({**writer.picture_pair(p, None, stem), "group": f"unlabeled:{stem}"})
            continue
        img = read_npy_images(p) if fmt == "npy" else read_image(p)
        if check is not None:
            check(img, p)
        for k, s in enumerate(_progress(iter_slices(img), _nz(img), f"unlabeled {stem}", progress)):
            name = writer.name(f"{stem}_{k:03d}" if img.ndim == 4 else stem, ".nii.gz")
            items.append({**writer.ct_pair(orient_slice(s, orientation), None, name), "group": f"unlabeled:{stem}"})
    return items


# ------------------------------------------------------------------------------------------------------- chase

def _check_chase_rgb(img: torch.Tensor, path: Path) -> None:
    """CHASE images, labelled or unlabelled, must be RGB (3 channels): the pictures are copied as is and one
    training batch stacks them, so a grey (1-channel) picture would crash training; refuse it here, named."""
    if int(img.shape[0]) != 3:
        kind = {1: "grey (1 channel)", 4: "RGBA"}.get(int(img.shape[0]), f"{int(img.shape[0])} channels")
        raise DataReadError(
            path,
            f"is {kind}, but CHASE_DB1 images must be RGB (3 channels) like the labelled fundus photographs; "
            "`prepare chase` copies pictures as they are and does not convert them. Convert it to RGB first (e.g. "
            "PIL: Image.open(path).convert('RGB').save(...), which repeats grey values into R, G and B).",
        )


_CHASE_RE = re.compile(r"^Image_(\d+)([LR])\.(jpe?g|png|tiff?)$", re.IGNORECASE)


@_one_run
def prepare_chase(
    src_dir: str | os.PathLike,
    out: str | os.PathLike,
    *,
    protocol: str = "20/8",
    observer: str = "1stHO",
    unlabeled: Sequence[str | os.PathLike] = (),
    labeled_fraction: Any = "1/8",
    seed: int = 0,
    val_fraction: Any = 0,
    val_seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """CHASE_DB1 (``Image_01L.jpg`` ... with ``Image_01L_1stHO.png`` masks) -> images + 0/1 PNG masks.

    Train / test by the sorted-name ``protocol`` (``"20/8"`` default: 01L-10R train, 11L-14R test; ``"8/20"``
    older: the same 8 images in the opposite role, 11L-14R train, 01L-10R test).  With ``val_fraction``
    0 (default) the validation list *is* the test list (mmsegmentation's convention on this tiny data set);
    otherwise that share of the training images is held out, whole children (L and R eye) at a time.
    Masks: channel 0, >= 128 -> vessel (palette PNGs by their palette colour).  Every image, labelled or
    ``unlabeled``, must be RGB (a grey picture is refused, named).  Returns the path of ``datalist.json``.
    """
    src = Path(src_dir)
    if not src.is_dir():
        raise DataReadError(src, "is not a folder; give the CHASE_DB1 folder holding Image_01L.jpg ...")
    if observer not in ("1stHO", "2ndHO"):
        raise ValueError(f"--observer {observer!r}: choose 1stHO (usual ground truth) or 2ndHO.")
    images = sorted(p for p in src.iterdir() if _CHASE_RE.match(p.name))
    if not images:
        raise DataReadError(src, "holds no CHASE_DB1 images (Image_01L.jpg ... Image_14R.jpg).")
    if len(images) != 28:
        _warn(f"{src}: {len(images)} CHASE_DB1 images instead of 28; protocol {protocol} scaled.")
    extra = _expand_inputs(unlabeled)
    source = str(src.resolve())
    train_names, test_names = chase_protocol_split([p.name for p in images], protocol)
    parse_fraction(labeled_fraction)
    child = {p.name: f"child{int(_CHASE_RE.match(p.name).group(1)):02d}" for p in images}
    _check_plan([(child[n], 1) for n in train_names], val_fraction, 0, val_seed, labeled_fraction, f"{src}: ")
    dest = _Output(out, "chase", source, overwrite, [src, *extra])
    writer = _Writer(dest.stage)
    items: dict[str, dict] = {}
    for p in _progress(images, len(images), "chase", progress):
        stem = file_stem(p)
        candidates = [q for q in src.glob(f"{stem}_{observer}.*") if q.suffix.lower() in PICTURE_SUFFIXES]
        if not candidates:
            raise DataReadError(p, f"has no {observer} mask (expected {src / (stem + '_' + observer + '.png')}).")
        img = read_image(p)
        _check_chase_rgb(img, p)
        lab = read_mask(candidates[0], len(CHASE_CLASSES), threshold=128, channel=0, dtype=torch.uint8)
        _check_same_size(img, lab, p, candidates[0])
        child = _CHASE_RE.match(p.name).group(1)
        items[p.name] = {**writer.picture_pair(p, lab, stem), "group": f"child{int(child):02d}"}
    train = [items[n] for n in train_names]
    test = [items[n] for n in test_names]
    if resolve_count(val_fraction, len(train), name="--val-fraction") > 0:
        train, val, _ = _holdout(train, val_fraction, 0, val_seed, f"{src}: ")
        val_is_test = False
    else:
        val, val_is_test = list(test), True
    extra_items = _unlabeled_slices(extra, writer, "as-stored", progress, check=_check_chase_rgb)
    pool = {
        "meta": {
            "task": "chase",
            "classes": CHASE_CLASSES,
            "source": source,
            "inputs": {"src_dir": source, "unlabeled": [str(p.resolve()) for p in extra]},
            "protocol": protocol,
            "observer": observer,
            "val_fraction": val_fraction,
            "validation_is_test": val_is_test,
            "val_seed": int(val_seed),
            "format": "fundus pictures copied as is (RGB 0-255), masks 0/1 PNG",
            "warnings": _run_warnings(),
        },
        "train": train,
        "extra_unlabeled": extra_items,
        "validation": val,
        "test": test,
    }
    return dest.commit(pool, labeled_fraction, seed)


# ------------------------------------------------------------------------------------------------------ folder


def _is_mask_name(p: Path) -> bool:
    return file_stem(p).lower().endswith(_MASK_SUFFIXES)


def _image_sources(folder: Path, skip_dirs: set[str]) -> tuple[list[Path], list[Path]]:
    """(images, skipped files) in ``folder``: supported files that are not masks, and DICOM series sub-folders."""
    images, skipped = [], []
    for q in sorted(folder.iterdir()):
        if q.name.startswith("."):
            continue
        if q.is_dir():
            if q.name.lower() not in skip_dirs and list_dicom_files(q):
                images.append(q)
            continue
        if is_supported_file(q):
            if not _is_mask_name(q):
                images.append(q)
        else:
            skipped.append(q)
    return images, skipped


def _files_by_stem(folder: Path, cache: dict | None) -> dict[str, list[Path]]:
    """``{stem: [files]}`` of the supported files in ``folder``, listed once per ``cache`` (a folder of N images was
    listed and sorted once per image: quadratic, 98 s of silence at 2000 images)."""
    if cache is not None and folder in cache:
        return cache[folder]
    index: dict[str, list[Path]] = {}
    for q in sorted(folder.iterdir()):
        if q.is_file() and is_supported_file(q):
            index.setdefault(file_stem(q), []).append(q)
    if cache is not None:
        cache[folder] = index
    return index


def _mask_folders(src: Path) -> list[Path]:
    """The folders of ``src`` that hold masks by name: ``labels/final/`` (MONAI Label's datastore keeps its confirmed
    labels there; ``labels/original/`` holds model predictions, never used), ``labels/``, ``masks/``."""
    names = (Path("labels") / "final", "labels", "masks", "Labels", "Masks")
    return [src / d for d in names if (src / d).is_dir()]


def find_mask(image: Path, src: Path, listing_cache: dict | None = None) -> Path | None:
    """The mask of ``image`` by the documented rule (see ``docs/data.md``), or ``None``.

    Looked for, in order: ``SRC/labels/final/<stem>.*`` (MONAI Label's datastore), ``SRC/labels/<stem>.*``,
    ``SRC/masks/<stem>.*`` (also with a ``_mask``/``_label``/``_seg`` suffix there), then next to the image
    ``<stem>_mask.*``, ``<stem>_label.*``, ``<stem>_seg.*``, ``<stem>_gt.*``. More than one match in the first place
    that has any is an error. ``listing_cache`` (a dict the caller keeps for one data set) lists each folder once.
    """
    stem = file_stem(image)
    places: list[tuple[Path, list[str]]] = []
    for folder in _mask_folders(src):
        places.append((folder, [stem] + [stem + s for s in _MASK_SUFFIXES]))
    places.append((image.parent, [stem + s for s in _MASK_SUFFIXES]))
    for folder, stems in places:
        index = _files_by_stem(folder, listing_cache)
        hits = sorted({q for st in stems for q in index.get(st, ()) if q != image})
        if len(hits) > 1:
            raise DataReadError(image, f"has several candidate masks {[str(h) for h in hits]}; keep only one.")
        if hits:
            return hits[0]
    return None


def _check_one_image_per_mask(pairs: Sequence[tuple[Path, Path | None]]) -> None:
    """Images sharing a name (``a.png`` and ``a.jpg``) would share ``labels/a.png``: refuse, never guess."""
    by_mask: dict[Path, list[Path]] = {}
    for p, m in pairs:
        if m is not None:
            by_mask.setdefault(m, []).append(p)
    for m, imgs in by_mask.items():
        if len(imgs) > 1:
            other = imgs[1]
            raise DataReadError(
                m,
                f"is the only mask found for several images ({', '.join(str(p) for p in imgs)}), which share the "
                f"name '{file_stem(imgs[0])}'; a mask belongs to one image. Keep one image per name: rename the "
                f"others (e.g. {other.name} -> {file_stem(other)}_2{_ext(other)}) and give each its own mask, or "
                "move them to unlabeled/.",
            )


def _name_key(stem: str) -> str:
    """Case- and zero-padding-insensitive form of a name, without a mask suffix: ``Case07_mask`` -> ``case7``."""
    s = stem.lower()
    for suf in _MASK_SUFFIXES:
        if s.endswith(suf):
            s = s[: -len(suf)]
            break
    return re.sub(r"\d+", lambda mt: str(int(mt.group())), s)


def _warn_orphan_masks(
    src: Path, img_root: Path, pairs: Sequence[tuple[Path, Path | None]], unl_images: Sequence[Path]
) -> list[Path]:
    """Warn about mask files that match no image (``labels/Case07.png`` for ``case7.png``); returns them."""
    used = {m.resolve() for _, m in pairs if m is not None}
    unl_stems = {file_stem(p) for p in unl_images}  # masks of unlabeled/ images are ignored by design
    found: dict[Path, Path] = {}
    for folder in _mask_folders(src):
        for q in sorted(folder.iterdir()):
            if q.is_file() and not q.name.startswith(".") and is_supported_file(q):
                found.setdefault(q.resolve(), q)
    for q in sorted(img_root.iterdir()):
        if q.is_file() and not q.name.startswith(".") and is_supported_file(q) and _is_mask_name(q):
            found.setdefault(q.resolve(), q)
    orphans = [
        q for r, q in found.items()
        if r not in used and file_stem(q) not in unl_stems and _name_key(file_stem(q)) not in map(_name_key, unl_stems)
    ]
    if orphans:
        keys: dict[str, list[str]] = {}
        for p, _ in pairs:
            keys.setdefault(_name_key(file_stem(p)), []).append(p.name)
        described = []
        for q in orphans:
            likely = keys.get(_name_key(file_stem(q)))
            described.append(f"{q}" + (f" (likely the mask of {' / '.join(likely)}: the names differ in case or "
                                       "zero padding)" if likely else ""))
        _warn(
            f"{src}: {len(orphans)} mask file(s) match no image and were ignored: {'; '.join(described)}. A mask is "
            "matched by the exact image name (docs/data.md, 'folder'): rename it (or the image) so the names match; "
            "until then such an image is unlabelled."
        )
    return orphans


_MAX_AUTO_CLASSES = 16  # more labels than this without --num-classes: not a label map (JPEG / anti-aliased)


def _is_dicom_seg(p: Path) -> bool:
    from .io import _read_dicom_header, is_seg_header

    return p.is_file() and detect_format(p) == "dicom" and is_seg_header(_read_dicom_header(p))


def _values_text(values: Sequence[int], files: Mapping[int, int] | None = None, limit: int = 10) -> str:
    """``0 (12), 1 (12), ..., 255 (3)`` (value (files holding it)); the first and last ones beyond ``limit``."""
    shown = [f"{v} ({files[v]})" if files else str(v) for v in values]
    if len(shown) > limit:
        shown = shown[: limit - 3] + ["..."] + shown[-2:]
    return ", ".join(shown)


def _survey_mask_values(
    masks: Sequence[Path], num_classes: int | None, mask_threshold: float | None, where: str
) -> bool:
    """Check the label values of all masks of a folder together, before anything is written; returns whether
    255 means 1 (every mask holds only 0 and 255, or only 0).

    Without ``num_classes`` (declared by ``--num-classes`` or ``--class-names``) the values found must be a label map ``0..K-1`` without gaps and with at most
    :data:`_MAX_AUTO_CLASSES` classes: a JPEG or anti-aliased binary mask (values 0..255 smeared along edges) or a
    stray voxel would otherwise become hundreds of classes.  Masks holding 0/1 next to masks holding 0/255 are an
    error too (255 would be 1 in some and a class in others).  DICOM SEG masks are label maps by construction
    (classes from their segments) and are not surveyed; with ``mask_threshold`` nothing is (masks become 0/1).
    """
    if mask_threshold is not None:
        return False
    jpeg = [m for m in masks if m.suffix.lower() in (".jpg", ".jpeg")]
    if jpeg:
        _warn(f"{where}{len(jpeg)} mask(s) are JPEG (e.g. {jpeg[0]}): JPEG is lossy and changes label values "
              "along edges; save masks as PNG or NIfTI, or for a binary task pass --mask-threshold 128.")
    found: dict[Path, set[int]] = {}
    for m in masks:
        if not _is_dicom_seg(m):
            found[m] = {int(v) for v in torch.unique(read_mask(m, None, binary_255=False).as_tensor()).tolist()}
    if not found:
        return False
    ones = [m for m, v in found.items() if 1 in v and v <= {0, 1}]
    two55 = [m for m, v in found.items() if 255 in v and v <= {0, 255}]
    union = set().union(*found.values())
    if ones and two55 and union <= {0, 1, 255}:
        raise DataReadError(
            None,
            f"{where}the masks mix two binary encodings: {len(ones)} hold 0/1 (e.g. {ones[0]}) and {len(two55)} hold "
            f"0/255 (e.g. {two55[0]}), so 255 cannot be read as 1 in some and kept as a class in others. Re-save "
            "them one way, or for a binary task pass --mask-threshold 1 (value >= 1 -> 1 for both).",
        )
    if union <= {0, 255}:
        return 255 in union
    if num_classes is not None:
        return False  # read_mask checks 0..num_classes-1 per file, naming it
    first_gap = next(k for k in range(1, len(union) + 2) if k not in union)
    limit = min(first_gap, _MAX_AUTO_CLASSES)
    if min(union) >= 0 and max(union) < limit:
        return False
    bad = {v for v in union if v < 0 or v >= limit}
    files = {v: sum(v in vals for vals in found.values()) for v in union}
    rarest = min(sorted(bad), key=files.get)  # a stray voxel's value, an anti-aliasing grey: the file to look at
    example = next(m for m, vals in found.items() if rarest in vals)
    lossy = " (JPEG is lossy)" if jpeg else ""
    raise DataReadError(
        None,
        f"{where}the masks are not label maps 0..K-1: {len(union)} distinct values in {len(found)} mask(s) "
        f"(value (masks holding it)): {_values_text(sorted(union), files)}; e.g. {example} holds "
        f"{_values_text(sorted(found[example]))}. "
        f"Labels must be 0..K-1 without gaps, at most {_MAX_AUTO_CLASSES} classes unless --num-classes is given. "
        f"Binary masks saved lossy or anti-aliased{lossy}: pass --mask-threshold 128 (value >= 128 -> 1); if these "
        "values are all real classes: --num-classes K; else re-save the masks as PNG or NIfTI without "
        "interpolation (nearest neighbour), labels 0..K-1.",
    )


def _count_items(p: Path) -> int:
    """Slices a labelled input will give, from its header only (for :func:`_check_plan`); 1 when unsure."""
    try:
        fmt = detect_format(p)
        if fmt == "dicom-series":
            return max(1, len(list_dicom_files(p)))
        if fmt == "nifti":
            import nibabel as nib

            shape = list(nib.load(str(p)).shape)
            while len(shape) > 2 and shape[-1] == 1:
                shape.pop()
            return int(shape[2]) if len(shape) == 3 else 1
    except Exception:  # the real read reports the problem with the file's name
        return 1
    return 1


@_one_run
def prepare_folder(
    src_dir: str | os.PathLike,
    out: str | os.PathLike,
    *,
    task: str = "folder",
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
    mask_threshold: float | None = None,
    segment_map: Mapping | None = None,
    labeled_fraction: Any = "1/8",
    seed: int = 0,
    val_fraction: Any = 0.1,
    test_fraction: Any = 0.0,
    val_seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Any folder of DICOM series / DICOM files / NIfTI / pictures with optional masks -> 2D items.

    Images with a mask (matched by :func:`find_mask`) form the labelled pool; images without one, and everything in
    ``SRC/unlabeled/``, are unlabelled.  3D inputs become slices that share a group, so validation / test never
    split a volume.  ``num_classes`` defaults to (largest label found) + 1 when the masks' values are a label map
    0..K-1 (:func:`_survey_mask_values`: checked over all masks, which also decides 0/255 -> 0/1 for the whole
    folder; ``mask_threshold``: value >= T -> 1).  A mask may be a DICOM SEG object
    of a DICOM image or series: segments get their class from ``segment_map``, else by label from
    ``class_names`` when every label matches, else by segment number (:mod:`medsemiseg.data.dicom_seg`).
    Returns the path of ``datalist.json``.
    """
    src = Path(src_dir)
    if not src.is_dir():
        raise DataReadError(src, "is not a folder.")
    skip = {"labels", "masks", "unlabeled", "unlabelled", "images"}
    img_root = src / "images" if (src / "images").is_dir() else src
    images, skipped = _image_sources(img_root, skip)
    unl_dir = next((src / d for d in ("unlabeled", "unlabelled") if (src / d).is_dir()), None)
    unl_images, unl_skipped = _image_sources(unl_dir, set()) if unl_dir else ([], [])
    if not images and not unl_images:
        raise DataReadError(
            src,
            "holds no images (DICOM files or series folders, NIfTI, PNG/JPG/TIF/GIF); see docs/data.md for the layout.",
        )
    listing: dict = {}
    pairs = [(p, find_mask(p, src, listing)) for p in images]
    _check_one_image_per_mask(pairs)
    if not any(m for _, m in pairs):
        raise DataReadError(
            src,
            "no image has a mask: put masks in labels/<name>.* or next to the image as <name>_mask.* (a MONAI "
            "Label datastore: save labels as final, labels/final/<name>.*; docs/data.md, 'folder').",
        )
    orphans = _warn_orphan_masks(src, img_root, pairs, unl_images)
    parse_fraction(labeled_fraction)
    _check_plan([(file_stem(p), _count_items(p)) for p, m in pairs if m is not None], val_fraction, test_fraction,
                val_seed, labeled_fraction, f"{src}: ")
    declared = num_classes if num_classes is not None else len(class_names) if class_names else None
    binary_255 = _survey_mask_values([m for _, m in pairs if m is not None], declared, mask_threshold, f"{src}: ")
    source = str(src.resolve())
    dest = _Output(out, task, source, overwrite, [src])
    writer = _Writer(dest.stage)
    unchecked: list[Path] = []
    reoriented: list[Path] = []
    train: list[dict] = []
    max_label = 0
    channels: set[int] = set()
    segment_classes: dict[str, dict] = {}
    for p, m in _progress(pairs, len(pairs), f"folder {src.name}", progress):
        if m is None:
            unl_images.append(p)
            continue
        img = read_image(p)
        lab = read_mask(m, declared, threshold=mask_threshold, dtype=torch.uint8, reference=img,
                        class_names=class_names, segment_map=segment_map, binary_255=binary_255)
        if "segment_classes" in lab.meta:
            segment_classes[str(m)] = lab.meta["segment_classes"]
        lab, geometry = align_mask(img, lab, p, m)
        if geometry == "unchecked":
            unchecked.append(m)
        elif geometry == "reoriented":
            reoriented.append(m)
        _check_same_size(img, lab, p, m)
        max_label = max(max_label, int(lab.max()))
        channels.add(int(img.shape[0]))
        stem = file_stem(p)
        if detect_format(p) == "picture":
            train.append({**writer.picture_pair(p, lab, stem), "group": stem})
            continue
        for k, (si, sl) in enumerate(zip(iter_slices(img), iter_slices(lab))):
            name = writer.name(f"{stem}_{k:03d}" if img.ndim == 4 else stem, ".nii.gz")
            train.append({**writer.ct_pair(si, sl, name), "group": stem})
    extra_items = _unlabeled_slices(unl_images, writer, "as-stored", progress)
    n_cls = int(num_classes) if num_classes is not None else max(2, max_label + 1)
    names = list(class_names) if class_names else ["background"] + [f"class{i}" for i in range(1, n_cls)]
    if len(names) != n_cls:
        raise ValueError(f"--class-names gives {len(names)} names for {n_cls} classes.")
    if len(channels) > 1:
        _warn(f"{src}: images have different channel counts {sorted(channels)}.")
    _note_unchecked(unchecked)
    _note_reoriented(reoriented)
    train, val, test = _holdout(train, val_fraction, test_fraction, val_seed, f"{src}: ")
    _warn_splits(str(src), val, test)
    _warn_hidden_labels(f"{src}: ", train, labeled_fraction)
    pool = {
        "meta": {
            "task": task,
            "classes": names,
            "source": source,
            "inputs": {"src_dir": source, "skipped": [str(q) for q in skipped + unl_skipped],
                       "orphan_masks": [str(q) for q in orphans]},
            "mask_threshold": mask_threshold,
            **({"dicom_seg_classes": segment_classes} if segment_classes else {}),
            "in_channels": sorted(channels)[0] if len(channels) == 1 else sorted(channels),
            "val_fraction": val_fraction,
            "test_fraction": test_fraction,
            "val_seed": int(val_seed),
            "warnings": _run_warnings(),
        },
        "train": train,
        "extra_unlabeled": extra_items,
        "validation": val,
        "test": test,
    }
    return dest.commit(pool, labeled_fraction, seed)


# --------------------------------------------------------------------------------------------------------- CLI


def _count(text: str) -> int | float:
    """``--val-fraction`` / ``--test-fraction``: a share in [0, 1) (a float) or a whole count (an int, written
    without a decimal point). ``1.0`` (``1e0``, ``1.``) is refused as ambiguous -- one item, or all of them? --
    naming both spellings (:func:`~medsemiseg.data.splits.resolve_count` refuses the float 1.0 likewise)."""
    if text.strip().lstrip("+").isdigit():
        return int(text)
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number (fraction in [0, 1) or a whole count)") from None
    if value == 1.0:
        raise argparse.ArgumentTypeError(
            f"{text!r} is ambiguous: give a share of the items below 1 (e.g. 0.1 for 10 %), or a whole count without "
            "a decimal point (e.g. 1 for one item)"
        )
    return value


def _segment_map(text: str) -> dict[str, int]:
    """``'Lesion=1, Effusion=3'`` or ``'1=1,2=3'`` -> ``{segment label or number: class}``."""
    out: dict[str, int] = {}
    for part in filter(None, (t.strip() for t in text.split(","))):
        key, sep, value = part.rpartition("=")
        if not sep or not key.strip() or not value.strip().isdigit():
            raise argparse.ArgumentTypeError(f"{part!r}: expected <segment label or number>=<class index>")
        out[key.strip()] = int(value)
    if not out:
        raise argparse.ArgumentTypeError("empty segment map")
    return out


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--out", required=True, help="output folder (slices + datalist.json)")
    common.add_argument("--labeled-fraction", default="1/8",
                        help="1/8, 1/4, 1/2, a decimal, a count N, or full (default 1/8: the paper's simulated "
                             "scarcity; the other masks of the training pool are used as unlabelled)")
    common.add_argument("--seed", type=int, default=0, help="seed of the labelled subset (default 0)")
    common.add_argument("--val-seed", type=int, default=0, help="seed of the validation/test hold-out (default 0)")
    common.add_argument("--overwrite", action="store_true", help="replace an existing different preparation in --out")
    common.add_argument("--no-progress", action="store_true", help="no progress bars")

    parser = argparse.ArgumentParser(
        prog="python -m medsemiseg.prepare",
        description="Prepare 2D slices and a MONAI datalist JSON for semi-supervised training (see docs/data.md).",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    c = sub.add_parser("chase", parents=[common], help="CHASE_DB1 retinal vessel folder")
    c.add_argument("src_dir", help="folder with Image_01L.jpg ... and Image_01L_1stHO.png ...")
    c.add_argument("--protocol", choices=["20/8", "8/20"], default="20/8",
                   help="train/test by sorted name: 20/8 (default, first 20 train, last 8 test) or the older 8/20 "
                        "(those last 8 train, the first 20 test)")
    c.add_argument("--observer", choices=["1stHO", "2ndHO"], default="1stHO", help="annotator (default 1stHO)")
    c.add_argument("--val-fraction", type=_count, default=0.0,
                   help="share/count of training images held out for validation; 0 (default) = validate on test")
    c.add_argument("--unlabeled", nargs="*", default=[], help="extra unlabelled fundus pictures (files or folders)")

    v = sub.add_parser("covid", parents=[common], help="MedSeg COVID-19 CT (NIfTI stack or DICOM series + mask)")
    v.add_argument("--image", "--src", dest="image", required=True,
                   help="tr_im.nii.gz, a DICOM series folder, or Kaggle's images_medseg.npy")
    v.add_argument("--mask", required=True,
                   help="tr_mask.nii.gz (0 bg, 1 ground-glass, 2 consolidation, 3 effusion), a DICOM SEG, "
                        "or Kaggle's one-hot masks_medseg.npy")
    v.add_argument("--unlabeled", nargs="*", default=[],
                   help="more volumes / series / folders or .zip files of them, or Kaggle .npy stacks; no masks")
    v.add_argument("--val-fraction", type=_count, default=0.1, help="validation share of the non-test slices (0.1)")
    v.add_argument("--test-fraction", type=_count, default=0.2, help="test share of the labelled slices (0.2)")
    v.add_argument("--orientation", choices=ORIENTATIONS, default="as-stored",
                   help="operation on the upright picture if your copy is stored differently (default as-stored)")
    v.add_argument("--segment-map", type=_segment_map, default=None,
                   help="DICOM SEG mask: segment label or number -> class, e.g. 'GGO=1,Consolidation=2'")
    v.add_argument("--rp-image", default=None,
                   help="MedSeg set 2 (Radiopaedia) image volumes: rp_im.zip or its folder; with --rp-mask they are "
                        "labelled (paired by file name, one hold-out group per volume), alone unlabelled")
    v.add_argument("--rp-mask", default=None, help="MedSeg set 2 masks: rp_msk.zip or its folder (labels 0..3)")
    v.add_argument("--rp-orientation", choices=ORIENTATIONS, default=None,
                   help="operation on the upright Radiopaedia pictures, images and masks alike "
                        "(default: --orientation)")

    d = sub.add_parser("drive", parents=[common], help="DRIVE retinal vessels in its public layout")
    d.add_argument("src_dir", help="DRIVE folder holding training/{images,1st_manual,mask} and "
                                   "test/{images,1st_manual,2nd_manual,mask}")
    d.add_argument("--val-fraction", type=_count, default=0.2,
                   help="share/count of the 20 training photographs held out for validation (0.2: 4); "
                        "0 = validate on the test split")

    s = sub.add_parser("covid-semiseg", parents=[common],
                       help="COVID-SemiSeg (Inf-Net): MedSeg CT slices as 8-bit images + 1600 unlabelled slices")
    s.add_argument("src_dir", help="COVID-SemiSeg's Dataset folder holding TrainingSet/ and TestingSet/")
    s.add_argument("--val-fraction", type=_count, default=0.2,
                   help="share/count of the 50 labelled training slices held out for validation (0.2: 10)")

    f = sub.add_parser("folder", parents=[common], help="any folder of DICOM / NIfTI / pictures with optional masks")
    f.add_argument("src_dir", help="folder of images; masks in labels/ or as <name>_mask.*; unlabeled/ for extras")
    f.add_argument("--task", default="folder", help="task name stored in the datalist meta")
    f.add_argument("--num-classes", type=int, default=None,
                   help="declared classes (default: largest label + 1, if the masks hold 0..K-1, K <= 16)")
    f.add_argument("--class-names", default=None, help="comma-separated class names, background first")
    f.add_argument("--mask-threshold", type=float, default=None,
                   help="binarise masks: value >= T -> 1 (128 for JPEG / anti-aliased 0/255 masks)")
    f.add_argument("--segment-map", type=_segment_map, default=None,
                   help="DICOM SEG masks: segment label or number -> class, e.g. 'Tumour=1,Oedema=2' "
                        "(unlisted segments are left out)")
    f.add_argument("--val-fraction", type=_count, default=0.1, help="validation share of the non-test items (0.1)")
    f.add_argument("--test-fraction", type=_count, default=0.0, help="test share of the labelled items (0)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry; returns the exit status: 0 ok; 2 bad input or an OS error (read-only or full disk, ``--out``
    under a file, no permission); 1 an unexpected failure. A failure's last line on stderr is ``error: ...``
    naming the file or option and the fix, printed after the run's warnings; the traceback only with
    ``MEDSEMISEG_DEBUG=1`` (:mod:`medsemiseg.cli_errors`)."""
    args = _parser().parse_args(argv)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", PrepareWarning)
        code, path = _run_cli(args)
    for w in caught:  # ours as one plain line each; anything else as Python shows it
        if issubclass(w.category, PrepareWarning):
            kind = "note" if issubclass(w.category, PrepareNote) else "warning"
            print(f"{kind}: {w.message}", file=sys.stderr)
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    if code:
        _report_failure(path, args)  # on failure, _run_cli returns the exception in place of the path
        return code
    datalist = json.loads(Path(path).read_text())
    meta, c = datalist["meta"], datalist["meta"]["counts"]
    unit = _unit([it for k in ("labeled", "unlabeled", "validation", "test") for it in datalist[k]])
    one = unit[:-1] if " " not in unit else unit  # "1 labeled image"
    print(  # the unit spelt out: "5 labeled" of a CT folder is 5 slices, not 5 volumes
        f"{meta['task']}: {c['labeled']} labeled {one if c['labeled'] == 1 else unit} + {c['unlabeled']} unlabeled "
        f"{one if c['unlabeled'] == 1 else unit} (fraction {meta['labeled_fraction']} of the {c['train']} training "
        f"{unit} with masks, seed {meta['seed']}), {c['validation']} validation, {c['test']} test {unit} -> {path}"
    )
    return 0


def _run_cli(args: argparse.Namespace) -> tuple[int, Any]:
    """Run the subcommand: ``(0, datalist path)``, or ``(exit status, the exception)`` when it failed."""
    common = dict(
        labeled_fraction=args.labeled_fraction, seed=args.seed, val_seed=args.val_seed,
        overwrite=args.overwrite, progress=not args.no_progress,
    )
    try:
        if args.command == "chase":
            path = prepare_chase(args.src_dir, args.out, protocol=args.protocol, observer=args.observer,
                                 unlabeled=args.unlabeled, val_fraction=args.val_fraction, **common)
        elif args.command == "covid":
            path = prepare_covid(args.image, args.mask, args.out, unlabeled=args.unlabeled,
                                 val_fraction=args.val_fraction, test_fraction=args.test_fraction,
                                 orientation=args.orientation, segment_map=args.segment_map,
                                 rp_image=args.rp_image, rp_mask=args.rp_mask, rp_orientation=args.rp_orientation,
                                 **common)
        elif args.command in ("drive", "covid-semiseg"):
            from .prepare_public import prepare_covid_semiseg, prepare_drive

            fn = prepare_drive if args.command == "drive" else prepare_covid_semiseg
            path = fn(args.src_dir, args.out, val_fraction=args.val_fraction, **common)
        else:
            names = [s.strip() for s in args.class_names.split(",")] if args.class_names else None
            path = prepare_folder(args.src_dir, args.out, task=args.task, num_classes=args.num_classes,
                                  class_names=names, mask_threshold=args.mask_threshold,
                                  segment_map=args.segment_map,
                                  val_fraction=args.val_fraction, test_fraction=args.test_fraction, **common)
    except Exception as e:  # noqa: BLE001 - main reports it after the run's warnings (_report_failure)
        return (2 if isinstance(e, (DataReadError, ValueError, OSError)) else 1), e
    return 0, path


def _os_error_text(e: OSError, out: str) -> str:
    """An ``OSError`` as one sentence naming the path and the fix (a full disk's write names no file: ``--out``)."""
    import errno

    path = e.filename if e.filename is not None else f"--out {out}"
    if e.filename2 is not None:
        path = f"{path} -> {e.filename2}"
    fixes = {
        errno.EROFS: "the file system is read-only; choose an --out on a writable disk",
        errno.ENOSPC: "the disk is full; free some space or choose an --out on another disk",
        errno.EDQUOT: "the disk quota is used up; free some space or choose an --out on another disk",
        errno.ENOTDIR: "a part of this path is a file, not a folder; choose another --out",
        errno.EISDIR: "this is a folder where a file is expected; check the path",
        errno.EACCES: "permission denied; choose a path you may read / write, or fix its permissions",
        errno.EPERM: "operation not permitted; choose a path you may read / write, or fix its permissions",
        errno.ENOENT: "no such file or folder; check the path",
        errno.EEXIST: "it exists already; remove it or choose another --out",
    }
    return f"{path}: {fixes.get(e.errno, e.strerror or str(e))} ({e.strerror or type(e).__name__})."


def _report_failure(e: BaseException, args: argparse.Namespace) -> None:
    """The last lines of a failed run on stderr: the traceback only with ``MEDSEMISEG_DEBUG=1``; then our
    message (``error: ...``), an OS error as :func:`_os_error_text`, an unexpected failure as
    :func:`medsemiseg.cli_errors.report` (where it was raised, then its outermost project message or root cause)."""
    import traceback

    from medsemiseg import cli_errors

    if cli_errors.debug_enabled():
        traceback.print_exception(e)
    if isinstance(e, OSError) and e.errno is not None:
        lines = [f"error: {_os_error_text(e, args.out)}"]
    elif isinstance(e, (DataReadError, ValueError)):
        lines = [f"error: {e}"]
    else:
        lines = cli_errors.report(e, f"prepare {args.command}")
    print("\n".join(lines), file=sys.stderr)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
