"""SemiSupervisedTrainer with stock MONAI handlers (CPU, 32x32 images, a few iterations each)."""

from __future__ import annotations

import io
import logging
import warnings

import pytest
import torch
from ignite.engine import Events
from monai.data import DataLoader, Dataset
from monai.engines import SupervisedEvaluator, SupervisedTrainer
from monai.handlers import (
    CheckpointLoader,
    CheckpointSaver,
    LrScheduleHandler,
    MeanDice,
    StatsHandler,
    TensorBoardStatsHandler,
    ValidationHandler,
    from_engine,
)
from monai.transforms import AsDiscreted

from medsemiseg.engines import NonFiniteLossError, SemiSupervisedTrainer, from_engine_scalars
from medsemiseg.methods import Supervised, create_method
from medsemiseg.networks import UNet
from medsemiseg.transforms.views import StrongAugment

K = 3
SIZE = 32


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: tiny networks, one thread


def _net() -> UNet:
    return UNet(in_channels=1, out_channels=K, features=(4, 4, 8, 8, 16, 4))


def _labeled_items(n: int) -> list[dict]:
    items = []
    for i in range(n):
        label = torch.zeros(1, SIZE, SIZE)
        label[0, 4 + i : 14 + i, 6:16] = 1
        label[0, 18:26, 18 + i % 4 : 28] = 2
        image = 0.2 + 0.3 * label + 0.05 * torch.rand(1, SIZE, SIZE)
        items.append({"image": image, "label": label, "idx": torch.tensor(i)})
    return items


def _unlabeled_items(n: int) -> list[dict]:
    return [{"image": torch.rand(1, SIZE, SIZE), "idx": torch.tensor(100 + i)} for i in range(n)]


def _loaders(n_l=3, n_u=4, bl=1, bu=2):
    lab = DataLoader(Dataset(_labeled_items(n_l)), batch_size=bl, shuffle=True)
    unl = DataLoader(Dataset(_unlabeled_items(n_u)), batch_size=bu, shuffle=True)
    return lab, unl


class _Recorder(Supervised):
    """Supervised step that records which labelled and unlabelled items it saw."""

    requires_unlabeled = True

    def __init__(self):
        super().__init__(K)
        self.seen_l: list[list[int]] = []
        self.seen_u: list[list[int]] = []

    def __call__(self, engine, labeled, unlabeled):
        out = super().__call__(engine, labeled, unlabeled)
        self.seen_u.append(unlabeled["idx"].tolist())
        self.seen_l.append(engine.state.batch["idx"].tolist())
        return out


def test_is_a_monai_supervised_trainer_and_cycles_both_loaders_independently():
    lab, unl = _loaders(n_l=3, n_u=4, bl=1, bu=2)  # 3 labelled batches, 2 unlabelled batches
    net = _net()
    method = _Recorder()
    trainer = SemiSupervisedTrainer(
        device="cpu", max_epochs=2, train_data_loader=lab, network=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.01), method=method,
        unlabeled_data_loader=unl, epoch_length=7,  # larger than both loaders
    )
    assert isinstance(trainer, SupervisedTrainer)
    trainer.run()
    assert trainer.state.iteration == 14
    assert len(method.seen_l) == 14 and len(method.seen_u) == 14
    # the unlabelled loader: every consecutive pair of batches is one full pass over its 4 items
    for p in range(7):
        ids = sorted(method.seen_u[2 * p] + method.seen_u[2 * p + 1])
        assert ids == [100, 101, 102, 103]
    # the labelled loader restarted inside the epoch (ignite) and kept cycling: every item seen >= 4 times
    flat = [i for b in method.seen_l for i in b]
    assert all(flat.count(i) >= 4 for i in range(3))
    assert trainer._unlabeled_passes == 7


