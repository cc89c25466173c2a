"""Handlers that live across iterations: EMA teacher, SUFD discriminator step, ramp-up; and the logging of the
evaluators (progress lines, per-class metric lines) on a tiny evaluator (CPU, tiny, seconds)."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
import torch

from medsemiseg.handlers import (
    DiscriminatorStep,
    EMATeacher,
    MetricsStatsHandler,
    ProgressLogger,
    RampUp,
    add_to_output,
    discriminator_loss,
    ramp_value,
)
from medsemiseg.metrics import MIoU, PerClassIoU
from medsemiseg.networks import FeatureDiscriminator, UNet


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: tiny networks, one thread


def _net() -> UNet:
    return UNet(in_channels=1, out_channels=3, features=(4, 4, 8, 8, 16, 4))


def _distance(a: torch.nn.Module, b: torch.nn.Module) -> float:
    with torch.no_grad():
        return float(sum(((p - q) ** 2).sum() for p, q in zip(a.parameters(), b.parameters())))


def _perturb(net: torch.nn.Module, scale: float = 0.1) -> None:
    with torch.no_grad():
        for p in net.parameters():
            p.add_(scale * torch.randn_like(p))


def test_ema_teacher_is_a_frozen_eval_copy():
    net = _net()
    ema = EMATeacher(net, alpha=0.99)
    assert ema.teacher is not net
    assert not ema.teacher.training
    assert all(not p.requires_grad for p in ema.teacher.parameters())
    assert _distance(ema.teacher, net) == 0.0


def test_ema_moves_toward_student_with_classmix_alpha():
    net = _net()
    ema = EMATeacher(net, alpha=0.99)
    _perturb(net)
    # step 0: alpha = min(1 - 1/1, 0.99) = 0 -> the teacher becomes an exact copy of the student
    ema.update(step=0)
    assert _distance(ema.teacher, net) == pytest.approx(0.0, abs=1e-12)
    # later steps: the distance shrinks by alpha^2 (squared L2) with alpha = min(1 - 1/(step+1), 0.99)
    _perturb(net)
    before = _distance(ema.teacher, net)
    ema.update(step=3)
    after = _distance(ema.teacher, net)
    assert ema.current_alpha(3) == pytest.approx(0.75)
    assert after < before
    assert after == pytest.approx(0.75**2 * before, rel=1e-4)
    assert ema.current_alpha(10_000) == pytest.approx(0.99)


def test_ema_averages_batchnorm_running_stats():
    net = _net()
    ema = EMATeacher(net, alpha=0.99)
    net.train()
    net(torch.rand(2, 1, 32, 32) * 5 + 3)  # changes BN running statistics of the student only
    bn_s = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)][0]
    bn_t = [m for m in ema.teacher.modules() if isinstance(m, torch.nn.BatchNorm2d)][0]
    assert not torch.equal(bn_s.running_mean, bn_t.running_mean)
    ema.update(step=0)
    assert torch.allclose(bn_s.running_mean, bn_t.running_mean)
    assert torch.equal(bn_s.num_batches_tracked, bn_t.num_batches_tracked)


def test_ema_handler_updates_on_iteration_completed_and_round_trips_state():
    net = _net()
    ema = EMATeacher(net, alpha=0.5, true_average_warmup=False)
    _perturb(net)
    before = _distance(ema.teacher, net)
    ema(SimpleNamespace(state=SimpleNamespace(iteration=5)))
    assert _distance(ema.teacher, net) == pytest.approx(0.25 * before, rel=1e-4)
    state = ema.state_dict()
    other = EMATeacher(_net())
    other.load_state_dict(state)
    assert _distance(other.teacher, ema.teacher) == 0.0
    assert other.num_updates == 1
    with pytest.raises(KeyError, match="teacher"):
        other.load_state_dict({"weights": 1})


def test_ramp_values_and_handler():
    assert ramp_value(0, 100) == pytest.approx(torch.exp(torch.tensor(-5.0)).item())
    assert ramp_value(100, 100) == 1.0 and ramp_value(500, 100) == 1.0
    assert 0.0 < ramp_value(50, 100) < 1.0
    assert ramp_value(10, 0) == 1.0
    assert ramp_value(3, 10, start_iter=5) == 0.0
    assert ramp_value(5, 10, shape="linear") == pytest.approx(0.5)
    with pytest.raises(ValueError, match="ramp shape"):
        RampUp(object(), 10, shape="cosine")
    target = SimpleNamespace(unsup_scale=0.0)
    ramp = RampUp(target, rampup_iters=10, final_value=2.0, shape="linear")
    ramp(SimpleNamespace(state=SimpleNamespace(iteration=6)))  # 0-based step 5 -> half way
    assert target.unsup_scale == pytest.approx(1.0)


def _separable_features(n: int = 4, c: int = 8, size: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    f_l = torch.randn(n, c, size, size) * 0.3 + 1.0
    f_u = torch.randn(n, c, size, size) * 0.3 - 1.0
    return f_l, f_u


def test_discriminator_loss_falls_on_separable_inputs():
    disc = FeatureDiscriminator(in_channels=8, base_channels=8, num_layers=2)
    step = DiscriminatorStep(disc, lr=1e-3)
    f_l, f_u = _separable_features()
    first, _ = step.step(f_l, f_u)
    for _ in range(40):
        loss, acc = step.step(f_l, f_u)
    final, acc = discriminator_loss(disc, f_l, f_u)
    assert float(final) < 0.5 * float(first)
    assert float(acc) == 1.0


def test_discriminator_step_handler_reads_method_output_and_logs():
    disc = FeatureDiscriminator(in_channels=8, base_channels=8, num_layers=2)
    step = DiscriminatorStep(disc, lr=1e-3)
    f_l, f_u = _separable_features()
    before = [p.detach().clone() for p in disc.parameters()]
    engine = SimpleNamespace(
        state=SimpleNamespace(iteration=1, method_output={"feat_l": f_l, "feat_u": f_u}, output=[{"loss": 1.0}, {"loss": 1.0}])
    )
    step(engine)
    assert any(not torch.equal(a, b) for a, b in zip(before, disc.parameters()))
    assert all("loss_d" in item and "d_acc" in item for item in engine.state.output)
    # resumable: D and its optimiser
    other = DiscriminatorStep(FeatureDiscriminator(in_channels=8, base_channels=8, num_layers=2), lr=1e-3)
    other.load_state_dict(step.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(other.discriminator.parameters(), disc.parameters()))
    assert other.optimizer.state_dict()["state"].keys() == step.optimizer.state_dict()["state"].keys()
    with pytest.raises(KeyError, match="SUFD"):
        step(SimpleNamespace(state=SimpleNamespace(iteration=2, method_output={}, output={})))


def test_discriminator_step_respects_start_iter():
    disc = FeatureDiscriminator(in_channels=8, base_channels=8, num_layers=2)
    step = DiscriminatorStep(disc, start_iter=3)
    f_l, f_u = _separable_features()
    before = [p.detach().clone() for p in disc.parameters()]
    step(SimpleNamespace(state=SimpleNamespace(iteration=3, method_output={"feat_l": f_l, "feat_u": f_u}, output={})))
    assert all(torch.equal(a, b) for a, b in zip(before, disc.parameters()))


def test_add_to_output_handles_dict_and_decollated_list():
    engine = SimpleNamespace(state=SimpleNamespace(output={"loss": 1}))
    add_to_output(engine, "x", 2)
    assert engine.state.output["x"] == 2
    engine.state.output = [{"a": 1}, {"a": 2}]
    add_to_output(engine, "x", 3)
    assert [d["x"] for d in engine.state.output] == [3, 3]


def test_discriminator_step_keeps_a_layer_the_user_froze():
    disc = FeatureDiscriminator(in_channels=8, base_channels=8, num_layers=2)
    frozen = next(disc.parameters())
    frozen.requires_grad_(False)
    before = frozen.detach().clone()
    step = DiscriminatorStep(disc, lr=1e-2)
    f_l, f_u = _separable_features()
    for _ in range(3):
        step.step(f_l, f_u)
    assert not frozen.requires_grad and torch.equal(frozen, before)
    assert any(p.requires_grad for p in disc.parameters())


# ------------------------------------------------------------------------------------ the evaluators' logging


def _tiny_evaluator(n_images: int, handlers=(), batch_size: int = 1, epoch_length: int | None = None):
    """A MONAI ``SupervisedEvaluator`` over ``n_images`` 8x8 images with 3 classes, mIoU and per-class IoU."""
    from monai.data import DataLoader
    from monai.engines import SupervisedEvaluator

    data = [{"image": torch.rand(1, 8, 8), "label": torch.randint(0, 3, (1, 8, 8))} for _ in range(n_images)]
    return SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=DataLoader(data, batch_size=batch_size, num_workers=0),
        epoch_length=epoch_length,
        network=torch.nn.Conv2d(1, 3, 1),
        key_val_metric={"test_mIoU": MIoU(3)},
        additional_metrics={"test_per_class_iou": PerClassIoU(3)},
        val_handlers=list(handlers),
    )


def _progress_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "medsemiseg.progress"]


def test_progress_logs_a_tenth_of_the_way_and_the_last_image(caplog):
    with caplog.at_level(logging.INFO, logger="medsemiseg.progress"):
        _tiny_evaluator(25, [ProgressLogger("evaluating")]).run()
    # N = 25 iterations of one image: every max(1, 25 // 10) = 2, and the last one
    assert _progress_lines(caplog) == [f"evaluating: {k}/25 images" for k in (*range(2, 25, 2), 25)]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="medsemiseg.progress"):
        _tiny_evaluator(3, [ProgressLogger("inferring")]).run()
    assert _progress_lines(caplog) == ["inferring: 1/3 images", "inferring: 2/3 images", "inferring: 3/3 images"]


def test_progress_counts_images_of_batches_and_iterations_of_a_shorter_epoch(caplog):
    with caplog.at_level(logging.INFO, logger="medsemiseg.progress"):
        _tiny_evaluator(10, [ProgressLogger()], batch_size=4).run()  # batches of 4, 4, 2
    assert _progress_lines(caplog) == [f"evaluating: {k}/10 images" for k in (4, 8, 10)]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="medsemiseg.progress"):
        _tiny_evaluator(10, [ProgressLogger(every=3)], epoch_length=4).run()  # 4 of the loader's 10 iterations
    assert _progress_lines(caplog) == ["evaluating: 3/4 iterations", "evaluating: 4/4 iterations"]
    with pytest.raises(ValueError, match="parts"):
        ProgressLogger(parts=0)


def _run_logged(caplog, handler: MetricsStatsHandler, evaluator) -> list[str]:
    """Messages of a run, the handler's own logger included (MONAI's get_logger does not propagate to the root)."""
    own = logging.getLogger(handler.logger.name)
    own.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO):
            evaluator.run()
    finally:
        own.removeHandler(caplog.handler)
    return [r.getMessage() for r in caplog.records]


def test_metrics_stats_handler_prints_per_class_metrics_by_class_and_no_best_for_one_pass(caplog):
    names = ["bg", "a", "b"]
    stats = MetricsStatsHandler(name="test_evaluate", iteration_log=False, class_names=names, best_metric_log=False)
    ev = _tiny_evaluator(4, [stats])
    lines = _run_logged(caplog, stats, ev)
    iou = ev.state.metrics["test_per_class_iou"]
    assert [ln for ln in lines if ln.startswith("Epoch[1] ") and " -- " in ln] == [
        f"Epoch[1] Metrics -- test_mIoU: {ev.state.metrics['test_mIoU']:.4f}",
        "Epoch[1] test_per_class_iou -- " + " ".join(f"{n}: {float(v):.4f}" for n, v in zip(names, iou)),
    ]
    assert not any("tensor(" in ln or "best" in ln.lower() for ln in lines), lines
    # the "Got new best metric" filter is scoped to that pass: a validation evaluator (same logger) still logs it
    caplog.clear()
    val_stats = MetricsStatsHandler(name="test_validate", iteration_log=False, class_names=names)
    lines = _run_logged(caplog, val_stats, _tiny_evaluator(2, [val_stats]))
    assert any(ln.startswith("Got new best metric of test_mIoU") for ln in lines), lines
    assert any(ln.startswith("Key metric: test_mIoU best value") for ln in lines), lines


def test_metrics_stats_handler_without_class_names_prints_a_list():
    assert MetricsStatsHandler(name="test_list")._format_values(torch.tensor([0.5, float("nan")])) == "[0.5000, nan]"
    named = MetricsStatsHandler(name="test_named", class_names=["bg", "vessel"])
    assert named._format_values(torch.tensor([0.5, 0.25])) == "bg: 0.5000 vessel: 0.2500"
    assert named._format_values(torch.tensor([0.5, 0.25, 1.0])) == "[0.5000, 0.2500, 1.0000]"  # not one per class


def _summary_line(caplog, volumes=None) -> str:
    """RunSummary's closing line of a tiny evaluator, with ``volumes`` put in ``state.per_volume`` before it runs."""
    from ignite.engine import Events

    from medsemiseg.handlers import RunSummary

    evaluator = _tiny_evaluator(4, [])
    if volumes is not None:
        evaluator.add_event_handler(Events.COMPLETED, lambda e: setattr(e.state, "per_volume", volumes))
    RunSummary("evaluating").attach(evaluator)
    with caplog.at_level(logging.INFO, logger="medsemiseg.summary"):
        evaluator.run()
    return [r.getMessage() for r in caplog.records if r.name == "medsemiseg.summary"][-1]


