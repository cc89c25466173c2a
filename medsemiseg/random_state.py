"""The random state of a training run, as a checkpointable object, so that a resumed run continues the same streams.

A training killed after its epoch-K checkpoint and rerun with ``--resume true`` must train exactly as the
uninterrupted run would have. Model, optimiser and counters are not enough: the bundles' ``training`` list calls
``set_determinism(seed)`` again and MONAI's ``DataLoader`` re-seeds its dataset's random transforms when it is built,
so without this record every resumed run would replay epoch 1's augmentations, shuffles and mixing draws.

:class:`RandomState` saves and restores (``state_dict`` / ``load_state_dict``, for ignite's checkpointing):

- torch's CPU generator, every CUDA device's generator (when CUDA is available), numpy's global ``RandomState``
  and Python's ``random``;
- the ``RandomState`` (``.R``) of every MONAI ``Randomizable`` transform reachable from the trainer's data loaders
  (labelled and unlabelled datasets) and from the method, and every private ``torch.Generator`` found there (a
  seeded ``StrongAugment``, a loader's or sampler's ``generator``);
- the trainer's data-stream positions (:meth:`SemiSupervisedTrainer.stream_state_dict`): which batch of the current
  labelled / unlabelled pass comes next, so a resume continues that pass's order instead of drawing a new one.

Under ``torchrun`` every process draws its own random numbers (the bundles seed process ``r`` with ``seed + r``),
so the record holds every process's state (``{"ranks": [...]}``) and each process resumes its own.

Everything is stored as tensors and plain numbers, so checkpoints load with ``torch.load(weights_only=True)``.
The state is restored by ``CheckpointLoader`` at ``Events.STARTED`` of ``trainer.run()``: after
``set_determinism`` and after every ``DataLoader`` was built (which is what re-seeded the transforms).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)

__all__ = ["RandomState", "random_objects", "loader_rng_snapshot", "restore_loader_rng"]


# ------------------------------------------------------------------------------------------- numpy / python


def _np_to_dict(state: tuple) -> dict:
    return {"key": torch.as_tensor(np.asarray(state[1], dtype=np.int64)), "pos": int(state[2]),
            "has_gauss": int(state[3]), "cached_gaussian": float(state[4])}


def _np_from_dict(d: Mapping) -> tuple:
    key = d["key"].cpu().numpy().astype(np.uint32) if isinstance(d["key"], torch.Tensor) else np.asarray(d["key"],
                                                                                                         np.uint32)
    return ("MT19937", key, int(d["pos"]), int(d["has_gauss"]), float(d["cached_gaussian"]))


def _py_to_dict(state: tuple) -> dict:
    version, internal, gauss = state
    return {"version": int(version), "internal": torch.as_tensor(list(internal), dtype=torch.int64),
            "has_gauss": int(gauss is not None), "gauss": 0.0 if gauss is None else float(gauss)}


def _py_from_dict(d: Mapping) -> tuple:
    gauss = float(d["gauss"]) if int(d.get("has_gauss", 1)) else None
    return (int(d["version"]), tuple(int(x) for x in d["internal"].tolist()), gauss)


# ---------------------------------------------------------------------------------------- what is random


def _is_generator(x: Any) -> bool:
    return isinstance(x, torch.Generator)


def random_objects(*roots: Any) -> list[Any]:
    """Every MONAI ``Randomizable`` (with its ``R``) and every ``torch.Generator`` reachable from ``roots``, in a
    deterministic order (the order of attributes / list items / sub-modules), each once.

    Followed: data loaders (their ``dataset``, ``generator``, ``sampler``), datasets (``transform``), MONAI
    ``Compose`` (``transforms``), lists / tuples / dicts, ``torch.nn.Module`` sub-modules, and the attributes of
    objects of this package and of MONAI. Tensors, parameters and other libraries' objects are not entered."""
    from monai.transforms import Randomizable

    found: list[Any] = []
    seen: set[int] = set()

    def visit(obj: Any, depth: int) -> None:
        if obj is None or depth > 8 or id(obj) in seen:
            return
        if isinstance(obj, (str, bytes, int, float, bool, torch.Tensor, np.ndarray)):
            return
        seen.add(id(obj))
        if _is_generator(obj):
            if obj.device.type == "cpu":
                found.append(obj)
            return
        if isinstance(obj, Randomizable) and isinstance(getattr(obj, "R", None), np.random.RandomState):
            found.append(obj)
        if isinstance(obj, Mapping):
            for v in obj.values():
                visit(v, depth + 1)
            return
        if isinstance(obj, (list, tuple)):
            for v in obj:
                visit(v, depth + 1)
            return
        if isinstance(obj, torch.utils.data.DataLoader):
            for v in (obj.dataset, obj.generator, obj.sampler, getattr(obj, "batch_sampler", None)):
                visit(v, depth + 1)
            return
        module = type(obj).__module__ or ""
        if isinstance(obj, torch.nn.Module):
            for v in vars(obj).items():
                if v[0] not in ("_parameters", "_buffers", "_modules") and not v[0].startswith("_"):
                    visit(v[1], depth + 1)
            for v in obj._modules.values():
                visit(v, depth + 1)
            return
        if module.startswith(("medsemiseg", "monai", "torch.utils.data")) and hasattr(obj, "__dict__"):
            for k, v in vars(obj).items():
                if k in ("R",) or isinstance(v, torch.nn.Parameter):
                    continue
                visit(v, depth + 1)

    for root in roots:
        visit(root, 0)
    return found


