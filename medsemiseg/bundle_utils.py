"""Helpers that the MONAI bundles (``bundles/covid``, ``bundles/chase``) call from their JSON configs.

A bundle config is the user's interface; everything it needs that MONAI does not provide and that both bundles
share lives here, so the two configs stay declarative and hold no copied logic:

- :func:`find_bundle_root` -- where the bundle folder is, whether the config was named as
  ``bundles/covid/train.json`` from the repository root, as ``configs/train.json`` from inside the bundle, or
  loaded by MONAI Label from its app folder (MONAI Label overrides ``bundle_root`` itself);
- :func:`resolve_datalist` / :func:`load_split` -- the datalist JSON to train on (a prepared data set, or the
  built-in synthetic one, generated into a cache folder on first use) and one of its splits;
- :func:`inference_items` -- inference inputs (a DICOM file or series folder, a NIfTI file, a PNG/JPG, a folder
  of those, or a prepared data set's test split) as 2D items; 3D inputs are expanded into their slices;
- :class:`TrainCheckpointer` -- the "latest" checkpoint (network, optimiser, trainer, and the method's EMA teacher
  / discriminator) saved every epoch, and resumption from it (``--resume true``);
- :class:`PredictionWriter` -- writes label maps named after their input (NIfTI; PNG too for pictures),
  re-assembling the slices of a 3D input into one volume;
- :func:`trained_checkpoint` -- the weights ``evaluating`` / ``inferring`` load, or an error that says to train first.
"""

from __future__ import annotations

import ast
import functools
import json
import logging
import os
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

__all__ = [
    "BundleConfigError",
    "find_bundle_root",
    "resolve_datalist",
    "load_split",
    "inference_items",
    "trained_checkpoint",
    "CheckpointError",
    "ModelNotFoundError",
    "InferenceItems",
    "SkippedInputsError",
    "check_skipped_inputs",
    "as_bool",
    "check_device",
    "eval_at_network_size",
    "latest_checkpoint",
    "TrainCheckpointer",
    "GradScalerState",
    "RunRecord",
    "PredictionWriter",
    "unlabeled_loader_for",
    "check_cli_overrides",
    "check_image_size",
    "check_settings",
    "effective_fraction",
    "check_trained_on",
]

logger = logging.getLogger(__name__)

from medsemiseg import cli_errors as _cli_errors  # noqa: E402

if _cli_errors.running_monai_bundle_cli():  # `python -m monai.bundle run ...`: a failure ends on our message
    _cli_errors.install()

#: file names looked for, in this order, in a prepared data set folder given as ``dataset_dir``
DATALIST_NAMES = ("datalist.json", "dataset.json")


class BundleConfigError(ValueError):
    """A bundle setting is wrong; the message names the key, the value and the fix."""


# ------------------------------------------------------------------------------------------------ bundle root


def _config_files_from_argv(argv: Sequence[str]) -> list[str]:
    """The ``--config_file`` value(s) of a ``python -m monai.bundle ...`` command line, in order."""
    values: list[str] = []
    for i, a in enumerate(argv):
        if a == "--config_file" and i + 1 < len(argv):
            values.append(argv[i + 1])
        elif a.startswith("--config_file="):
            values.append(a.split("=", 1)[1])
    files: list[str] = []
    for v in values:
        v = v.strip()
        if v.startswith("["):
            try:
                files += [str(x) for x in ast.literal_eval(v)]
                continue
            except (ValueError, SyntaxError):
                pass
        files += [x.strip() for x in v.split(",") if x.strip()]
    return files


def _is_bundle_dir(path: Path) -> bool:
    return (path / "configs" / "metadata.json").is_file()


def find_bundle_root(name: str | None = None, argv: Sequence[str] | None = None) -> str:
    """The bundle folder (the one holding ``configs/metadata.json``), as an absolute path.

    Looked up in this order:

    1. the folder of the first ``--config_file`` on the command line (its parent when that folder is
       ``configs``): ``bundles/covid/train.json`` and ``bundles/covid/configs/train.json`` both give
       ``bundles/covid``, wherever the command runs from;
    2. the current directory, when it is a bundle folder (model-zoo style: ``cd bundle && python -m monai.bundle
       run training --config_file configs/train.json``);
    3. ``bundles/<name>`` of the source checkout this package was installed from (``pip install -e .``).

    MONAI Label and scripts that parse a config themselves set ``bundle_root`` directly and never get here.

    Args:
        name: the bundle's folder name (``"covid"``, ``"chase"``), used by step 3.
        argv: command line to inspect (default ``sys.argv``).
    """
    for f in _config_files_from_argv(sys.argv if argv is None else argv)[:1]:
        folder = Path(f).absolute().parent
        if folder.name == "configs":
            folder = folder.parent
        if _is_bundle_dir(folder):
            return str(folder)
    cwd = Path.cwd()
    if _is_bundle_dir(cwd) and (name is None or cwd.name == name):
        return str(cwd)
    if name:
        checkout = Path(__file__).resolve().parents[1] / "bundles" / str(name)
        if _is_bundle_dir(checkout):
            # a config read from Python (ConfigParser / create_workflow) of a *copied* bundle gets here too, and would
            # then load and write the checkout's models/: say so, with the key that points it at the copy
            logger.warning(
                f"bundle_root is not set and no --config_file names the bundle folder: using {checkout}. A copied "
                "bundle read from Python should set it, e.g. parser['bundle_root'] = 'path/to/bundle' or "
                "create_workflow(..., bundle_root='path/to/bundle')."
            )
            return str(checkout)
    raise BundleConfigError(
        f"cannot locate the {name or ''} bundle folder (the one with configs/metadata.json): pass it explicitly, "
        "e.g. --bundle_root path/to/bundles/" + (name or "<name>")
    )


#: ``python -m monai.bundle run`` arguments that are not config overrides (``monai.bundle.scripts.run``).
_RUN_ARGS = {"run_id", "init_id", "final_id", "meta_file", "config_file", "logging_file", "tracking", "args_file"}


def _override_keys(argv: Sequence[str]) -> list[str]:
    """The ``--key`` names of a ``python -m monai.bundle run ...`` command line (``--key value``/``--key=value``)."""
    keys = []
    for a in argv[1:]:
        if a.startswith("--") and len(a) > 2:
            keys.append(a[2:].split("=", 1)[0])
    return keys


_MISSING = object()


def _node(config: Any, path: Sequence[str]) -> Any:
    """The config entry at ``path`` (``["train", "handlers", "0"]``), or ``_MISSING``."""
    node = config
    for part in path:
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return _MISSING
    return node


def check_cli_overrides(argv: Sequence[str] | None = None) -> None:
    """Stop a ``python -m monai.bundle run`` whose command line sets a key the bundle config does not have.

    MONAI's runner applies every ``--key value`` as a config override, so ``--labelled_fraction 1/4`` or
    ``--max_epoch 1`` silently *adds* an unused key and the run goes on with the defaults (an hour of training on
    the wrong settings). The bundles call this from their ``initialize`` step: each override's path
    (``a#b#c``) must exist in the config files named on the command line; otherwise the error names the key and the
    closest real ones. Outside MONAI's bundle CLI (MONAI Label, the benchmark's own parsing) it does nothing.
    """
    import difflib

    from monai.bundle import ConfigParser

    argv = list(sys.argv if argv is None else argv)
    if not _cli_errors.running_monai_bundle_cli(argv):
        return
    files = _config_files_from_argv(argv)
    if not files:
        return
    try:
        config = ConfigParser.load_config_files(files)
    except Exception:  # noqa: BLE001 - MONAI reports unreadable config files itself
        return
    known = sorted(str(k) for k in config)
    for key in _override_keys(argv):
        if key in _RUN_ARGS or key.startswith("_meta_"):
            continue
        path = key.replace("::", "#").split("#")
        if _node(config, path) is not _MISSING:
            continue
        parent = _node(config, path[:-1]) if len(path) > 1 else _MISSING
        if isinstance(parent, Mapping) and "_target_" in parent:
            continue  # another argument of a component (train#checkpointer#n_saved): its constructor checks it
        if path[0] in config:  # a nested key: suggest among its siblings
            siblings = [str(k) for k in parent] if isinstance(parent, Mapping) else []
            close = difflib.get_close_matches(path[-1], siblings, n=3)
            hint = "; did you mean " + " or ".join("--" + "#".join(path[:-1] + [c]) for c in close) if close else ""
        else:
            close = difflib.get_close_matches(path[0], known, n=3)
            hint = "; did you mean " + " or ".join(f"--{c}" for c in close) if close else ""
        raise BundleConfigError(
            f"--{key}: the bundle config ({', '.join(files)}) has no key {key!r}, so MONAI would add it unused and "
            f"run with the default{hint}? The keys users set are listed in the README, 'Overridable keys'."
        )


def check_image_size(image_size: Any) -> list[int]:
    """``image_size`` as ``[height, width]`` of positive whole numbers, or an error that shows the form to use."""
    ok = (
        isinstance(image_size, (list, tuple))
        and len(image_size) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and v >= 8 for v in image_size)
    )
    if not ok:
        raise BundleConfigError(
            f"image_size={image_size!r}: must be two whole numbers >= 8, height and width, as a list in quotes "
            f"on the command line, e.g. --image_size \"[{_first_int(image_size)}, {_first_int(image_size)}]\"."
        )
    return [int(v) for v in image_size]


