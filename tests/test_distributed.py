"""Training in several processes (``torchrun``, DDP) on the CPU with the ``gloo`` backend.

Two processes train SupMix + SUFD on a tiny problem through the real pieces (``SemiSupervisedTrainer``,
``DistributedNetwork``, ``DistributedTrainSampler``, ``TrainCheckpointer``): after every iteration every process
holds the same student, EMA teacher and discriminator; the result matches one process trained on the same global
batches; rank 0 alone writes one checkpoint; a resumed run ends where an uninterrupted one does. Then the bundle's
``multi_gpu_train.json`` overlay trains and resumes under ``torchrun`` as docs/howto/several-gpus.md shows.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from ignite.engine import Events
from monai.data import DataLoader, Dataset

from medsemiseg.bundle.resume import TrainCheckpointer
from medsemiseg.checkpoint_io import checkpoint_files
from medsemiseg.data.sampling import DistributedTrainSampler
from medsemiseg.distributed import DistributedNetwork, all_gather_object, rank, world_size
from medsemiseg.engines import SemiSupervisedTrainer
from medsemiseg.methods.sufd import SUFD
from medsemiseg.methods.supmix import SupMix
from medsemiseg.networks import FeatureDiscriminator, UNet

REPO = Path(__file__).resolve().parents[1]
K, SIZE, LENGTH, SEED = 3, 32, 3, 0

#: the largest difference of any weight between two processes and one process trained on the same global batches
#: (instance norm: the same arithmetic up to the order of float32 sums, measured at 4e-8 after three SGD steps,
#: where the steps move the weights by up to ~1e-2)
MATCH_TOLERANCE = 1e-6


def _items(labelled: bool, n: int = 8) -> list[dict]:
    g = torch.Generator().manual_seed(7 if labelled else 8)
    items = []
    for _ in range(n):
        label = torch.zeros(1, SIZE, SIZE)
        for k in (1, 2):
            x, y = torch.randint(0, SIZE - 12, (2,), generator=g).tolist()
            label[0, x:x + 12, y:y + 10] = k
        image = 0.2 + 0.3 * label + 0.05 * torch.rand(1, SIZE, SIZE, generator=g)
        items.append({"image": image, "label": label} if labelled else {"image": image})
    return items


def _loader(items: list[dict], batch: int) -> DataLoader:
    sampler = DistributedTrainSampler(items, batch, LENGTH, num_replicas=world_size(), rank=rank(), seed=SEED)
    return DataLoader(Dataset(items), batch_size=batch, sampler=sampler)


def _same_model_everywhere(net, method, seen: list) -> callable:
    """An ITERATION_COMPLETED handler: every process's student, teacher and discriminator are bit for bit rank 0's."""
    def check(engine) -> None:
        tensors = [*net.state_dict().values(), *method.base.teacher.state_dict().values(),
                   *method.discriminator.state_dict().values()]
        flat = torch.cat([t.detach().reshape(-1).double() for t in tensors])
        everyone = all_gather_object(flat)
        for r, other in enumerate(everyone[1:], 1):
            assert torch.equal(everyone[0], other), (
                f"after iteration {engine.state.iteration} process {r} holds another model than process 0")
        seen.append(engine.state.iteration)
    return check


def _train(save_dir: Path, batch: int, max_epochs: int, exact: bool, resume: bool = False) -> dict:
    """SupMix + SUFD on the tiny problem in this process (one of several when a process group exists).

    ``exact``: what makes the run comparable with one process on the same global batches (instance norm, no strong
    view, labelled partners in batch order, SGD); otherwise the bundles' choices (batch norm, random strong views and
    partners, AdamW and Adam), whose random draws each process makes with its own seed."""
    torch.manual_seed(SEED + rank())  # the bundles' process_seed
    norm = ("instance", {"affine": True}) if exact else ("batch", {"affine": True})
    net = UNet(in_channels=1, out_channels=K, features=(4, 4, 8, 8, 16, 4), norm=norm)
    if world_size() > 1:
        net = DistributedNetwork(net)
    disc = FeatureDiscriminator(net.feature_channels, base_channels=8, num_layers=2)
    if exact:
        base = SupMix(net, K, supmix_classes=[1], labeled_pairing="cycle", strong_augment=torch.nn.Identity())
        method = SUFD(base, disc, d_optimizer=torch.optim.SGD(disc.parameters(), lr=0.05))
        opt = torch.optim.SGD(net.parameters(), lr=0.05)
    else:
        method = SUFD(SupMix(net, K, supmix_classes=[1]), disc)
        opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    checkpointer = TrainCheckpointer(save_dir, dict(model=net, optimizer=opt, **method.checkpoint_objects()),
                                     resume=resume, n_saved=2, run_info={"method": "supmix_sufd"})
    trainer = SemiSupervisedTrainer("cpu", max_epochs, _loader(_items(True), batch), net, opt, method,
                                    unlabeled_data_loader=_loader(_items(False), batch), epoch_length=LENGTH,
                                    train_handlers=[checkpointer])
    seen: list = []
    if world_size() > 1:
        trainer.add_event_handler(Events.ITERATION_COMPLETED, _same_model_everywhere(net, method, seen))
    trainer.run()
    if world_size() > 1:
        assert len(seen) == LENGTH * (max_epochs - (1 if resume else 0)), seen
    return {"student": net.state_dict(), "teacher": method.base.teacher.state_dict(), "disc": disc.state_dict()}


def _worker(process: int, processes: int, out: str) -> None:
    import ignite.distributed as idist

    torch.set_num_threads(1)
    out = Path(out)
    dist.init_process_group("gloo", init_method=f"file://{out / 'rendezvous'}", rank=process, world_size=processes)
    try:
        assert idist.get_rank() == process  # what makes ignite's DiskSaver write in rank 0 only
        result = _train(out / "match", batch=2, max_epochs=1, exact=True)
        _train(out / "resumed", batch=2, max_epochs=1, exact=False)
        resumed = _train(out / "resumed", batch=2, max_epochs=2, exact=False, resume=True)
        straight = _train(out / "straight", batch=2, max_epochs=2, exact=False)
        if process == 0:
            torch.save({"match": result, "resumed": resumed, "straight": straight}, out / "rank0.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(2, str(out)), nprocs=2, join=True)
    return out


@pytest.mark.integration
def test_two_processes_match_one_process_on_the_same_global_batches(two_processes, tmp_path):
    # every iteration's check that both processes hold the same model ran in the workers (_same_model_everywhere)
    ddp = torch.load(two_processes / "rank0.pt", weights_only=True)["match"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = _train(tmp_path, batch=4, max_epochs=1, exact=True)
    finally:
        torch.set_num_threads(threads)
    start = UNet(in_channels=1, out_channels=K, features=(4, 4, 8, 8, 16, 4), norm=("instance", {"affine": True}))
    for part in ("student", "teacher", "disc"):
        worst = max(float((ddp[part][k].float() - v.float()).abs().max()) for k, v in single[part].items())
        assert worst < MATCH_TOLERANCE, f"{part}: differs from the single-process run by {worst:.3g}"
    moved = max(float((single["student"][k] - v).abs().max()) for k, v in start.state_dict().items()
                if k in single["student"])
    assert moved > 100 * MATCH_TOLERANCE, "the steps hardly moved the weights: the comparison would prove nothing"


@pytest.mark.integration
def test_rank_0_alone_writes_one_checkpoint_and_the_run_record(two_processes):
    models = two_processes / "match"
    assert [p.name for p in checkpoint_files(models)] == ["checkpoint_epoch=1.pt"]
    assert sorted(p.name for p in models.iterdir()) == ["checkpoint_epoch=1.pt", "run.json"]  # lock released
    state = torch.load(models / "checkpoint_epoch=1.pt", weights_only=True)
    assert len(state["rng"]["ranks"]) == 2  # each process resumes its own random streams
    assert "module." not in "".join(state["model"])  # loads into a single-process network


@pytest.mark.integration
def test_a_resumed_run_ends_where_an_uninterrupted_one_does(two_processes):
    both = torch.load(two_processes / "rank0.pt", weights_only=True)
    for part in ("student", "teacher", "disc"):
        for key, value in both["straight"][part].items():
            assert torch.equal(both["resumed"][part][key], value), f"{part} {key} differs after the resume"
    assert [p.name for p in checkpoint_files(two_processes / "resumed")] == [
        "checkpoint_epoch=2.pt", "checkpoint_epoch=1.pt"]


def test_each_process_draws_its_share_of_the_global_batches():
    items = list(range(5))  # fewer items than a global batch: the permutations run back to back
    one = list(DistributedTrainSampler(items, 4, LENGTH, num_replicas=1, rank=0, seed=3))
    mine = [list(DistributedTrainSampler(items, 2, LENGTH, num_replicas=2, rank=r, seed=3)) for r in (0, 1)]
    for t in range(LENGTH):
        assert one[4 * t:4 * t + 4] == mine[0][2 * t:2 * t + 2] + mine[1][2 * t:2 * t + 2]
    assert sorted(one[:5]) == items  # every item once per permutation
    other = DistributedTrainSampler(items, 2, LENGTH, num_replicas=2, rank=0, seed=3)
    other.set_epoch(1)
    assert list(other) != mine[0]  # every pass reshuffled
    # one pass over the 5 items: 2 global batches of 4, of which this process draws 2 x 2 items
    assert len(DistributedTrainSampler(items, 2, None, num_replicas=2, rank=0)) == 4


def test_the_overlay_outside_torchrun_and_syncbatchnorm_on_the_cpu_name_the_fix(monkeypatch):
    from medsemiseg.bundle.distributed import local_device, wrap_network
    from medsemiseg.bundle.settings import BundleConfigError

    monkeypatch.delenv("LOCAL_RANK", raising=False)
    with pytest.raises(BundleConfigError, match="not started by torchrun; run torchrun --nproc_per_node=N"):
        local_device()
    with pytest.raises(BundleConfigError, match="--sync_batchnorm true needs CUDA devices"):
        wrap_network(torch.nn.Conv2d(1, 1, 1), "cpu", sync_batchnorm="true")


def _torchrun(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "monai.bundle", "run", "training", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"torchrun failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc


@pytest.mark.integration
def test_the_bundle_overlay_trains_and_resumes_under_torchrun(tmp_path):
    configs = "['bundles/covid/configs/train.json','bundles/covid/configs/multi_gpu_train.json']"
    tiny = ["--image_size", "[64, 64]", "--batch_size", "2", "--unlabeled_batch_size", "2", "--epoch_length", "2",
            "--output_dir", str(tmp_path), "--cache_dir", str(tmp_path / "cache")]
    _torchrun("--config_file", configs, *tiny, "--max_epochs", "1")
    models = tmp_path / "models"
    assert sorted(p.name for p in models.iterdir()) == ["checkpoint_epoch=1.pt", "model.pt", "run.json"]
    assert len(list((tmp_path / "logs").iterdir())) == 1  # one TensorBoard file: rank 0's
    assert json.loads((models / "run.json").read_text())["method"] == "supmix_sufd"
    proc = _torchrun("--config_file", configs, *tiny, "--max_epochs", "2", "--resume", "true")
    assert "Restored all variables from" in proc.stdout + proc.stderr
    state = torch.load(models / "checkpoint_epoch=2.pt", weights_only=True)
    assert state["trainer"]["iteration"] == 4 and len(state["rng"]["ranks"]) == 2


def test_the_two_bundles_overlays_are_one_file_in_step_with_the_workflow():
    covid, chase = (REPO / "bundles" / t / "configs" / "multi_gpu_train.json" for t in ("covid", "chase"))
    assert covid.read_text() == chase.read_text(), "bundles/*/configs/multi_gpu_train.json must be identical"
    overlay = json.loads(covid.read_text())
    workflow = json.loads((REPO / "bundles" / "workflow.template.json").read_text())
    # the overlay replaces whole 'training': it must still run the workflow's own steps after its set-up
    steps = [s for s in workflow["training"] if "set_determinism" not in s]
    assert [s for s in overlay["training"] if s in steps] == steps, (
        "multi_gpu_train.json's 'training' lacks steps of the workflow's (bundles/workflow.template.json); add them")
    for key in overlay:
        path = key.split("#")
        node = workflow
        for part in path[:-1]:
            assert part in node, f"multi_gpu_train.json: {key} names no key of the workflow"
            node = node[part]