def _state_of(obj: Any) -> dict:
    if _is_generator(obj):
        return {"generator": obj.get_state()}
    return {"R": _np_to_dict(obj.R.get_state())}


def _set_state_of(obj: Any, state: Mapping) -> None:
    if _is_generator(obj):
        obj.set_state(state["generator"].cpu())
    else:
        obj.R.set_state(_np_from_dict(state["R"]))


# -------------------------------------------------------------------------------- a data loader's shuffling


def _loader_generators(loader: Any) -> list[torch.Generator]:
    gens = []
    for g in (getattr(loader, "generator", None), getattr(getattr(loader, "sampler", None), "generator", None)):
        if _is_generator(g) and all(g is not x for x in gens):
            gens.append(g)
    return gens


def loader_rng_snapshot(loader: Any) -> dict:
    """What decides the order of a data loader's next pass: torch's CPU generator, the loader's / sampler's own
    generators and a distributed sampler's pass number (``set_epoch``), taken just before ``iter(loader)``."""
    out = {"torch": torch.get_rng_state(), "generators": [g.get_state() for g in _loader_generators(loader)]}
    sampler = getattr(loader, "sampler", None)
    if isinstance(sampler, torch.utils.data.DistributedSampler):
        out["sampler_epoch"] = int(sampler.epoch)
    return out


def restore_loader_rng(loader: Any, snapshot: Mapping) -> None:
    torch.set_rng_state(snapshot["torch"].cpu())
    gens = _loader_generators(loader)
    for g, s in zip(gens, snapshot.get("generators", [])):
        g.set_state(s.cpu())
    sampler = getattr(loader, "sampler", None)
    if "sampler_epoch" in snapshot and isinstance(sampler, torch.utils.data.DistributedSampler):
        sampler.set_epoch(int(snapshot["sampler_epoch"]))


class _ResumedBatches:
    """A batch sampler that continues a pass at batch ``skip``: it draws the pass's order from the wrapped sampler
    (under whatever RNG state is current when :meth:`prime` runs) and drops the first ``skip`` index lists, so the
    skipped batches are never loaded or transformed."""

    def __init__(self, batch_sampler: Iterable, skip: int) -> None:
        self.batch_sampler, self.skip = batch_sampler, int(skip)
        self._it: Any = None
        self._head: list = []

    def __len__(self) -> int:
        return max(len(self.batch_sampler) - self.skip, 0)  # type: ignore[arg-type]

    def __iter__(self) -> _ResumedBatches:
        return self

    def prime(self) -> None:
        if self._it is None:
            self._it = iter(self.batch_sampler)
            for _ in range(self.skip):
                if next(self._it, None) is None:
                    break
            head = next(self._it, None)
            self._head = [] if head is None else [head]

    def __next__(self) -> Any:
        self.prime()
        if self._head:
            return self._head.pop()
        return next(self._it)


def resumed_iter(loader: Any, snapshot: Mapping, skip: int) -> Any:
    """An iterator over the rest of a pass of ``loader``: the pass whose iterator was created under ``snapshot``
    (:func:`loader_rng_snapshot`), of which ``skip`` batches were already consumed. The current RNG state is left as
    it was. Only a loader with automatic batching (a ``batch_sampler``) can be continued; ``None`` otherwise."""
    batch_sampler = getattr(loader, "batch_sampler", None)
    if batch_sampler is None or not isinstance(loader, torch.utils.data.DataLoader):
        return None
    now = loader_rng_snapshot(loader)
    wrapper = _ResumedBatches(batch_sampler, skip)
    try:
        restore_loader_rng(loader, snapshot)
        # DataLoader refuses to set batch_sampler after construction; the iterator reads it once, when created
        object.__setattr__(loader, "batch_sampler", wrapper)
        try:
            it = iter(loader)  # draws the worker base seed, as the original pass's iter() did
        finally:
            object.__setattr__(loader, "batch_sampler", batch_sampler)
        wrapper.prime()  # the pass's order: drawn now, under the same RNG state as the original pass's first batch
    finally:
        restore_loader_rng(loader, now)
    return it


