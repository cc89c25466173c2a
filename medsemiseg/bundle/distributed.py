"""What the bundles' ``configs/multi_gpu_train.json`` calls: one training in N processes started by ``torchrun``.

    torchrun --nproc_per_node=N -m monai.bundle run training \\
        --config_file "['bundles/covid/configs/train.json','bundles/covid/configs/multi_gpu_train.json']"

As the MONAI model zoo's ``multi_gpu_train.json`` overlays do, it keeps ``train.json``'s workflow and replaces a few
keys: ``device`` (:func:`local_device`: one GPU per process, the CPU without CUDA), ``network``
(:func:`wrap_network`: ``DistributedDataParallel``, ``SyncBatchNorm`` with ``sync_batchnorm``), the training
loaders' samplers (:func:`medsemiseg.data.sampling.distributed_train_sampler`), the trainer's handlers
(:func:`train_handlers`: logs and the run summary in rank 0 only), ``tb_writer`` (:func:`summary_writer`), the
validation (each process scores its share of the validation set, MONAI's metrics gather the scores, and rank 0 logs
them and saves the best model), ``training`` (the process group first,
:func:`init_process_group`; each process seeded with :func:`process_seed`; rank 0 makes the datalist while the
others wait, :func:`wait_for_main_process` / :func:`main_process_done`) and ``finalize`` (:func:`finish`).

``batch_size`` and ``unlabeled_batch_size`` are per process: one iteration trains on N times as many images.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch
import torch.distributed as dist

from medsemiseg.distributed import DistributedNetwork, is_distributed, is_main, rank, world_size

from .settings import BundleConfigError, as_bool, check_device

__all__ = ["local_device", "init_process_group", "process_seed", "wrap_network", "train_handlers", "summary_writer",
           "NoSummaryWriter", "wait_for_main_process", "main_process_done", "finish"]

logger = logging.getLogger(__name__)

OVERLAY = "configs/multi_gpu_train.json"


def local_device() -> torch.device:
    """This process's device: ``cuda:<LOCAL_RANK>`` when CUDA is available, else the CPU (the ``gloo`` backend)."""
    local = os.environ.get("LOCAL_RANK")
    if local is None:
        raise BundleConfigError(
            f"{OVERLAY}: LOCAL_RANK is not set, so this process was not started by torchrun; run "
            "torchrun --nproc_per_node=N -m monai.bundle run training --config_file "
            "\"['configs/train.json','configs/multi_gpu_train.json']\" (one process: train.json alone)."
        )
    if not torch.cuda.is_available():
        return torch.device("cpu")
    visible = torch.cuda.device_count()
    if int(local) >= visible:
        raise BundleConfigError(
            f"{OVERLAY}: process {local} of this node has no GPU of its own ({visible} visible): start at most "
            f"{visible} processes per node, --nproc_per_node={visible}."
        )
    return torch.device(f"cuda:{int(local)}")


def init_process_group(device: Any) -> None:
    """Join the ``torchrun`` process group (``nccl`` on CUDA, ``gloo`` on the CPU); processes other than rank 0
    log warnings and errors only, so the run's log is rank 0's."""
    device = check_device(device)
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    if not is_main():
        logging.getLogger().setLevel(logging.WARNING)
    logger.info(f"training in {world_size()} processes ({dist.get_backend()} on {device.type}); rank 0 writes the "
                "checkpoints and logs.")


def process_seed(seed: Any) -> int:
    """Process ``r``'s seed, ``seed + r``: every process draws other augmentations and mixing choices; what must be
    the same everywhere (the network, the discriminator) is broadcast from rank 0, whose seed is ``seed``."""
    return int(seed) + rank()


def wrap_network(network: torch.nn.Module, device: Any, sync_batchnorm: Any = False) -> DistributedNetwork:
    """``network`` on ``device`` in :class:`~medsemiseg.distributed.DistributedNetwork` (DDP), its BatchNorm layers
    made ``SyncBatchNorm`` with ``sync_batchnorm`` (CUDA only)."""
    device = check_device(device)
    sync = as_bool(sync_batchnorm, "sync_batchnorm")
    if sync and device.type != "cuda":
        raise BundleConfigError(
            f"{OVERLAY}: --sync_batchnorm true needs CUDA devices (PyTorch's SyncBatchNorm runs on GPUs only); "
            "on the CPU leave it false."
        )
    if not dist.is_initialized():
        raise BundleConfigError(f"{OVERLAY}: the network is wrapped before the process group exists; 'training' "
                                "must start with medsemiseg.bundle.distributed.init_process_group(@device).")
    return DistributedNetwork(network.to(device), device_ids=[device] if device.type == "cuda" else None,
                              sync_batchnorm=sync)


def _rank0_only(handler: Any) -> bool:
    """Printed and TensorBoard logs, the run summary, the train stats and the MLflow run come from rank 0 only."""
    from monai.handlers import MLFlowHandler, StatsHandler, TensorBoardHandler

    from medsemiseg.handlers import RunSummary, TrainStatsWriter
    from medsemiseg.tracking import TrackedRun

    return isinstance(handler, (StatsHandler, TensorBoardHandler, RunSummary, TrainStatsWriter, TrackedRun,
                                MLFlowHandler))


def train_handlers(checkpointer: Any, handlers: list) -> list:
    """The trainer's handlers in this process: every one in rank 0; in the others the checkpointer (which loads a
    resumed state in every process and writes in rank 0 only), the learning-rate schedule and the validation (each
    process scores its share of the validation set; MONAI's metrics gather the scores)."""
    if is_main():
        return [checkpointer, *handlers]
    return [checkpointer, *(h for h in handlers if not _rank0_only(h))]


class NoSummaryWriter:
    """``tb_writer`` in processes other than rank 0: writes nothing (every method does nothing)."""

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


def summary_writer(log_dir: str) -> Any:
    """TensorBoard's writer into ``log_dir`` in rank 0 (:class:`~medsemiseg.bundle.tensorboard.DeferredSummaryWriter`:
    its event file appears with its first event), :class:`NoSummaryWriter` in the others."""
    if not is_main():
        return NoSummaryWriter()
    from .tensorboard import DeferredSummaryWriter

    return DeferredSummaryWriter(log_dir=log_dir)


def _barrier() -> None:
    if dist.get_backend() == "nccl":
        dist.barrier(device_ids=[torch.cuda.current_device()])
    else:
        dist.barrier()


def wait_for_main_process() -> None:
    """Processes other than rank 0 wait here until rank 0 reaches :func:`main_process_done`."""
    if is_distributed() and not is_main():
        _barrier()


def main_process_done(*made: Any) -> None:
    """Rank 0 lets the waiting processes go on, once ``made`` (the datalist, which rank 0 alone generates on first
    use) exists."""
    if is_distributed() and is_main():
        _barrier()


def finish() -> None:
    """Every process waits until all have finished (rank 0 validates and writes last), then leaves the group."""
    if dist.is_initialized():
        if is_distributed():
            _barrier()
        dist.destroy_process_group()