#: the numeric settings :func:`check_settings` knows: (whole number?, smallest value, smallest allowed?, example)
NUMERIC_SETTINGS: dict[str, tuple[bool, float, bool, str]] = {
    "seed": (True, 0, True, "0"),
    "max_epochs": (True, 1, True, "5"),
    "epoch_length": (True, 1, True, "12"),
    "val_interval": (True, 1, True, "1"),
    "batch_size": (True, 1, True, "4"),
    "unlabeled_batch_size": (True, 1, True, "4"),
    "num_workers": (True, 0, True, "0"),
    "learning_rate": (False, 0, False, "0.001"),
}


def check_settings(**values: Any) -> None:
    """Stop a run whose numeric setting (``learning_rate=@learning_rate, seed=@seed, ...``) has the wrong kind or
    range, naming the key, the value and what it must be.

    MONAI's command line passes ``--learning_rate abc`` on as the string ``'abc'`` and ``--unlabeled_batch_size 0``
    as 0; the run then failed far from the setting, in the optimiser (``'<=' not supported between 'str' and
    'float'``), ``set_determinism`` or the data loader (``batch_size should be a positive integer``), naming no key.
    The bundles call this from their ``initialize`` step with every key of :data:`NUMERIC_SETTINGS`."""
    import math

    for key, value in values.items():
        whole, low, low_ok, example = NUMERIC_SETTINGS[key]
        number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        ok = number and (isinstance(value, int) if whole else True) and (value >= low if low_ok else value > low)
        if not ok:
            kind = "a whole number" if whole else "a number"
            bound = f"{'>=' if low_ok else '>'} {low:g}"
            raise BundleConfigError(f"--{key} {value!r}: must be {kind} {bound}, e.g. --{key} {example}.")


def _first_int(value: Any) -> int:
    try:
        v = int(value[0] if isinstance(value, (list, tuple)) and value else value)
        return v if v >= 8 else 128
    except (TypeError, ValueError):
        return 128


# --------------------------------------------------------------------------------------------------- settings

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "", "none", "null")


def as_bool(value: Any, key: str = "value") -> bool:
    """A bundle switch (``amp``, ``resume``, ``write_png``) as a real bool.

    MONAI's command line keeps ``--amp false`` as the *string* ``'false'``, which Python treats as true: the
    bundles pass every switch through this, so ``true/false``, ``True/False``, ``1/0`` and ``yes/no`` all work and
    anything else is an error naming the key."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if value is None:
        return False
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    raise BundleConfigError(f"{key} must be true or false, got {value!r} (e.g. --{key} true).")


def eval_at_network_size(eval_resolution: Any) -> bool:
    """``evaluating``'s scoring grid: ``"original"`` (default) scores the prediction resized back to each test
    slice's own size against its label as stored, as ``inferring`` writes it; ``"network"`` scores at
    ``image_size`` against labels resized there by nearest neighbour (how validation during training scores, and how
    the benchmark tables in docs/benchmarks.md were measured)."""
    value = str(eval_resolution).strip().lower()
    if value not in ("original", "network"):
        raise BundleConfigError(f"eval_resolution must be 'original' or 'network', got {eval_resolution!r}.")
    return value == "network"


def check_device(device: Any) -> torch.device:
    """The ``device`` setting as a ``torch.device`` this machine has, else an error naming ``--device``."""
    try:
        dev = device if isinstance(device, torch.device) else torch.device(str(device))
    except (RuntimeError, TypeError) as e:
        raise BundleConfigError(f"device {device!r} is not a torch device ({e}); e.g. --device cpu or --device cuda:0.") from e
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            build = f"torch {torch.__version__}, " + ("built with CUDA " + str(torch.version.cuda) if torch.version.cuda
                                                     else "a CPU-only build")
            raise BundleConfigError(
                f"device {str(dev)!r} asks for a CUDA GPU, but torch sees none here ({build}): pass --device cpu, "
                "or run on a machine with a GPU and a CUDA build of PyTorch."
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise BundleConfigError(
                f"device {str(dev)!r}: this machine has {torch.cuda.device_count()} CUDA device(s), numbered from 0; "
                "pass e.g. --device cuda:0."
            )
    return dev


# --------------------------------------------------------------------------------------------------- datalists


def _is_empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "null"))


def _datalist_in(folder: Path) -> Path | None:
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
    if not _is_empty(labeled_fraction):
        return labeled_fraction
    if not _is_empty(dataset_dir):
        from medsemiseg.data.prepare import DATALIST_FILE, POOL_FILE

        folder = Path(str(dataset_dir)).expanduser()
        if (folder / POOL_FILE).is_file() and (folder / DATALIST_FILE).is_file():
            chosen = _read_meta_and_sizes(folder / DATALIST_FILE)[0].get("labeled_fraction")
            if not _is_empty(chosen):
                return "full" if str(chosen) == "1" else chosen  # "1": how folders prepared before 2026-11-26 wrote full
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
    if _is_empty(dataset_dir):
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
        found = _datalist_in(p)
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


def _read_datalist_json(path: Path) -> dict:
    """A datalist's content, or an error naming the file, what is wrong with it and the fix (never the bare
    ``JSONDecodeError`` of a truncated or hand-edited file)."""
    try:
        content = json.loads(path.read_text())
    except OSError as e:
        raise BundleConfigError(f"datalist {path} cannot be read ({e.strerror or e}); check the path.") from e
    except ValueError as e:
        raise BundleConfigError(
            f"datalist {path} is not valid JSON ({e}): a truncated or hand-edited file; fix it at that position "
            f"(python -m json.tool {path} shows it), or prepare the data set again (python -m medsemiseg.prepare)."
        ) from e
    if not isinstance(content, dict):
        raise BundleConfigError(f"datalist {path} must be a JSON object with 'labeled', 'unlabeled', ... lists.")
    return content


def _read_meta_and_sizes(path: Path) -> tuple[dict, dict[str, int]]:
    content = _read_datalist_json(path)
    sizes = {k: len(v) for k, v in content.items() if isinstance(v, list)}
    meta = content.get("meta") if isinstance(content.get("meta"), dict) else {}
    return meta, sizes


def _warn_if_prepared_otherwise(folder: Path, labeled_fraction: Any) -> None:
    """A user who prepared with ``--labeled-fraction 1/2`` and trains with the bundle's default 1/8 is told so."""
    from medsemiseg.data.prepare import DATALIST_FILE
    from medsemiseg.data.splits import fraction_text

    prepared = folder / DATALIST_FILE
    if not prepared.is_file():
        return
    meta, sizes = _read_meta_and_sizes(prepared)
    chosen = meta.get("labeled_fraction")
    chosen = "full" if str(chosen) == "1" else chosen  # how folders prepared before 2026-11-26 wrote full
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


def _checked(
    path: Path,
    labeled_fraction: Any,
    seed: int,
    classes: Sequence[str] | None,
    fixed: bool = False,
    in_channels: int | None = None,
) -> str:
    """Log what the run will train on and check the datalist's classes and channels against the bundle's."""
    meta, sizes = _read_meta_and_sizes(path)
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
    how = "as written" if fixed else f"labeled_fraction {labeled_fraction}, seed {seed}"
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


def load_split(datalist: str | os.PathLike, key: str, allow_empty: bool = False) -> list[dict]:
    """Items of one split (``labeled``/``unlabeled``/``validation``/``test``) with absolute paths.

    Paths in the JSON are relative to its folder (MONAI ``load_decathlon_datalist`` resolves them). A missing or
    empty split raises an error naming the datalist and the split, unless ``allow_empty``.
    """
    from monai.data import load_decathlon_datalist

    path = Path(str(datalist))
    if not path.is_file():
        raise BundleConfigError(f"datalist {path} does not exist.")
    content = _read_datalist_json(path)
    if key not in content or not content[key]:
        if allow_empty:
            return []
        have = {k: len(v) for k, v in content.items() if isinstance(v, list)}
        raise BundleConfigError(
            f"datalist {path} has no {key!r} items (splits present: {have}); re-prepare the data set with a "
            f"{key!r} split or point dataset_dir at another datalist."
        )
    try:
        return load_decathlon_datalist(str(path), is_segmentation=True, data_list_key=key, base_dir=str(path.parent))
    except (KeyError, TypeError, ValueError, AttributeError) as e:  # an item that is no {"image": ...} object
        raise BundleConfigError(
            f"datalist {path}: its {key!r} items cannot be read ({type(e).__name__}: {e}); each item must be an object "
            "with an 'image' path (and a 'label' path for labelled items), relative to the datalist's folder."
        ) from e


def unlabeled_loader_for(method: Any, loader: Any) -> Any:
    """``loader`` when ``method`` trains on unlabelled images, else ``None`` (the ``supervised`` method).

    A method that needs unlabelled images with none in the data set (``labeled_fraction`` ``full`` on a data set
    without extra unlabelled volumes) is an error that says so, rather than an empty loader failing later.
    """
    if not bool(getattr(method, "requires_unlabeled", True)):
        return None
    if len(getattr(loader, "dataset", ())) == 0:
        raise BundleConfigError(
            f"method {type(method).__name__} trains on unlabelled images, but the datalist's 'unlabeled' split is "
            "empty (every training image is labelled, e.g. labeled_fraction 'full'): use --method supervised, a "
            "smaller --labeled_fraction, or add unlabelled images when preparing the data set."
        )
    return loader