def test_output_has_every_term_and_method_output_keeps_whole_batches():
    lab, unl = _loaders(n_l=2, n_u=3, bl=2, bu=3)
    net = _net()
    method = create_method("supmix_sufd", net, K, strong_augment=StrongAugment(seed=0))
    trainer = SemiSupervisedTrainer(
        device="cpu", max_epochs=1, train_data_loader=lab, network=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.01), method=method,
        unlabeled_data_loader=unl, epoch_length=2, decollate=False,
    )
    trainer.run()
    out = trainer.state.output
    for key in ("image", "label", "pred", "loss", "loss_sup", "loss_unsup", "loss_adv", "mask_ratio", "loss_d", "d_acc"):
        assert key in out, key
    assert out["pred"].shape == (2, K, SIZE, SIZE)
    assert out["loss_sup"].requires_grad is False
    mo = trainer.state.method_output
    assert mo["feat_l"].shape[0] == 2 and mo["feat_u"].shape[0] == 3  # different batch sizes survive
    assert "feat_u" not in out
    scalars = from_engine_scalars(out)
    assert {"loss", "loss_sup", "loss_unsup", "loss_adv", "loss_d"} <= set(scalars)
    assert all(isinstance(v, float) for v in scalars.values())


def test_stock_logging_and_lr_handlers_work_unchanged(tmp_path):
    lab, unl = _loaders()
    net = _net()
    method = create_method("fixmatch", net, K, strong_augment=StrongAugment(seed=0))
    stream = io.StringIO()
    logger = logging.getLogger("ssl_train")
    logger.setLevel(logging.INFO)
    sink = logging.StreamHandler(stream)
    logger.addHandler(sink)
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    handlers = [
        StatsHandler(name="ssl_train", output_transform=from_engine_scalars),
        TensorBoardStatsHandler(log_dir=str(tmp_path), output_transform=from_engine_scalars),
        LrScheduleHandler(torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5), epoch_level=False),
    ]
    trainer = SemiSupervisedTrainer(
        device="cpu", max_epochs=1, train_data_loader=lab, network=net, optimizer=opt, method=method,
        unlabeled_data_loader=unl, epoch_length=2, train_handlers=handlers,
    )
    try:
        trainer.run()
    finally:
        logger.removeHandler(sink)
    text = stream.getvalue()
    assert "loss_sup" in text and "loss_unsup" in text and "mask_ratio" in text
    assert list(tmp_path.glob("events.out.tfevents.*"))
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0025)


def test_checkpoint_round_trip_includes_teacher_and_discriminator(tmp_path):
    lab, unl = _loaders()
    net = _net()
    method = create_method("supmix_sufd", net, K, strong_augment=StrongAugment(seed=0))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    trainer = SemiSupervisedTrainer(
        device="cpu", max_epochs=1, train_data_loader=lab, network=net, optimizer=opt, method=method,
        unlabeled_data_loader=unl, epoch_length=3,
    )
    save_dict = {"network": net, "optimizer": opt, "trainer": trainer, **method.checkpoint_objects()}
    assert {"teacher", "sufd"} <= set(save_dict)
    CheckpointSaver(save_dir=str(tmp_path), save_dict=save_dict, save_final=True, final_filename="final.pt").attach(trainer)
    trainer.run()
    ckpt = tmp_path / "final.pt"
    assert ckpt.exists()

    net2 = _net()
    method2 = create_method("supmix_sufd", net2, K, strong_augment=StrongAugment(seed=0))
    opt2 = torch.optim.Adam(net2.parameters(), lr=1e-3)
    trainer2 = SemiSupervisedTrainer(
        device="cpu", max_epochs=2, train_data_loader=lab, network=net2, optimizer=opt2, method=method2,
        unlabeled_data_loader=unl, epoch_length=3,
    )
    load_dict = {"network": net2, "optimizer": opt2, "trainer": trainer2, **method2.checkpoint_objects()}
    CheckpointLoader(load_path=str(ckpt), load_dict=load_dict, map_location="cpu")(trainer2)
    same = lambda a, b: all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    assert same(net, net2)
    assert same(method.base.teacher, method2.base.teacher)
    assert same(method.discriminator, method2.discriminator)
    assert method2.discriminator_step.optimizer.state_dict()["state"]  # Adam moments restored
    assert trainer2.state.iteration == 3 and trainer2.state.epoch == 1
    trainer2.run()  # resumes: runs only the second epoch
    assert trainer2.state.iteration == 6