# ------------------------------------------------------------------------------------------------ the record


def _restore_cuda_rng(saved: list) -> None:
    """Restore the CUDA generators of a checkpoint, device by device.

    A training uses one device (``cuda:0`` in the benchmark grid), but the checkpoint holds the state of every
    device its process could see; a resume on a machine (or ``CUDA_VISIBLE_DEVICES``) with another device count
    restores the devices both have instead of none, and says so: the CUDA generator drives the methods' random draws
    on the GPU (CutMix boxes, ClassMix / SupMix choices, strong views, dropout)."""
    if not torch.cuda.is_available():
        logger.warning(
            f"resume: the checkpoint holds the random state of {len(saved)} CUDA device(s) but this run sees no CUDA "
            "device: the random draws made on the GPU (mixing, strong views, dropout) continue from other streams."
        )
        return
    n = torch.cuda.device_count()
    for index, s in enumerate(saved[:n]):
        torch.cuda.set_rng_state(s.cpu(), index)
    if len(saved) != n:
        logger.warning(
            f"resume: the checkpoint holds the random state of {len(saved)} CUDA device(s), this run sees {n}: "
            f"restored for device(s) 0..{min(len(saved), n) - 1} only (another CUDA_VISIBLE_DEVICES?)."
        )


class RandomState:
    """Checkpointable random state of a training run (see the module docstring).

    Args:
        trainer: the training engine; its ``data_loader`` / ``unlabeled_data_loader`` and ``method`` are searched
            for random transforms and generators, and (a :class:`~medsemiseg.engines.SemiSupervisedTrainer`) its data
            stream positions are saved and restored.
        extra: other objects to search (e.g. a method not attached to the trainer).
    """

    def __init__(self, trainer: Any, extra: Iterable[Any] = ()) -> None:
        self.trainer = trainer
        self.extra = list(extra)

    def _objects(self) -> list[Any]:
        t = self.trainer
        roots = [getattr(t, "data_loader", None), getattr(t, "unlabeled_data_loader", None),
                 getattr(t, "method", None), *self.extra]
        return random_objects(*roots)

    def state_dict(self) -> dict:
        """This process's random state; with several processes (``torchrun``), every process's, gathered (all of
        them call this at the same point: each one's checkpoint saver runs, rank 0's writes)."""
        local = self._local_state_dict()
        if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return local
        states: list = [None] * dist.get_world_size()
        dist.all_gather_object(states, local)
        return {"ranks": states}

    def _local_state_dict(self) -> dict:
        out: dict = {
            "torch": torch.get_rng_state(),
            "numpy": _np_to_dict(np.random.get_state()),
            "python": _py_to_dict(random.getstate()),
            "objects": [_state_of(o) for o in self._objects()],
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            out["cuda"] = list(torch.cuda.get_rng_state_all())
        streams = getattr(self.trainer, "stream_state_dict", None)
        if callable(streams):
            out["streams"] = streams()
        return out

    def load_state_dict(self, state: Mapping) -> None:
        """Continue the saved streams: with a record of several processes, each process its own; a process the
        record has no entry for (more processes than when it was saved) keeps its own streams (logged)."""
        rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        if "ranks" in state or rank > 0:
            saved = list(state["ranks"]) if "ranks" in state else [state]
            if rank >= len(saved):
                logger.warning(
                    f"resume: the checkpoint holds the random state of {len(saved)} process(es); process {rank} keeps "
                    "its own random streams (augmentations, mixing draws), so the run continues, but not as the "
                    "saved one would have."
                )
                return
            state = saved[rank]
        torch.set_rng_state(state["torch"].cpu())
        np.random.set_state(_np_from_dict(state["numpy"]))
        random.setstate(_py_from_dict(state["python"]))
        if "cuda" in state:
            _restore_cuda_rng(list(state["cuda"]))
        objs, saved = self._objects(), list(state["objects"])
        if len(objs) != len(saved) or any(("generator" in s) != _is_generator(o) for o, s in zip(objs, saved)):
            logger.warning(
                f"resume: the checkpoint holds the state of {len(saved)} random transform(s)/generator(s), this run "
                f"has {len(objs)} (other augmentation settings?): their random streams restart."
            )
        else:
            for o, s in zip(objs, saved):
                _set_state_of(o, s)
        load_streams = getattr(self.trainer, "load_stream_state_dict", None)
        if "streams" in state and callable(load_streams):
            load_streams(state["streams"])