# --------------------------------------------------------------------------------------------------- inference


class _DicomGroup(NamedTuple):
    """Loose DICOM files of one series at the top of an inference folder, read as one volume."""

    folder: Path
    files: tuple[Path, ...]
    name: str

    def __str__(self) -> str:
        first, last = self.files[0].name, self.files[-1].name
        return f"{self.folder} ({len(self.files)} DICOM files of one series: {first} ... {last})"


def _series_label(files: Sequence[Path], index: int) -> str:
    from medsemiseg.data.io import _read_dicom_header

    number = getattr(_read_dicom_header(files[0]), "SeriesNumber", None)
    return str(number).strip() if number not in (None, "") else str(index)


def _inputs_in_folder(folder: Path) -> list[Path | _DicomGroup]:
    """The inference inputs of a folder, in name order.

    - a folder holding one DICOM series and nothing else is one input (a series folder);
    - otherwise its top-level DICOM files are grouped by ``SeriesInstanceUID``: a file alone in its series is a 2D
      input, several files of one series are one volume (named after the folder, or ``<folder>_series<N>`` when
      there are several such series); every other supported file (NIfTI, picture) and every sub-folder holding
      DICOM files (a series folder) is an input of its own. Unsupported files are skipped.
    """
    from medsemiseg.data.io import group_dicom_series, is_supported_file, list_dicom_files

    dicoms = list_dicom_files(folder)
    dicom_set = set(dicoms)
    others: list[Path] = []
    masks: list[str] = []
    for p in sorted(folder.iterdir()):
        if p.is_dir():
            if list_dicom_files(p):
                others.append(p)
        elif p not in dicom_set and is_supported_file(p):
            if _looks_like_mask(p):
                masks.append(p.name)
            else:
                others.append(p)
    if masks:
        logger.warning(
            f"{folder}: skipped {len(masks)} file(s) named like label masks or earlier outputs "
            f"({', '.join(masks[:3])}{', ...' if len(masks) > 3 else ''}); give a file directly to segment it."
        )
    if not dicoms:
        return others
    from medsemiseg.data.io import DataReadError, _read_dicom_header

    unreadable = []
    for f in dicoms:  # a damaged file is an input of its own, which inference_items skips, naming it
        try:
            _read_dicom_header(f)
        except DataReadError:
            unreadable.append(f)
    if unreadable:
        others += unreadable
        dicoms = [f for f in dicoms if f not in unreadable]
        if not dicoms:
            return sorted(others, key=lambda p: p.name)
    groups = group_dicom_series(dicoms)
    if len(groups) == 1 and not others:
        return [folder]  # a DICOM series folder is one input
    series = [g for g in groups if len(g) > 1]
    entries: list[tuple[str, Path | _DicomGroup]] = [(p.name, p) for p in others]
    for g in groups:
        if len(g) == 1:
            entries.append((g[0].name, g[0]))
        else:
            name = folder.name if len(series) == 1 else f"{folder.name}_series{_series_label(g, series.index(g) + 1)}"
            entries.append((g[0].name, _DicomGroup(folder, tuple(g), name)))
    return [e for _, e in sorted(entries, key=lambda e: e[0])]


def _mask_name_suffixes() -> tuple[str, ...]:
    """Name endings of label masks: ``prepare folder``'s own list (``_mask``, ``_seg``: also this package's outputs),
    CHASE_DB1's ``_1stHO`` / ``_2ndHO`` and DRIVE-style ``_manual1``; lower case."""
    from medsemiseg.data.prepare import _MASK_SUFFIXES

    return tuple(s.lower() for s in _MASK_SUFFIXES) + ("_1stho", "_2ndho", "_manual1")


def _looks_like_mask(path: Path) -> bool:
    name = path.name.lower()
    for ext in (".nii.gz", ".nii", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".dcm"):
        if name.endswith(ext):
            name = name[: -len(ext)]
            break
    return name.endswith(_mask_name_suffixes())


def _unique_names(stems: Sequence[str]) -> list[str]:
    """One output name per input: its stem, or ``<stem>_<n>`` with the first ``n`` that is no other input's stem
    and not yet used (compared case-insensitively, for case-insensitive file systems)."""
    reserved = {s.casefold() for s in stems}
    taken: set[str] = set()
    names: list[str] = []
    for stem in stems:
        name = stem
        if name.casefold() in taken:
            n = 1
            while f"{stem}_{n}".casefold() in reserved or f"{stem}_{n}".casefold() in taken:
                n += 1
            name = f"{stem}_{n}"
        taken.add(name.casefold())
        names.append(name)
    return names


#: DICOM modalities that hold no image to segment (refused at inference)
NON_IMAGE_MODALITIES = {
    "RTDOSE": "a radiotherapy dose grid",
    "RTSTRUCT": "a radiotherapy structure set (contours)",
    "RTPLAN": "a radiotherapy plan",
    "RTRECORD": "a radiotherapy treatment record",
    "SR": "a structured report",
    "PR": "a presentation state",
    "KO": "a key object selection",
    "REG": "a registration",
    "SEG": "a segmentation",
}

#: DICOM modalities each bundle's network was trained on (other modalities get a warning at inference)
EXPECTED_MODALITIES = {"covid": ("CT",)}

#: which bundle takes images of how many channels (named in channel-mismatch errors)
_BUNDLE_FOR_CHANNELS = {1: ("covid", "grey CT images"), 3: ("chase", "RGB fundus photographs")}


def _dicom_header_of(src: Any):
    """The header of a DICOM input (file, series folder or loose group; first file of a series), else ``None``."""
    from medsemiseg.data.io import _read_dicom_header, detect_format, list_dicom_files

    if isinstance(src, _DicomGroup):
        return _read_dicom_header(src.files[0])
    p = Path(str(src))
    fmt = detect_format(p)
    if fmt == "dicom":
        return _read_dicom_header(p)
    if fmt == "dicom-series":
        return _read_dicom_header(list_dicom_files(p)[0])
    return None


def _check_modality(src: Any, task: str) -> None:
    from medsemiseg.data.io import DataReadError

    if "CT" in EXPECTED_MODALITIES.get(str(task), ()) and _is_picture(src):
        logger.warning(
            f"{src}: a picture (PNG/JPG/TIF...) given to the {task} bundle, whose network reads CT in Hounsfield "
            "units: pictures hold display values (0-255 grey), not Hounsfield units, so its segmentation of this "
            "input is not meaningful. Give the DICOM or NIfTI slice / series instead."
        )
        return
    header = _dicom_header_of(src)
    if header is None:
        return
    modality = str(getattr(header, "Modality", "") or "").strip().upper()
    if modality in NON_IMAGE_MODALITIES:
        raise DataReadError(
            src,
            f"is {NON_IMAGE_MODALITIES[modality]} (DICOM modality {modality}), not an image to segment; give the "
            "image (e.g. the CT series) it belongs to.",
        )
    expected = EXPECTED_MODALITIES.get(str(task))
    if expected and modality and modality not in expected:
        logger.warning(
            f"{src}: DICOM modality {modality}, but the {task} bundle's network was trained on "
            f"{'/'.join(expected)} images only; its segmentation of this input is not meaningful."
        )


def _is_picture(src: Any) -> bool:
    from medsemiseg.data.io import PICTURE_SUFFIXES

    return not isinstance(src, _DicomGroup) and Path(str(src)).name.lower().endswith(PICTURE_SUFFIXES)


def _match_channels(img: Any, src: Any, task: str, in_channels: Any) -> tuple[Any, bool]:
    """``img`` as the network takes it, and whether it was changed (a grey picture repeated to RGB)."""
    from medsemiseg.data.io import DataReadError

    if in_channels is None:
        return img, False
    have, want = int(img.shape[0]), int(in_channels)
    if have == want:
        return img, False
    if have == 1 and want == 3 and _is_picture(src):
        logger.warning(
            f"{src}: grey picture (1 channel) given to the {task} network, which takes RGB (3 channels): its grey "
            "values are repeated into R, G and B."
        )
        return img.repeat(3, *([1] * (img.ndim - 1))), True
    kind = {1: "grey", 3: "RGB colour", 4: "RGBA"}.get(have, "multi-channel")
    fixes = []
    if want == 1 and _is_picture(src):
        fixes.append("convert it to grey first (e.g. PIL: Image.open(path).convert('L').save(...))")
    elif want == 1:  # DICOM or NIfTI, which PIL cannot open; a grey copy of a colour DICOM would hold no HU either
        fixes.append("give the grey original it was made from (a colour DICOM is a screen capture, a rendering or a "
                     "photograph, whose values are no Hounsfield units; CT is stored grey, MONOCHROME2)")
    elif want == 3:
        fixes.append("convert it to RGB first (grey pictures - PNG/JPG/TIF - are repeated to RGB automatically)")
    other = _BUNDLE_FOR_CHANNELS.get(have)
    if other is not None and other[0] != task:
        fixes.append(f"use the {other[0]} bundle (bundles/{other[0]}), which is made for {other[1]}")
    raise DataReadError(
        src,
        f"has {have} channel{'s' if have != 1 else ''} ({kind}), but the {task} network expects {want} "
        f"(in_channels {want}); " + ", or ".join(fixes) + ".",
    )