def test_evaluating_closes_on_the_per_volume_mean_dice_when_the_slices_come_from_volumes(caplog):
    line = _summary_line(caplog)
    assert line.startswith("evaluating: 4 2D image(s) in ") and "; test_mIoU 0." in line and "per-volume" not in line
    caplog.clear()
    line = _summary_line(caplog, {"num_volumes": 2, "mean": {"dice": 0.8125, "iou": 0.7, "hd95": 3.0, "asd": 1.0}})
    assert "; per-volume mean Dice 0.8125 over 2 volume(s), foreground classes; 2D test_mIoU 0." in line
    assert line.index("per-volume") < line.index("test_mIoU") and "(per slice, background included)" in line


def _validated_run(monkeypatch, caplog, seconds_per_step: float, seconds_per_image: float, epochs: int = 2) -> list:
    """A 3-iteration-per-epoch trainer validated on 4 images every epoch, on a clock the steps and images advance."""
    from ignite.engine import Engine, Events

    from medsemiseg.handlers import validation

    now = [0.0]
    monkeypatch.setattr(validation, "_clock", lambda: now[0])

    def step(engine, batch):
        now[0] += seconds_per_step

    trainer = Engine(step)
    validator = _tiny_evaluator(4, [])
    validator.add_event_handler(Events.ITERATION_COMPLETED, lambda e: now.__setitem__(0, now[0] + seconds_per_image))
    validation.ValidationEveryAndLastHandler(1, validator).attach(trainer)
    with caplog.at_level(logging.WARNING, logger="medsemiseg.validation"):
        trainer.run(range(3), max_epochs=epochs)
    return [r.getMessage() for r in caplog.records if r.name == "medsemiseg.validation"]


def test_validation_longer_than_the_training_before_it_is_warned_once(monkeypatch, caplog):
    warnings = _validated_run(monkeypatch, caplog, seconds_per_step=1.0, seconds_per_image=2.0)
    assert len(warnings) == 1, warnings  # two validations of 8 s after 3 s of training: said once
    assert warnings[0].startswith("validation of 4 image(s) took 8.0 s, longer than the 3 training iteration(s) "
                                  "before it (3.0 s)")
    assert "(ValidationEveryAndLastHandler.interval, now every 1 epoch(s))" in warnings[0]
    assert "(epoch_length)" in warnings[0] and "--" not in warnings[0]  # the bundle layer writes them as flags
    caplog.clear()
    assert _validated_run(monkeypatch, caplog, seconds_per_step=3.0, seconds_per_image=2.0) == []  # 8 s after 9 s