def test_validation_handler_with_supervised_evaluator():
    lab, unl = _loaders()
    net = _net()
    val = DataLoader(Dataset(_labeled_items(2)), batch_size=1)
    post = AsDiscreted(keys=["pred", "label"], argmax=(True, False), to_onehot=K)
    evaluator = SupervisedEvaluator(
        device="cpu", val_data_loader=val, network=net, postprocessing=post,
        key_val_metric={"val_mean_dice": MeanDice(include_background=False, output_transform=from_engine(["pred", "label"]))},
    )
    method = create_method("classmix", net, K, strong_augment=StrongAugment(seed=0))
    trainer = SemiSupervisedTrainer(
        device="cpu", max_epochs=2, train_data_loader=lab, network=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.01), method=method, unlabeled_data_loader=unl,
        epoch_length=2, train_handlers=[ValidationHandler(validator=evaluator, interval=1, epoch_level=True)],
    )
    trainer.run()
    assert evaluator.state.epoch == 2
    assert "val_mean_dice" in evaluator.state.metrics
    assert 0.0 <= evaluator.state.metrics["val_mean_dice"] <= 1.0


class _NaNMethod(Supervised):
    def __call__(self, engine, labeled, unlabeled):
        out = super().__call__(engine, labeled, unlabeled)
        bad = out["loss_sup"] * float("nan")
        out.update(loss=out["loss_sup"] + bad, loss_bad=bad)
        return out


def test_nan_loss_stops_with_a_clear_error_before_any_update(tmp_path):
    lab, _ = _loaders()
    net = _net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    trainer = SemiSupervisedTrainer(
        device="cpu", max_epochs=1, train_data_loader=lab, network=net, optimizer=opt, method=_NaNMethod(K),
        epoch_length=2,
    )
    CheckpointSaver(save_dir=str(tmp_path), save_dict={"network": net}, save_interval=1, epoch_level=False).attach(trainer)
    with pytest.raises(NonFiniteLossError, match=r"iteration 1 .*loss_bad=nan"):
        trainer.run()
    assert not list(tmp_path.glob("*.pt"))  # no checkpoint written from the broken iteration
    for k, v in net.state_dict().items():
        if v.dtype.is_floating_point and "running" not in k:
            assert torch.equal(v, before[k]), k


def test_bad_configurations_raise_clear_errors():
    lab, unl = _loaders()
    net = _net()
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    method = create_method("classmix", net, K, strong_augment=StrongAugment(seed=0))
    with pytest.raises(ValueError, match="unlabeled_data_loader is None"):
        SemiSupervisedTrainer(device="cpu", max_epochs=1, train_data_loader=lab, network=net, optimizer=opt, method=method)
    empty = DataLoader(Dataset(_unlabeled_items(1)), batch_size=2, drop_last=True)
    with pytest.raises(ValueError, match="empty"):
        SemiSupervisedTrainer(
            device="cpu", max_epochs=1, train_data_loader=lab, network=net, optimizer=opt, method=method,
            unlabeled_data_loader=empty,
        )
    with pytest.raises(TypeError, match="method"):
        SemiSupervisedTrainer(device="cpu", max_epochs=1, train_data_loader=lab, network=net, optimizer=opt, method=None)


def test_amp_on_cpu_warns_and_trains_in_float32():
    lab, _ = _loaders()
    net = _net()
    trainer = SemiSupervisedTrainer(
        device="cpu", max_epochs=1, train_data_loader=lab, network=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.01), method=Supervised(K), epoch_length=1, amp=True,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.run()
    assert any("amp=True needs a CUDA device" in str(w.message) for w in caught)
    assert torch.isfinite(torch.as_tensor(trainer.state.output[0]["loss"]))