def _read_input(src: Any, task: str, in_channels: Any) -> tuple[Any, bool]:
    """An inference input as the network takes it, and whether its channels were changed (:func:`_match_channels`)."""
    from medsemiseg.data.io import read_dicom_series, read_image

    img = read_dicom_series(src.files, name=src.folder) if isinstance(src, _DicomGroup) else read_image(src)
    return _match_channels(img, src, task, in_channels)


def _read_volume(src: Any, task: str, in_channels: Any) -> Any:
    """:func:`_read_input`'s image alone: what a :class:`~medsemiseg.data.io.LazySlice` of a 3D input reads."""
    return _read_input(src, task, in_channels)[0]


def inference_items(
    dataset_dir: str | os.PathLike | None,
    task: str,
    cache_dir: str | os.PathLike,
    labeled_fraction: Any = None,
    seed: int = 0,
    split: str = "test",
    in_channels: int | None = None,
) -> list[dict]:
    """Inference inputs as 2D items ``{"image", "name", "source", "slice", "num_slices", "affine",
    "spatial_shape", "slice_spacing_deviation"}``.

    ``dataset_dir`` may be a DICOM file, a DICOM series folder, a NIfTI file (2D, or 3D: run slice by slice), a
    PNG/JPG/TIF, a folder of such inputs (and of DICOM series folders; loose DICOM files in it are grouped by
    series, see :func:`_inputs_in_folder`), or a prepared data set (folder with a datalist / datalist JSON: its
    ``split`` images). Empty: the ``split`` images of the built-in synthetic data set.

    ``name`` is the input's file name without extension, made unique (``<name>_<n>``, never another input's
    name); ``source`` is the input it comes from; ``slice`` is ``-1`` for 2D inputs. With ``in_channels`` (the
    network's), an input with other channels is an error naming the file and the fix, except a grey picture for
    a 3-channel network, which is repeated to RGB (with a warning). A DICOM input that holds no image (RTDOSE,
    RTSTRUCT, SR, ...) is refused; one of a modality the bundle was not trained on (:data:`EXPECTED_MODALITIES`)
    gets a warning.

    Every input is read here once, so bad inputs fail before the first prediction, but no volume is kept: a slice of
    a 3D input is a :class:`~medsemiseg.data.io.LazySlice`, which reads its volume again when the data loader gets
    to it (one volume in memory at a time; the first input's is kept from here, so a single study is read once).

    Of several inputs, one that cannot be read (a :class:`~medsemiseg.data.io.DataReadError`: empty, truncated,
    NaN voxels, wrong channels, no image...) is skipped with a warning, so the others are still segmented; the
    returned :class:`InferenceItems` lists it in ``skipped`` and the bundle's ``inferring`` ends with an error
    naming every skipped input (:func:`check_skipped_inputs`). A single input, or a folder none of whose inputs
    can be read, is an error at once.
    """
    from medsemiseg.data.io import DataReadError, LazySlice, file_stem

    if _is_empty(dataset_dir):
        sources: list[Any] = [d["image"] for d in load_split(resolve_datalist(None, task, cache_dir, labeled_fraction, seed), split)]
    else:
        p = Path(str(dataset_dir)).expanduser()
        if not p.exists():
            raise BundleConfigError(f"dataset_dir={str(dataset_dir)!r} (inference input) does not exist.")
        from medsemiseg.data.prepare import POOL_FILE

        prepared = p.is_dir() and (_datalist_in(p) is not None or (p / POOL_FILE).is_file())
        if (p.is_file() and p.suffix.lower() == ".json") or prepared:
            sources = [d["image"] for d in load_split(resolve_datalist(p, task, cache_dir, labeled_fraction, seed), split)]
        elif p.is_dir():
            sources = _inputs_in_folder(p)
            if not sources:
                raise BundleConfigError(
                    f"dataset_dir={str(dataset_dir)!r} holds no readable input (DICOM, NIfTI, PNG/JPG/TIF)."
                )
        else:
            sources = [p]
    names = _unique_names([src.name if isinstance(src, _DicomGroup) else file_stem(src) for src in sources])
    items = InferenceItems()
    LazySlice.forget()
    first_volume = None
    for src, name in zip(sources, names):
        try:
            _check_modality(src, task)
            img, changed = _read_input(src, task, in_channels)
        except DataReadError as e:
            if len(sources) == 1:
                raise
            items.skipped.append((str(src), str(e)))
            logger.warning(f"inferring: skipped an input that cannot be read: {e}")
            continue
        source = str(src)
        affine = np.asarray(img.affine, dtype=np.float64)
        if img.ndim == 3:
            items.append(
                {"image": img if changed else str(src), "name": name, "source": source, "slice": -1, "num_slices": 1,
                 "affine": affine, "spatial_shape": np.asarray(img.shape[1:]), "slice_spacing_deviation": 0.0}
            )
            continue
        if img.ndim != 4:
            raise DataReadError(src, f"expected a 2D or 3D image, got shape {tuple(img.shape)}.")
        n_slices = int(img.shape[-1])
        deviation = float(img.meta.get("slice_spacing_deviation", 0.0))
        reader = functools.partial(_read_volume, src, task, in_channels)
        for k in range(n_slices):
            items.append(
                {"image": LazySlice(source, reader, k), "name": name, "source": source, "slice": k,
                 "num_slices": n_slices, "affine": affine, "spatial_shape": np.asarray(img.shape[1:3]),
                 "slice_spacing_deviation": deviation}
            )
        if first_volume is None:
            first_volume = (source, img)  # inference starts with it: kept, not read again
        del img  # the others are read again slice by slice (LazySlice), one at a time
    if first_volume is not None:
        LazySlice.remember(*first_volume)
    if not items:
        raise DataReadError(
            dataset_dir,
            f"none of its {len(sources)} inputs can be read: " + "; ".join(p.rstrip(". ") for _, p in items.skipped)
            + ".",
        )
    return items


