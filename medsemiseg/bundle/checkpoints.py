"""The trained model ``evaluating`` and ``inferring`` load, checked before any data is read.

:func:`trained_checkpoint` gives the bundles' ``CheckpointLoader`` its ``load_path`` only when the file is a
checkpoint this network can load, else one error naming the file and the fix (train first, another bundle, other
classes, another network); :func:`check_trained_on` warns when a run uses other data than the model's ``run.json``
says it was trained on.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from .inputs import BUNDLE_FOR_CHANNELS
from medsemiseg.runrecord import RUN_FILE, RunRecordError, read_run_record
from .settings import BundleConfigError, is_empty

__all__ = ["RUN_FILE", "CheckpointError", "RunRecordError", "ModelNotFoundError", "check_trained_on", "trained_checkpoint"]

logger = logging.getLogger(__name__)



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
    run = path.parent / RUN_FILE
    try:
        record = read_run_record(run) or {}
    except RunRecordError:
        record = {}  # this message is about the weights; the record's own problem is reported where it is used
    said = {k: record[k] for k in ("method", "network_name", "network_kwargs", "classes", "in_channels")
            if k in record}
    recorded = f" (its {run}: {said})" if said else ""
    our_ch, our_cls = _layer_shapes(ours, keys)
    their_ch, their_cls = _layer_shapes(state, keys) if not missing else (None, None)
    if their_ch is not None and (their_ch != our_ch or their_cls != our_cls):
        other = BUNDLE_FOR_CHANNELS.get(their_ch) if their_ch != our_ch else None
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
    if is_empty(a) or is_empty(b):
        return is_empty(a) and is_empty(b)
    return Path(str(a)).expanduser().resolve() == Path(str(b)).expanduser().resolve()


def check_trained_on(ckpt_path: str | os.PathLike, dataset_dir: Any, workflow: str = "evaluating") -> None:
    """Warn when ``evaluating`` / ``inferring`` run on other data than the model in ``ckpt_path`` was trained on.

    A forgotten ``--dataset_dir`` after training on a prepared data set would score (or segment) the built-in
    synthetic phantoms without a word. The training writes ``run.json`` next to its models
    (:class:`~medsemiseg.bundle.resume.TrainCheckpointer`); when it is there and names another ``dataset_dir`` than
    this run's, the warning names both and the flag to pass. For ``inferring`` only an empty ``dataset_dir`` (the
    synthetic test split) is questioned: inferring on new files is what it is for. A ``run.json`` that is there but
    unreadable stops the run naming it (:class:`~medsemiseg.runrecord.RunRecordError`).
    """
    run_file = Path(str(ckpt_path)).expanduser().parent / RUN_FILE
    record = read_run_record(run_file)  # a damaged record stops the run, naming it (RunRecordError)
    if record is None:
        return
    trained = record.get("dataset_dir")
    if workflow == "inferring" and not is_empty(dataset_dir):
        return
    if _same_data(trained, dataset_dir):
        return
    where = lambda d: "the built-in synthetic data set" if is_empty(d) else str(d)  # noqa: E731
    logger.warning(
        f"{workflow}: the model {ckpt_path} was trained on {where(trained)} ({run_file}), but this run uses "
        f"{where(dataset_dir)}"
        + (f"; pass --dataset_dir {trained} to {'score' if workflow == 'evaluating' else 'segment'} that data set."
           if not is_empty(trained) else ".")
    )



def with_pretrained(network: torch.nn.Module, ckpt_path: str | os.PathLike | None) -> torch.nn.Module:
    """``network`` with the weights of ``ckpt_path`` (the bundles' ``pretrained_ckpt``: fine-tune a trained model,
    what MONAI Label's training does by default); unchanged when ``ckpt_path`` is ``None`` or empty.

    ``ckpt_path`` is a ``model.pt`` as the bundles write it (the network's state dict, or ``{"model": state dict}``);
    its layers must match the network's (same ``network_name``, ``network_kwargs`` and classes), else the error names
    the file and the fix."""
    if is_empty(ckpt_path):
        return network
    path = Path(str(ckpt_path))
    if not path.is_file():
        raise BundleConfigError(f"pretrained_ckpt={str(path)!r} does not exist; give a trained model.pt or null.")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, Mapping) and isinstance(state.get("model"), Mapping):
        state = state["model"]
    try:
        network.load_state_dict(state)
    except RuntimeError as e:
        raise BundleConfigError(
            f"pretrained_ckpt={str(path)!r} does not fit the network ({str(e).splitlines()[0]}); start from a model "
            "of the same network_name, network_kwargs and classes, or set pretrained_ckpt null."
        ) from None
    logger.info(f"network initialised from {path}")
    return network