@pytest.mark.parametrize("name", ["supervised", "classmix", "fixmatch", "unimatch", "supmix", "sufd", "supmix_sufd"])
def test_amp_path_of_every_method_with_cpu_autocast_standing_in_for_cuda(name, monkeypatch):
    """The trainer's amp branch (autocast + GradScaler) run on CPU: the trainer's ``torch.autocast("cuda")`` becomes
    CPU bfloat16 autocast and MONAI's (here disabled) CUDA GradScaler an enabled CPU one. Checks what would break or
    silently degrade on a GPU: the network runs in half precision, the loss is float32 and finite, the student
    optimiser steps only through the scaler (once per iteration), and the SUFD discriminator's own step runs outside
    autocast in float32 (it needs no scaler)."""
    import medsemiseg.engines.trainer as trainer_module
    from monai.engines.utils import IterationEvents

    real_autocast = torch.autocast

    def cpu_autocast(device_type, *args, **kwargs):
        if device_type == "cuda":
            return real_autocast("cpu", *args, **{"dtype": torch.bfloat16, **kwargs})
        return real_autocast(device_type, *args, **kwargs)

    monkeypatch.setattr(torch, "autocast", cpu_autocast)
    monkeypatch.setattr(trainer_module.SemiSupervisedTrainer, "_use_amp", lambda self, engine: True)
    lab, unl = _loaders(n_l=4, n_u=4, bl=2, bu=2)
    net = _net()
    kw = {} if name == "supervised" else {"strong_augment": StrongAugment(seed=0)}
    method = create_method(name, net, K, **kw)
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    trainer = SemiSupervisedTrainer(
        device="cpu", max_epochs=1, train_data_loader=lab, network=net, optimizer=opt, method=method,
        unlabeled_data_loader=None if name == "supervised" else unl, epoch_length=3, amp=True,
    )
    seen: dict = {"steps": [], "loss": [], "pred": [], "d": []}

    @trainer.on(Events.STARTED)
    def _enabled_scaler(engine):  # after MONAI's Trainer.run() built its own
        engine.scaler = torch.amp.GradScaler("cpu")
        step = engine.scaler.step
        engine.scaler.step = lambda o, *a, **k: (seen["steps"].append(o), step(o, *a, **k))[1]

    @trainer.on(IterationEvents.LOSS_COMPLETED)
    def _dtypes(engine):
        seen["loss"].append(engine.state.output["loss"])
        seen["pred"].append(engine.state.output["pred"].dtype)

    disc_step = getattr(method, "discriminator_step", None)
    if disc_step is not None:
        def cpu_autocast_on() -> bool:
            try:
                return torch.is_autocast_enabled("cpu")
            except TypeError:  # torch < 2.4
                return torch.is_autocast_cpu_enabled()

        disc_step.discriminator.register_forward_hook(
            lambda m, inp, out: seen["d"].append((cpu_autocast_on(), inp[0].dtype, out.dtype)))
    opt_step = opt.step
    direct = []
    monkeypatch.setattr(opt, "step", lambda *a, **k: (direct.append(1), opt_step(*a, **k))[1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.run()
    assert seen["pred"] == [torch.bfloat16] * 3  # autocast was on
    assert all(loss.dtype == torch.float32 and torch.isfinite(loss) for loss in seen["loss"])
    assert seen["steps"] == [opt] * 3 and len(direct) == 3  # every student step through the scaler
    if disc_step is not None:
        # per iteration: the adversarial term (D frozen, inside autocast), then D's own step on l and u features
        d_own = [d for d in seen["d"] if not d[0]]
        assert len(d_own) == 6 and all(d == (False, torch.float32, torch.float32) for d in d_own)
        assert len([d for d in seen["d"] if d[0]]) == 3


@pytest.mark.gpu
def test_amp_on_cuda_trains_every_method():
    from medsemiseg.methods import method_names

    for name in method_names():
        lab, unl = _loaders()
        net = _net().cuda()
        method = create_method(name, net, K) if name == "supervised" else create_method(name, net, K, strong_augment=StrongAugment(seed=0))
        trainer = SemiSupervisedTrainer(
            device="cuda", max_epochs=1, train_data_loader=lab, network=net,
            optimizer=torch.optim.SGD(net.parameters(), lr=0.01), method=method,
            unlabeled_data_loader=None if name == "supervised" else unl, epoch_length=3, amp=True,
        )
        trainer.run()
        assert torch.isfinite(torch.as_tensor(trainer.state.output[0]["loss"])), name


def test_non_finite_weights_stop_training_before_checkpoints_and_teacher_updates(tmp_path):
    # a finite loss can still leave non-finite weights behind (lr 1e6: BatchNorm running_var overflows to inf while
    # the loss is 1e20); the step that does it must stop training before any handler saves or averages the model
    lab, unl = _loaders()
    net = _net()
    bad_name = next(n for n, _ in net.named_buffers() if n.endswith("running_var"))
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    step = opt.step
    calls = {"n": 0}

    def poisoned_step(*args, **kwargs):
        out = step(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 3:
            dict(net.named_buffers())[bad_name].fill_(float("inf"))
        return out

    opt.step = poisoned_step
    method = create_method("classmix", net, K, strong_augment=StrongAugment(seed=0))
    trainer = SemiSupervisedTrainer(
        device="cpu", max_epochs=2, train_data_loader=lab, network=net, optimizer=opt, method=method,
        unlabeled_data_loader=unl, epoch_length=2,
    )
    saved, completed = [], []
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: saved.append(e.state.epoch))  # checkpoint-like
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: completed.append(e.state.iteration))
    CheckpointSaver(save_dir=str(tmp_path), save_dict={"network": net}, save_interval=1, epoch_level=True).attach(trainer)
    with pytest.raises(NonFiniteLossError, match=rf"{bad_name}.*iteration 3 .*no checkpoint.*learning rate") as err:
        trainer.run()
    assert "amp" in str(err.value)
    assert saved == [1] and completed == [1, 2]  # epoch 1 was fine; iteration 3 stopped before any handler
    assert sorted(p.name for p in tmp_path.glob("*.pt")) == ["network_epoch=1.pt"]
    assert torch.isfinite(method.ema.teacher.state_dict()[bad_name]).all()  # the teacher never saw it


def test_finite_weights_check_passes_for_healthy_training_and_frozen_int_buffers():
    lab, _ = _loaders()
    net = _net()
    # huge but finite values whose sum overflows float32 (the check's cheap path) are not reported, nor are other
    # dtypes; integer buffers (num_batches_tracked) are skipped
    net.register_buffer("big", torch.full((4,), 3e38))
    net.register_buffer("big_fp16", torch.full((8,), 6e4, dtype=torch.float16))
    net.register_buffer("ones_fp64", torch.ones(3, dtype=torch.float64))
    trainer = SemiSupervisedTrainer(
        device="cpu", max_epochs=1, train_data_loader=lab, network=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.01), method=Supervised(K), epoch_length=3,
    )
    trainer.run()
    assert trainer.state.iteration == 3