class InferenceItems(list):
    """The items of :func:`inference_items` (a plain list to MONAI's ``Dataset``), and ``skipped``: the inputs left
    out because they cannot be read, as ``(input, the error naming it and the fix)``."""

    def __init__(self, items: Sequence[dict] = (), skipped: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(items)
        self.skipped: list[tuple[str, str]] = list(skipped)


class SkippedInputsError(RuntimeError):
    """An inference run segmented the inputs it could read and skipped others; the message names each of those."""


def check_skipped_inputs(items: Any, written_to: Any = None) -> None:
    """After ``inferring`` ran: an error (exit status != 0) naming every input :func:`inference_items` skipped,
    once the label maps of the others are written; nothing when none was skipped."""
    skipped = list(getattr(items, "skipped", []))
    if not skipped:
        return
    where = f" to {written_to}" if written_to is not None else ""
    n_ok = len({it.get("name") for it in items}) if items else 0
    raise SkippedInputsError(
        f"inferring wrote the label maps of {n_ok} input(s){where}, but {len(skipped)} input(s) could not be read "
        "and were skipped: " + "; ".join(problem.rstrip(". ") for _, problem in skipped)
        + ". Fix or remove them, and run inferring on them again."
    )


class ModelNotFoundError(FileNotFoundError):
    """``evaluating`` / ``inferring`` found no trained model; the message names the training command to run."""


class CheckpointError(BundleConfigError):
    """A checkpoint given to ``evaluating`` / ``inferring`` cannot be used: the message names the file, what is wrong
    with it (empty, truncated, not a PyTorch file, trained for another task) and the fix."""


def trained_checkpoint(
    ckpt_path: str | os.PathLike,
    bundle_root: str | os.PathLike | None = None,
    output_dir: str | os.PathLike | None = None,
    network: torch.nn.Module | None = None,
) -> str:
    """``ckpt_path`` when it is a checkpoint this run can load; else an error naming the file and the fix.

    The bundles' ``evaluating`` and ``inferring`` load their weights through this (``CheckpointLoader``'s
    ``load_path``), and evaluate it first, before any data is read or generated:

    - no file: a :class:`ModelNotFoundError` naming the training command (with this run's ``--output_dir``) and
      ``--ckpt_path``, instead of a bare "No such file";
    - a file that is empty, truncated, or not written by ``torch.save``: a :class:`CheckpointError` saying so
      (PyTorch itself says "EOFError", "PytorchStreamReader failed" or "invalid load key");
    - with ``network`` (the bundle's), weights of another shape -- a model of the other bundle, another class count,
      another ``network_name`` / ``network_kwargs`` -- a :class:`CheckpointError` in one sentence naming the
      checkpoint's classes and channels against the network's, instead of MONAI's list of size mismatches
      (:func:`_check_checkpoint`).
    """
    path = Path(str(ckpt_path)).expanduser()
    if path.is_file():
        _check_checkpoint(path, network)
        return str(path)
    config = "bundles/<task>/train.json"
    extra = ""
    writes = "models/model.pt"
    if bundle_root is not None:
        root = Path(str(bundle_root)).absolute()
        config_path = root / "train.json" if (root / "train.json").exists() else root / "configs" / "train.json"
        try:
            config = str(config_path.relative_to(Path.cwd()))
        except ValueError:
            config = str(config_path)
        if output_dir is not None and Path(str(output_dir)).absolute() != root:
            extra = f" --output_dir {output_dir}"
        writes = str(Path(str(output_dir if output_dir is not None else bundle_root)) / "models" / "model.pt")
    raise ModelNotFoundError(
        f"no trained model at {path}: train one first (python -m monai.bundle run training --config_file {config}"
        f"{extra}, which writes {writes}), or pass existing weights with --ckpt_path path/to/model.pt."
    )


#: what to do with a checkpoint that cannot be used
_CKPT_FIX = ("pass the models/model.pt (or a checkpoint_epoch=K.pt) a finished training wrote with --ckpt_path, or "
             "train again")


def _load_checkpoint_header(path: Path) -> Any:
    """The checkpoint's content with its tensors memory-mapped (their shapes, not their data), or a
    :class:`CheckpointError` saying what the file is (:func:`medsemiseg.checkpoint_io.read_checkpoint`'s reason)."""
    from medsemiseg.checkpoint_io import CheckpointReadError, read_checkpoint

    try:
        return read_checkpoint(path)
    except CheckpointReadError as e:
        raise CheckpointError(f"checkpoint {path} is {e.reason}; {_CKPT_FIX}.") from e


def _layer_shapes(state: Mapping[str, Any], keys: Sequence[str]) -> tuple[int | None, int | None]:
    """``(input channels, output classes)`` of a state dict: the first conv weight's in-channels and the last one's
    out-channels, looked up by the network's own (ordered) layer names."""
    convs = [k for k in keys if isinstance(state.get(k), torch.Tensor) and state[k].ndim >= 3]
    if not convs:
        return None, None
    return int(state[convs[0]].shape[1]), int(state[convs[-1]].shape[0])


def _check_checkpoint(path: Path, network: torch.nn.Module | None) -> None:
    """Refuse a checkpoint that cannot be loaded into ``network`` (see :func:`trained_checkpoint`)."""
    content = _load_checkpoint_header(path)
    state = content.get("model") if isinstance(content, Mapping) and isinstance(content.get("model"), Mapping) \
        else content
    if not isinstance(state, Mapping) or not any(isinstance(v, torch.Tensor) for v in state.values()):
        keys = sorted(map(str, content)) if isinstance(content, Mapping) else type(content).__name__
        raise CheckpointError(f"checkpoint {path} holds no network weights (it holds {keys}); {_CKPT_FIX}.")
    if network is None:
        return
    ours = network.state_dict()
    keys = list(ours)
    shape = lambda t: tuple(int(s) for s in t.shape)  # noqa: E731
    missing = [k for k in keys if k not in state]
    mismatched = [k for k in keys
                  if k in state and isinstance(state[k], torch.Tensor) and shape(state[k]) != shape(ours[k])]
    unexpected = [str(k) for k in state if k not in ours]
    if not missing and not mismatched and not unexpected:
        return
    run = path.parent / TrainCheckpointer.RUN_FILE
    try:
        record = json.loads(run.read_text())
        said = {k: record[k] for k in ("method", "network_name", "network_kwargs", "classes", "in_channels")
                if k in record}
        recorded = f" (its {run}: {said})" if said else ""
    except (OSError, ValueError, TypeError, AttributeError):
        recorded = ""
    our_ch, our_cls = _layer_shapes(ours, keys)
    their_ch, their_cls = _layer_shapes(state, keys) if not missing else (None, None)
    if their_ch is not None and (their_ch != our_ch or their_cls != our_cls):
        other = _BUNDLE_FOR_CHANNELS.get(their_ch) if their_ch != our_ch else None
        raise CheckpointError(
            f"checkpoint {path} was trained for {their_cls} classes on {their_ch}-channel images, but this bundle's "
            f"network has {our_cls} classes and takes {our_ch}-channel images{recorded}: it is a model of another "
            "task or class list. "
            + (f"Run it with the {other[0]} bundle (bundles/{other[0]}, {other[1]}), or pass" if other else
               "Pass the --classes it was trained with, or pass")
            + " --ckpt_path a model trained with this bundle."
        )
    if mismatched:
        first = mismatched[0]
        example = f"layer {first}: checkpoint {shape(state[first])}, network {shape(ours[first])}"
    elif missing:
        example = f"it lacks {missing[0]}"
    else:
        example = f"it has {unexpected[0]}, which this network lacks"
    raise CheckpointError(
        f"checkpoint {path} was trained with another network architecture: {len(mismatched) + len(missing)} of this "
        f"network's {len(keys)} weight tensors do not fit it and it has {len(unexpected)} this network lacks "
        f"({example})"
        f"{recorded}. Pass the --network_name / --network_kwargs it was trained with, or --ckpt_path a model of this "
        "network."
    )


def _same_data(a: Any, b: Any) -> bool:
    if _is_empty(a) or _is_empty(b):
        return _is_empty(a) and _is_empty(b)
    return Path(str(a)).expanduser().resolve() == Path(str(b)).expanduser().resolve()


def check_trained_on(ckpt_path: str | os.PathLike, dataset_dir: Any, workflow: str = "evaluating") -> None:
    """Warn when ``evaluating`` / ``inferring`` run on other data than the model in ``ckpt_path`` was trained on.

    Forgetting ``--dataset_dir`` after training on a prepared data set silently scored (or segmented) the built-in
    synthetic phantoms. The training writes ``run.json`` next to its models (:class:`TrainCheckpointer`); when it is
    there and names another ``dataset_dir`` than this run's, the warning names both and the flag to pass. For
    ``inferring`` only an empty ``dataset_dir`` (the synthetic test split) is questioned: inferring on new files is
    what it is for.
    """
    run_file = Path(str(ckpt_path)).expanduser().parent / TrainCheckpointer.RUN_FILE
    try:
        trained = json.loads(run_file.read_text()).get("dataset_dir")
    except (OSError, ValueError, AttributeError):
        return
    if workflow == "inferring" and not _is_empty(dataset_dir):
        return
    if _same_data(trained, dataset_dir):
        return
    where = lambda d: "the built-in synthetic data set" if _is_empty(d) else str(d)  # noqa: E731
    logger.warning(
        f"{workflow}: the model {ckpt_path} was trained on {where(trained)} ({run_file}), but this run uses "
        f"{where(dataset_dir)}"
        + (f"; pass --dataset_dir {trained} to {'score' if workflow == 'evaluating' else 'segment'} that data set."
           if not _is_empty(trained) else ".")
    )


def _scalar(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        return v.item() if v.numel() == 1 else v.detach().cpu().numpy()
    if isinstance(v, (list, tuple)) and len(v) == 1:
        return _scalar(v[0])
    return v


class PredictionWriter:
    """Write each predicted label map next to its input's name, as the evaluator produces it.

    Attach to the inference evaluator (``val_handlers``). For every item (after ``postprocessing``, so ``pred`` is
    a ``(1, X, Y)`` label map) it writes ``<output_dir>/<name><suffix>.nii.gz`` with the input's affine, and, when
    ``png`` is true and the input was 2D, ``<name><suffix>.png`` (upright: rows = Y; label ``k`` stored as
    ``k * png_scale``, so a binary vessel map is 0/255). The slices of a 3D input are collected and written as one
    ``(X, Y, Z)`` volume when the last one arrives. A prediction whose size differs from the input's (no inversion
    in ``postprocessing``) is resized back with nearest-neighbour interpolation. Each written file is logged with
    the input it comes from (``written`` lists the files, ``sources`` maps each to its input). A volume whose
    slices were unevenly spaced (``slice_spacing_deviation`` of the items, in mm) is written with the mean slice
    step, which one NIfTI affine cannot avoid: that is logged as a warning.

    Args:
        output_dir: folder for the label maps (created).
        suffix: appended to the input name (``"_seg"``).
        png: also write PNGs for 2D inputs (fundus bundle).
        png_scale: grey value per class in PNGs; ``None``: ``255 // (num_classes - 1)``.
        num_classes: classes, for ``png_scale``.
        pred_key: key of the label map in the engine output.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        suffix: str = "_seg",
        png: bool = False,
        png_scale: int | None = None,
        num_classes: int = 2,
        pred_key: str = "pred",
    ) -> None:
        self.output_dir = Path(str(output_dir))
        self.suffix = suffix
        self.png = bool(png)
        self.png_scale = int(png_scale) if png_scale is not None else max(1, 255 // max(1, int(num_classes) - 1))
        self.pred_key = pred_key
        self._volumes: dict[str, dict] = {}
        self.written: list[str] = []
        self.sources: dict[str, str] = {}

    def attach(self, engine: Any) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.ITERATION_COMPLETED, self)
        engine.add_event_handler(Events.COMPLETED, self._check_complete)

    def __call__(self, engine: Any) -> None:
        batch, output = engine.state.batch, engine.state.output
        if isinstance(output, dict):  # not decollated
            raise RuntimeError("PredictionWriter needs the evaluator's default decollate=True.")
        for b, o in zip(batch, output):
            self._write_item({**b, **o})

    def _label_map(self, item: Mapping) -> np.ndarray:
        pred = item[self.pred_key]
        arr = pred.detach().cpu() if isinstance(pred, torch.Tensor) else torch.as_tensor(np.asarray(pred))
        if arr.ndim == 3 and arr.shape[0] > 1:  # not argmax-ed yet
            arr = arr.argmax(0, keepdim=True)
        if arr.ndim == 2:
            arr = arr[None]
        want = tuple(int(s) for s in np.asarray(_scalar(item["spatial_shape"])).reshape(-1))
        if tuple(arr.shape[1:]) != want:
            arr = torch.nn.functional.interpolate(arr[None].float(), size=want, mode="nearest")[0]
        return arr[0].round().to(torch.int16).numpy()

    def _write_item(self, item: Mapping) -> None:
        name = str(_scalar(item["name"]))
        k = int(_scalar(item.get("slice", -1)))
        n = int(_scalar(item.get("num_slices", 1)))
        affine = np.asarray(_scalar(item["affine"]), dtype=np.float64).reshape(4, 4)
        source = item.get("source")
        source = None if source is None else str(_scalar(source))
        label = self._label_map(item)
        if k < 0:
            self._save(name, label, affine, png=self.png, source=source)
            return
        deviation = float(_scalar(item.get("slice_spacing_deviation", 0.0)))
        vol = self._volumes.setdefault(name, {"slices": {}, "n": n, "affine": affine, "source": source,
                                              "deviation": deviation})
        vol["slices"][k] = label
        if len(vol["slices"]) == vol["n"]:
            stack = np.stack([vol["slices"][i] for i in range(vol["n"])], axis=-1)
            self._save(name, stack, vol["affine"], png=False, source=vol["source"], deviation=vol["deviation"])
            del self._volumes[name]

    def _save(
        self, name: str, label: np.ndarray, affine: np.ndarray, png: bool, source: str | None = None,
        deviation: float = 0.0,
    ) -> None:
        import nibabel as nib

        self.output_dir.mkdir(parents=True, exist_ok=True)
        path = self.output_dir / f"{name}{self.suffix}.nii.gz"
        nib.save(nib.Nifti1Image(label.astype(np.int16), affine), str(path))
        self.written.append(str(path))
        if source is not None:
            self.sources[str(path)] = source
        png_path = None
        if png:
            from PIL import Image

            png_path = self.output_dir / f"{name}{self.suffix}.png"
            img = np.clip(label.T.astype(np.int32) * self.png_scale, 0, 255).astype(np.uint8)  # rows = Y: upright
            Image.fromarray(img).save(str(png_path))
            self.written.append(str(png_path))
            if source is not None:
                self.sources[str(png_path)] = source
        logger.info(
            f"PredictionWriter: wrote {path}" + (f" (from {source})" if source is not None else "")
            + (f" and {png_path.name}" if png_path is not None else "")
        )
        step = float(np.linalg.norm(affine[:3, 2])) if label.ndim == 3 else 0.0
        if label.ndim == 3 and deviation > max(1e-2, 0.01 * step):  # 1 % of the step, at least 0.01 mm
            logger.warning(
                f"PredictionWriter: {path}: the input's slices are unevenly spaced (up to {deviation:.2f} mm off a "
                f"regular grid); one NIfTI volume cannot represent that, so the written affine uses the mean step "
                f"of {step:.3f} mm and slices between the first and the last may lie up to {deviation:.2f} mm from "
                "where they were taken (their true positions: read_image(<input>).meta['slice_positions'])."
            )

    def _check_complete(self, engine: Any) -> None:
        from medsemiseg.data.io import LazySlice

        LazySlice.forget()  # the last input's volume, kept while its slices were read
        if self._volumes:
            missing = {k: v["n"] - len(v["slices"]) for k, v in self._volumes.items()}
            raise RuntimeError(f"PredictionWriter: volumes left incomplete (missing slices): {missing}.")


# ------------------------------------------------------------------------------------------------- checkpoints

from medsemiseg.checkpoint_io import CHECKPOINT_RE as _CKPT_RE  # noqa: E402


def latest_checkpoint(ckpt_dir: str | os.PathLike) -> str | None:
    """The newest ``checkpoint_epoch=K.pt`` (``checkpoint_iteration=K.pt``) in ``ckpt_dir``, or ``None``; whether it
    loads is not checked (``--resume`` uses :func:`medsemiseg.checkpoint_io.newest_loadable_checkpoint`)."""
    from medsemiseg.checkpoint_io import checkpoint_files

    found = checkpoint_files(str(ckpt_dir))
    return str(found[0]) if found else None


class BestMetricRecord:
    """The validation's best-metric record as a checkpointable object, so that a resumed run keeps its best model.

    Without it, a resumed run starts with the evaluator's ``best_metric`` at -1 and an empty record in the
    key-metric ``CheckpointSaver`` (``models/model.pt``), so the first validation after resuming overwrites the best
    model even when it is worse. :class:`TrainCheckpointer` saves this record with the training state and restores
    it on resume: the evaluator's ``best_metric`` / ``best_metric_epoch`` and the saver's list of ``(score,
    filename)`` (ignite ``Checkpoint.state_dict``).

    Args:
        evaluator: the validation ``SupervisedEvaluator``.
        best_model_saver: its key-metric ``monai.handlers.CheckpointSaver`` (``save_key_metric=True``), or ``None``.
    """

    def __init__(self, evaluator: Any, best_model_saver: Any = None) -> None:
        self.evaluator = evaluator
        # MONAI keeps the ignite Checkpoint of the key metric in a private attribute; without it only the
        # evaluator's record is restored
        self.checkpoint = getattr(best_model_saver, "_key_metric_checkpoint", None)

    def state_dict(self) -> dict:
        state = self.evaluator.state
        out: dict = {
            "best_metric": float(getattr(state, "best_metric", -1)),
            "best_metric_epoch": int(getattr(state, "best_metric_epoch", -1)),
        }
        if self.checkpoint is not None:
            out["key_metric_checkpoint"] = dict(self.checkpoint.state_dict())
        return out

    def load_state_dict(self, state_dict: Mapping) -> None:
        self.evaluator.state.best_metric = state_dict["best_metric"]
        self.evaluator.state.best_metric_epoch = state_dict["best_metric_epoch"]
        if self.checkpoint is not None and "key_metric_checkpoint" in state_dict:
            self.checkpoint.load_state_dict(state_dict["key_metric_checkpoint"])


class RunRecord:
    """The settings a training state only makes sense with, saved in each checkpoint and checked on resume.

    Resuming a SupMix+SUFD state with ``--method supervised`` finished without a word, another network failed
    with hundreds of missing ``state_dict`` keys, and a changed ``epoch_length`` was silently replaced by the
    checkpoint's. Now a different method, network, class list or input channels is an error that names the
    difference and the fix, and a different ``epoch_length`` a warning (ignite restores the checkpoint's), as is a
    different ``train_sampling`` (a record without one was written when the loaders drew one pass at a time).
    """

    MUST_MATCH = ("method", "network_name", "network_kwargs", "classes", "in_channels")

    def __init__(self, info: Mapping[str, Any]) -> None:
        self.info = {k: _plain(v) for k, v in dict(info).items()}
        if "method" in self.info:
            from medsemiseg.methods import canonical_method_name

            try:
                self.info["method"] = canonical_method_name(str(self.info["method"]))
            except ValueError:
                pass  # create_method reports an unknown name with its own message

    def state_dict(self) -> dict:
        return dict(self.info)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Nothing to restore: the run's own settings stand (they were compared in :meth:`check_against`)."""

    def check_against(self, stored: Mapping[str, Any], path: str) -> None:
        diffs = [(k, stored[k], self.info[k]) for k in self.MUST_MATCH
                 if k in stored and k in self.info and _plain(stored[k]) != self.info[k]]
        if diffs:
            what = "; ".join(f"{k}: checkpoint {a!r}, this run {b!r}" for k, a, b in diffs)
            raise BundleConfigError(
                f"resume: {path} was written with other settings ({what}). Resume with the checkpoint's settings, "
                "or train the new ones into another --output_dir (or replace that run: --overwrite true, without "
                "--resume)."
            )
        for key in ("epoch_length",):
            if key in stored and key in self.info and _plain(stored[key]) != self.info[key]:
                logger.warning(
                    f"resume: {path} was trained with {key} {stored[key]}; the resumed run keeps it (ignite restores "
                    f"the trainer's counters), not this run's {self.info[key]}."
                )
        if "train_sampling" in self.info and stored:
            # a record written before train_sampling existed comes from loaders that drew one pass at a time
            before = stored.get("train_sampling", "pass")
            if before != self.info["train_sampling"]:
                logger.warning(
                    f"resume: {path} was trained with train_sampling {before!r}; this run draws its batches with "
                    f"{self.info['train_sampling']!r} from here on (pass --train_sampling {before} to continue as "
                    "it was)."
                )


def _plain(v: Any) -> Any:
    """JSON-like copy (tuples as lists, numbers as Python numbers) so saved and current settings compare equal."""
    if isinstance(v, Mapping):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, torch.Tensor):
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    return v


def _say_if_already_finished(engine: Any) -> None:
    if int(engine.state.epoch or 0) >= int(engine.state.max_epochs or 0):
        logger.warning(
            f"resume: the checkpoint is already at epoch {engine.state.epoch} of max_epochs {engine.state.max_epochs}: "
            "nothing left to train (pass a higher --max_epochs to continue it)."
        )


def _schedule_of(scheduler: Any) -> dict | None:
    """The run's own schedule settings (before a checkpoint overwrites them): total length and base rates."""
    if not hasattr(scheduler, "total_iters") or not hasattr(scheduler, "_get_closed_form_lr"):
        return None
    return {"total_iters": int(scheduler.total_iters), "base_lrs": list(scheduler.base_lrs)}


def _retarget_schedule(scheduler: Any, configured: dict | None) -> None:
    """After a resume: keep this run's schedule length and base rates, not the checkpoint's.

    The checkpoint restores the scheduler's ``total_iters`` and ``base_lrs``, so a finished run extended with a
    higher ``--max_epochs`` trained its extra epochs at learning rate 0, and a new ``--learning_rate`` was ignored.
    The decay is re-targeted to this run's length from the iteration reached (closed form, e.g.
    ``base * (1 - t / T) ** power``), and logged."""
    if configured is None:
        return
    old = {"total_iters": int(scheduler.total_iters), "base_lrs": list(scheduler.base_lrs)}
    if old == configured:
        return
    scheduler.total_iters = configured["total_iters"]
    scheduler.base_lrs = list(configured["base_lrs"])
    lrs = scheduler._get_closed_form_lr()
    for group, base, lr in zip(scheduler.optimizer.param_groups, scheduler.base_lrs, lrs):
        group["initial_lr"] = base
        group["lr"] = lr
    scheduler._last_lr = list(lrs)
    logger.info(
        f"resume: learning-rate schedule re-targeted to this run (total {old['total_iters']} -> "
        f"{configured['total_iters']} iterations, base {old['base_lrs']} -> {configured['base_lrs']}); at "
        f"iteration {scheduler.last_epoch} the rate is {[float(f'{v:.4g}') for v in lrs]}."
    )


class GradScalerState:
    """The trainer's AMP ``GradScaler`` state (loss scale, growth tracker) as a checkpoint entry.

    A run with ``amp`` on CUDA scales its loss by a factor the ``GradScaler`` adapts as it goes (halved, and the
    optimiser step skipped, on every overflow; doubled after 2000 clean steps). Without this entry a resumed run
    restarted at the initial scale 2**16: its first iterations overflowed again and their optimiser steps were skipped
    where the uninterrupted run stepped, so the resume was not the same training. MONAI's ``Trainer.run()`` creates a
    new ``engine.scaler`` each time it runs, so the scaler is looked up when saving and when loading
    (``CheckpointLoader`` loads at ``Events.STARTED``, after ``run()`` created it), never held. A disabled scaler
    (no CUDA) saves ``{}``; such an entry is not loaded into an enabled one (the scale then starts afresh, logged).
    """

    def __init__(self, engine: Any) -> None:
        self.engine = engine

    def _scaler(self) -> Any:
        scaler = getattr(self.engine, "scaler", None)
        return scaler if scaler is not None and scaler.is_enabled() else None

    def state_dict(self) -> dict:
        scaler = self._scaler()
        return dict(scaler.state_dict()) if scaler is not None else {}

    def load_state_dict(self, state: Mapping) -> None:
        scaler = self._scaler()
        if scaler is None:
            return  # this run does not scale its loss (no CUDA): nothing to restore
        if not state:
            logger.warning("resume: the checkpoint's GradScaler state is empty (written without CUDA); the AMP loss "
                           "scale starts afresh.")
            return
        scaler.load_state_dict(dict(state))


class TrainCheckpointer:
    """Save the full training state every ``save_interval`` epochs and, with ``resume``, restore the latest one.

    The saved state is ``save_dict`` (network, optimiser, the method's :meth:`checkpoint_objects` -- EMA teacher,
    discriminator and its optimiser --, lr scheduler...) plus the trainer itself (epoch / iteration counters) and
    its random state (:class:`medsemiseg.random_state.RandomState`: torch / numpy / python RNGs, the random
    transforms' states, the data streams' positions) and, with ``amp``, its ``GradScaler`` state
    (:class:`GradScalerState`), which are added at :meth:`attach` so that a bundle config needs no reference from the
    trainer's handler list back to the trainer. Files: ``<save_dir>/checkpoint_epoch=K.pt``, the last ``n_saved``
    kept -- those of an earlier run into the same folder are removed once this run has saved its own. MONAI's
    ``CheckpointSaver`` / ``CheckpointLoader`` do the work.

    With ``resume=True`` the newest such file is loaded when the run starts, and training continues from its
    epoch up to ``max_epochs`` (the trainer's, not the checkpoint's, so a finished run can be extended); with no
    checkpoint there yet, training starts from scratch (logged), so a job runner may always pass ``--resume true``.

    With ``evaluator`` (and its key-metric ``best_model_saver``) the best validation metric is saved and restored
    too (:class:`BestMetricRecord`), so resuming never replaces ``model.pt`` by a worse model. A checkpoint written
    without that record still resumes (the record then starts afresh, with a warning).

    Losing work: the files are written atomically (:class:`medsemiseg.checkpoint_io.AtomicCheckpointSaver`; the
    bundles' ``best_model_saver`` is one too), so a kill or a full disk mid-write leaves the previous checkpoint and
    ``model.pt`` intact. ``resume`` takes the newest checkpoint that loads and logs each newer one it skips and why
    (0 bytes, truncated, not a torch file); when none loads it stops, naming them. A run *without* ``resume`` into a
    folder an earlier training used, when it starts and before it writes anything: stops if that training is
    unfinished (its newest checkpoint is short of its ``max_epochs``: a forgotten ``--resume true`` would otherwise
    replace its training state), and otherwise keeps that training's best model, whose file
    (``best_model_saver``'s ``model.pt``) this run replaces at its first validation whatever the scores, as
    ``model.<date-time>.pt`` (and ``run.json`` as ``run.<date-time>.json``), with a warning. ``overwrite=True``
    replaces the earlier run without either.
    """

    def __init__(
        self,
        save_dir: str | os.PathLike,
        save_dict: Mapping[str, Any],
        resume: bool = False,
        save_interval: int = 1,
        n_saved: int = 1,
        map_location: Any = None,
        evaluator: Any = None,
        best_model_saver: Any = None,
        run_info: Mapping[str, Any] | None = None,
        overwrite: bool = False,
    ) -> None:
        self.save_dir = str(save_dir)
        self.evaluator = evaluator
        self.best_model_saver = best_model_saver
        self.save_dict = dict(save_dict)
        if evaluator is not None:
            self.save_dict.setdefault("best_metric", BestMetricRecord(evaluator, best_model_saver))
        self.run_info = RunRecord(run_info) if run_info is not None else None
        if self.run_info is not None:
            self.save_dict.setdefault("run", self.run_info)
        self.resume = as_bool(resume, "resume")
        self.overwrite = as_bool(overwrite, "overwrite")
        self.save_interval = int(save_interval)
        self.n_saved = int(n_saved)
        self.map_location = map_location
        self.loaded_from: str | None = None
        self._saver_attached = False
        self._earlier: dict[Path, float] = {}

    LOCK = ".training.lock"
    RUN_FILE = "run.json"

    def _write_run_file(self) -> None:
        """``<save_dir>/run.json``: this run's settings (method, network, classes, data set...) next to the models it
        writes, so ``evaluating`` / ``inferring`` can say when they are pointed at other data than the model was
        trained on (:func:`check_trained_on`)."""
        if self.run_info is None:
            return
        Path(self.save_dir).mkdir(parents=True, exist_ok=True)
        path = Path(self.save_dir) / self.RUN_FILE
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.run_info.state_dict(), indent=2, default=str))
        os.replace(tmp, path)

    def _take_lock(self, engine: Any) -> None:
        """One training per ``models/`` folder: a second run into it would overwrite and delete the first one's
        checkpoints mid-run (:mod:`medsemiseg.runlock`: host and pid inside; a dead holder's lock is taken over).
        Released when the run completes or its process exits; a failed run's lock left in a live process (a
        notebook) is that process's own and is taken over by its next run."""
        import atexit

        from ignite.engine import Events

        from medsemiseg import runlock

        lock = Path(self.save_dir) / self.LOCK
        try:
            me = runlock.acquire(lock, take_own=True)
        except runlock.LockHeld as held:
            other = held.holder
            raise BundleConfigError(
                f"another training (pid {other.get('pid')} on host {other.get('host')}, since {other.get('since')}) "
                f"is writing to {self.save_dir}: two runs in one output_dir would overwrite each other's checkpoints "
                f"and logs. Give this run its own --output_dir, or wait for that one (if it is gone, delete {lock})."
            ) from None

        def release(*_args: Any) -> None:
            runlock.release(lock, me)

        # COMPLETED for a run that ends normally, atexit for one that fails (an EXCEPTION_RAISED handler would
        # change how ignite re-raises)
        engine.add_event_handler(Events.COMPLETED, release)
        atexit.register(release)

    def _best_model_file(self) -> Path | None:
        """The file ``best_model_saver`` keeps the best model in (``models/model.pt``), when it has a fixed name."""
        checkpoint = getattr(self.best_model_saver, "_key_metric_checkpoint", None)
        name = getattr(getattr(checkpoint, "save_handler", None), "filename", None)
        return Path(str(self.best_model_saver.save_dir)) / name if name else None

    def _keep_the_earlier_run(self) -> None:
        """For a run without ``resume`` / ``overwrite``, before it writes: stop over an unfinished earlier training,
        else keep the earlier best model and run record under dated names (the class docstring)."""
        from medsemiseg.checkpoint_io import keep_copy, newest_loadable_checkpoint

        if self.resume or self.overwrite:
            return
        found = newest_loadable_checkpoint(self.save_dir)
        state = found.content if isinstance(found.content, Mapping) else {}
        trainer = state.get("trainer") if isinstance(state.get("trainer"), Mapping) else {}
        if {"iteration", "epoch_length", "max_epochs"} <= set(trainer):
            reached = int(trainer["iteration"]) // max(int(trainer["epoch_length"]), 1)
            if reached < int(trainer["max_epochs"]):
                raise BundleConfigError(
                    f"{self.save_dir} holds an unfinished training (epoch {reached} of {int(trainer['max_epochs'])}, "
                    f"{found.path.name}); this run, started without --resume, would replace its training state and "
                    "its best model. Continue it with --resume true, give this run another --output_dir, or pass "
                    "--overwrite true to replace it."
                )
        model = self._best_model_file()
        if model is None or not model.is_file():
            return
        known = []
        run_file = Path(self.save_dir) / self.RUN_FILE
        try:
            method = json.loads(run_file.read_text()).get("method")
            if method:
                known.append(f"method {method}")
        except (OSError, ValueError, AttributeError):
            pass
        record = state.get("best_metric")
        if isinstance(record, Mapping) and int(record.get("best_metric_epoch", -1)) > 0:
            name = getattr(getattr(self.evaluator, "state", None), "key_metric_name", None) or "validation score"
            known.append(f"best {name} {float(record['best_metric']):.4f} at epoch {int(record['best_metric_epoch'])}")
        kept = keep_copy(model)
        kept_run = keep_copy(run_file) if run_file.is_file() else None
        logger.warning(
            f"{model} holds the best model of an earlier training{' (' + ', '.join(known) + ')' if known else ''}, "
            f"which this run, started without --resume, replaces at its first validation: the earlier model is kept "
            f"as {kept.name}" + (f" and its run record as {kept_run.name}" if kept_run else "")
            + ". (--resume true continues that training instead; --overwrite true replaces it without a copy.)"
        )

    def _checkpoint_files(self) -> dict[Path, float]:
        d = Path(self.save_dir)
        if not d.is_dir():
            return {}
        return {p: p.stat().st_mtime_ns for p in d.iterdir() if _CKPT_RE.match(p.name) and p.is_file()}

    def _prune_earlier_runs(self, engine: Any) -> None:
        """Keep the folder at ``n_saved`` training states across runs.

        ``CheckpointSaver`` only rotates the files its own process wrote, so a resumed run (or a new run into the
        same ``output_dir``) would leave the earlier process's ``checkpoint_epoch=K.pt`` behind: a stale state that
        ``--resume`` could later pick up when it has the higher epoch. Once this run has written a checkpoint, an
        earlier file of a *later* epoch than this run has reached is removed (it belongs to a replaced run), and the
        other earlier files only beyond the ``n_saved`` newest states in the folder (logged)."""
        if not self._earlier:
            return
        now = self._checkpoint_files()
        ours = [p for p in now if p not in self._earlier or now[p] != self._earlier[p]]
        if not ours:
            return  # nothing of this run saved yet (save_interval > 1)
        epoch = int(getattr(engine.state, "epoch", 0) or 0)

        def number(p: Path) -> int:
            m = _CKPT_RE.match(p.name)
            return int(m.group(2)) if m else -1

        earlier = [p for p in self._earlier if now.get(p) == self._earlier[p]]
        keep = max(self.n_saved - len(ours), 0)
        survivors = sorted((p for p in earlier if number(p) <= epoch), key=number, reverse=True)[:keep]
        for p in earlier:
            if p not in survivors:
                p.unlink()
                logger.info(f"removed {p.name}: training state of an earlier run, superseded by this run's checkpoint")
        self._earlier = {p: self._earlier[p] for p in survivors}

    def attach(self, engine: Any) -> None:
        from ignite.engine import Events
        from monai.handlers import CheckpointLoader

        from medsemiseg.checkpoint_io import AtomicCheckpointSaver, newest_loadable_checkpoint, remove_partial_writes
        from medsemiseg.random_state import RandomState

        objs = dict(self.save_dict)
        objs.setdefault("trainer", engine)
        # torch / numpy / python RNGs, the random transforms' and generators' states and the data streams' positions:
        # without them a resumed run replays epoch 1's random stream (set_determinism and the DataLoaders re-seed)
        objs.setdefault("rng", RandomState(engine))
        if getattr(engine, "amp", False):
            # the AMP loss scale: without it a resumed run restarts at 2**16 and skips steps the uninterrupted one took
            objs.setdefault("scaler", GradScalerState(engine))
        self._take_lock(engine)
        # when the run starts, not here: building the trainer (a config check, ConfigWorkflow.check_properties) must
        # not replace the record of the model already in save_dir, nor stop because there is one
        engine.add_event_handler(Events.STARTED, lambda _engine: self._keep_the_earlier_run())
        engine.add_event_handler(Events.STARTED, lambda _engine: remove_partial_writes(self.save_dir))
        engine.add_event_handler(Events.STARTED, lambda _engine: self._write_run_file())
        if self.resume:
            # only the key structure is read here (tensors memory-mapped); CheckpointLoader reads them at STARTED
            found = newest_loadable_checkpoint(self.save_dir)
            for skipped in found.skipped:
                logger.warning(f"resume: skipped {skipped.path.name}, {skipped.reason}.")
            if found.path is None and found.skipped:
                raise BundleConfigError(
                    f"resume: no checkpoint in {self.save_dir} can be loaded ("
                    + "; ".join(f"{e.path.name}: {e.reason}" for e in found.skipped)
                    + "). Delete them to train from scratch in this folder, or train into another --output_dir."
                )
            if found.path is None:
                logger.info(f"resume: no checkpoint in {self.save_dir} yet; training from scratch.")
            else:
                path = str(found.path)
                stored = found.content
                self.loaded_from = path
                loc = self.map_location if self.map_location is not None else engine.state.device
                load = dict(objs)
                if "best_metric" in load and "best_metric" not in stored:
                    logger.warning(f"resume: {path} holds no best-metric record; the best model restarts.")
                    load.pop("best_metric")
                if "rng" in load and "rng" not in stored:
                    logger.warning(
                        f"resume: {path} holds no random-state record (written by an older version); training "
                        "continues, but its random draws (augmentations, shuffling) differ from an uninterrupted run."
                    )
                    load.pop("rng")
                if "scaler" in load and "scaler" not in stored:
                    logger.warning(
                        f"resume: {path} holds no AMP GradScaler state (written without amp, or by an older version); "
                        "training continues with the loss scale starting afresh, so its first steps may differ "
                        "from an uninterrupted run (overflow-skipped steps)."
                    )
                    load.pop("scaler")
                if "run" in load:
                    if "run" in stored:
                        self.run_info.check_against(stored["run"], path)
                    else:
                        load.pop("run")  # written before run records existed: nothing to compare
                missing = sorted(set(load) - set(stored))
                if missing:
                    raise BundleConfigError(
                        f"resume: {path} holds no {missing} (it holds {sorted(stored)}): it was written by a run with "
                        "another method (e.g. a supervised run has no EMA teacher). Resume with that run's --method, "
                        "or train this one into another --output_dir (or replace that run: --overwrite true, "
                        "without --resume)."
                    )
                CheckpointLoader(load_path=path, load_dict=load, map_location=loc).attach(engine)
                scheduler = self.save_dict.get("lr_scheduler")
                if scheduler is not None:
                    configured = _schedule_of(scheduler)
                    engine.add_event_handler(Events.STARTED, lambda _e: _retarget_schedule(scheduler, configured))
                engine.add_event_handler(Events.STARTED, _say_if_already_finished)
                logger.info(f"resume: training state will be restored from {path}"
                            + (f" (the newest that loads; {len(found.skipped)} newer skipped)." if found.skipped
                               else "."))
        if self.save_interval > 0:
            Path(self.save_dir).mkdir(parents=True, exist_ok=True)
            saver = AtomicCheckpointSaver(
                save_dir=self.save_dir,
                save_dict=objs,
                save_interval=self.save_interval,
                n_saved=self.n_saved,
                epoch_level=True,
            )
            # ignite calls EPOCH_COMPLETED handlers in the order they were attached; this one is attached when
            # the run starts, after every handler of the config (ValidationHandler included), so that an epoch's
            # checkpoint holds that epoch's validation result in its best-metric record
            from ignite.engine import Events

            def _attach_saver(_engine: Any) -> None:
                if not self._saver_attached:  # a second engine.run() must not attach a second saver
                    saver.attach(_engine)
                    # attached after the saver: runs once that epoch's checkpoint is on disk
                    _engine.add_event_handler(Events.EPOCH_COMPLETED, self._prune_earlier_runs)
                    self._earlier = self._checkpoint_files()
                    self._saver_attached = True

            engine.add_event_handler(Events.STARTED, _attach_saver)