@pytest.mark.parametrize(
    "key, value", [("epoch_length", 0), ("epoch_length", -3), ("epoch_length", 2.5), ("max_epochs", 0), ("max_epochs", -1)]
)
def test_schedule_without_iterations_is_refused_naming_the_argument(key, value):
    # --epoch_length 0 used to "train" zero iterations and report success with no model written; the engine names
    # its own argument (the bundle CLI shows it as the flag: tests/test_bundle_flags.py)
    lab, _ = _loaders()
    net = _net()
    kwargs = {"max_epochs": 1, "epoch_length": 2, key: value}
    with pytest.raises(ValueError, match=rf"^SemiSupervisedTrainer: {key}={value} must be a whole number >= 1; ") as err:
        SemiSupervisedTrainer(
            device="cpu", train_data_loader=lab, network=net, optimizer=torch.optim.SGD(net.parameters(), lr=0.01),
            method=Supervised(K), **kwargs,
        )
    assert "--" not in str(err.value)  # no bundle flag: the engine is used from Python too


def test_split_smaller_than_its_batch_size_is_logged_naming_the_loader_argument(caplog):
    # 2 labelled images with batch_size 4 used to train on batches of 2 without a word
    net = _net()
    caplog.set_level(logging.INFO, logger="medsemiseg.engines.trainer")

    def build(lab, unl):
        caplog.clear()
        SemiSupervisedTrainer(
            device="cpu", max_epochs=1, train_data_loader=lab, network=net,
            optimizer=torch.optim.SGD(net.parameters(), lr=0.01), method=Supervised(K), unlabeled_data_loader=unl,
        )
        return caplog.text

    text = build(*_loaders(n_l=2, n_u=4, bl=4, bu=2))
    assert "labelled split has 2 image(s), fewer than its batch size 4 (train_data_loader.batch_size)" in text
    assert "unlabelled split" not in text
    text = build(*_loaders(n_l=3, n_u=4, bl=1, bu=8))
    assert "unlabelled split has 4 image(s), fewer than its batch size 8 (unlabeled_data_loader.batch_size)" in text
    assert "split has" not in build(*_loaders(n_l=4, n_u=4, bl=4, bu=4))  # exactly one full batch each
