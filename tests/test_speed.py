"""The speed settings (``compile``, ``compile_mode``, ``channels_last``, ``amp_dtype``): the training view of the
network, bfloat16 autocast without a scaler, and the cost benchmark's / projection's eager and compiled variants.

The tests that compile (``torch.compile`` with the C++ backend takes minutes on two loaded cores) are marked
``integration``; the rest run the same code paths with ``compile=False`` (the wrapper, channels-last) in seconds.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import pytest
import torch

from medsemiseg.bundle.settings import BundleConfigError
from medsemiseg.engines import SemiSupervisedTrainer
from medsemiseg.bundle.speed import amp_dtype, amp_kwargs, compile_mode, training_network
from medsemiseg.engines.speed import CompiledNetwork, unwrap
from medsemiseg.methods import create_method
from medsemiseg.networks import UNet
from medsemiseg.transforms.views import StrongAugment

K = 3
SIZE = 32
BUNDLES = Path(__file__).resolve().parents[1] / "bundles"

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: tiny networks, one thread


def _net() -> UNet:
    return UNet(in_channels=1, out_channels=K, features=(4, 4, 8, 8, 16, 4))


def _batches(n: int, b: int, labelled: bool, seed: int) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        img = torch.rand(b, 1, SIZE, SIZE, generator=g)
        item = {"image": img}
        if labelled:
            item["label"] = (img * K).long().clamp(max=K - 1)
        out.append(item)
    return out


# ------------------------------------------------------------------------------------------------ settings


def test_amp_dtype_and_compile_mode_settings():
    assert amp_dtype("bfloat16") is torch.bfloat16 and amp_dtype("bf16") is torch.bfloat16
    assert amp_dtype("float16") is torch.float16 and amp_dtype(None) is torch.float16 and amp_dtype("") is torch.float16
    assert amp_kwargs("bfloat16") == {"dtype": torch.bfloat16}
    with pytest.raises(BundleConfigError, match=r"amp_dtype must be float16 or bfloat16, got 'float32'.*--amp_dtype"):
        amp_dtype("float32")
    assert compile_mode("auto", "cuda:0") == "reduce-overhead" and compile_mode(None, "cpu") == "default"
    assert compile_mode("max-autotune", "cpu") == "max-autotune"
    with pytest.raises(BundleConfigError, match=r"compile_mode must be one of .*--compile_mode auto"):
        compile_mode("fast", "cpu")
    with pytest.raises(BundleConfigError, match="compile must be true or false"):
        training_network(_net(), "cpu", compile="maybe")


def test_eager_is_the_default_and_the_network_itself():
    net = _net()
    assert training_network(net, "cpu") is net
    assert training_network(net, "cpu", compile="false", mode="auto", channels_last="false") is net
    assert unwrap(net) is net


# ------------------------------------------------------------------------------------------------ the wrapper


def test_wrapper_keeps_the_networks_state_parameters_and_teacher_copy():
    """What checkpoints, the optimiser, the EMA teacher and SUFD read is the network's own: the same state_dict keys,
    the same Parameter objects in the same order, delegated attributes; a deep copy is a wrapper of a copy.
    ``compile=False`` with channels-last runs the wrapper's whole code path without compiling."""
    net = _net()
    keys = list(net.state_dict())
    params = list(net.parameters())
    wrapped = training_network(net, "cpu", compile=False, channels_last=True)
    assert isinstance(wrapped, CompiledNetwork) and unwrap(wrapped) is net
    assert list(wrapped.state_dict()) == keys  # no "network." prefix: model.pt loads into an eager network
    assert [id(p) for p in wrapped.parameters()] == [id(p) for p in params]  # the optimiser's, unchanged
    assert net.conv_0.conv_0.conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert wrapped.feature_channels == net.feature_channels and wrapped.encoder_channels == net.encoder_channels
    eager = _net()
    eager.load_state_dict(wrapped.state_dict())  # a checkpoint of the wrapper loads into a plain network
    x = torch.rand(2, 1, SIZE, SIZE)
    net.eval(), eager.eval()
    with torch.no_grad():
        torch.testing.assert_close(wrapped(x), eager(x), rtol=1e-5, atol=1e-5)
        feats = wrapped.encode(x)
        torch.testing.assert_close(wrapped.decode(feats, x.shape[2:]), eager(x), rtol=1e-5, atol=1e-5)
    teacher = copy.deepcopy(wrapped)
    assert isinstance(teacher, CompiledNetwork) and teacher.network is not net
    assert all(a is not b and torch.equal(a, b) for a, b in zip(teacher.parameters(), net.parameters()))
    with pytest.raises(TypeError, match="compiled already"):
        CompiledNetwork(wrapped)


def test_methods_train_through_the_wrapper_and_checkpoint_the_plain_keys():
    """SUFD on SupMix (EMA teacher, discriminator, encoder features) trains through the wrapper (channels-last, not
    compiled) like the eager network: the teacher's state has the plain keys, and the same seed gives the same
    weights up to summation order."""
    def train(wrap: bool):
        torch.manual_seed(0)
        net = _net()
        train_net = training_network(net, "cpu", compile=False, channels_last=wrap)
        method = create_method("supmix_sufd", train_net, K, strong_augment=StrongAugment(seed=0), warmup_iters=0)
        opt = torch.optim.SGD(net.parameters(), lr=0.01)
        trainer = SemiSupervisedTrainer(
            device="cpu", max_epochs=1, train_data_loader=_batches(2, 2, True, 0), network=train_net, optimizer=opt,
            method=method, unlabeled_data_loader=_batches(2, 2, False, 1), epoch_length=2, decollate=False)
        trainer.run()
        return net, method

    plain, _ = train(False)
    nhwc, method = train(True)
    assert list(method.checkpoint_objects()["teacher"].state_dict()["teacher"]) == list(plain.state_dict())
    for (name, a), b in zip(plain.state_dict().items(), nhwc.state_dict().values()):
        if a.is_floating_point():
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)


def test_under_ddp_the_compiled_calls_run_inside_ddp(tmp_path):
    """``torchrun``: the DDP network stays what the trainer calls (and what is checkpointed); its passes with
    autograd go through DDP to the compiled view of the network it wraps (PyTorch's advice: compile the inner
    module), here in a one-process gloo group with ``compile=False`` (the routing, in seconds)."""
    import torch.distributed as dist

    from medsemiseg.distributed import DistributedNetwork

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        net = _net()
        ddp = DistributedNetwork(net)
        assert training_network(ddp, "cpu", compile=False, channels_last=True) is ddp
        inner = ddp.module.__dict__["_compiled"]
        assert isinstance(inner, CompiledNetwork) and inner.network is net and callable(ddp.begin_step)
        calls = []
        real = inner._call
        inner._call = lambda name, *a, **k: (calls.append(name), real(name, *a, **k))[1]
        x = torch.rand(2, 1, SIZE, SIZE)
        feats = ddp.encode(x)
        ddp.decode(feats, x.shape[2:]).sum().backward()
        assert calls == ["encode", "decode"] and net.conv_0.conv_0.conv.weight.grad is not None
        assert list(ddp.state_dict()) == list(_net().state_dict())
    finally:
        dist.destroy_process_group()


# ------------------------------------------------------------------------------------------------ bfloat16 AMP


def test_bfloat16_amp_autocasts_on_the_cpu_without_a_scaler():
    """``amp_dtype`` bfloat16: autocast (here the CPU's), no GradScaler created, the optimiser steps directly."""
    from monai.engines.utils import IterationEvents

    net = _net()
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    trainer = SemiSupervisedTrainer(
        device="cpu", max_epochs=1, train_data_loader=_batches(2, 2, True, 0), network=net, optimizer=opt,
        method=create_method("supervised", net, K), epoch_length=2, amp=True, amp_dtype="bfloat16", decollate=False)
    preds, steps = [], []
    trainer.add_event_handler(IterationEvents.FORWARD_COMPLETED, lambda e: preds.append(e.state.output["pred"].dtype))
    step = opt.step
    opt.step = lambda *a, **k: (steps.append(1), step(*a, **k))[1]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "amp needs CUDA" warning: bfloat16 runs on the CPU
        trainer.run()
    assert trainer.scaler is None and trainer.amp_bf16
    assert preds == [torch.bfloat16] * 2 and len(steps) == 2
    assert torch.isfinite(trainer.state.output["loss"]) and trainer.state.output["loss"].dtype == torch.float32


def test_bundles_pass_the_speed_settings_to_the_trainer_and_evaluators():
    from monai.bundle import ConfigParser

    for task in ("covid", "chase"):
        parser = ConfigParser()
        parser.read_config(str(BUNDLES / task / "configs" / "train.json"))
        cfg = parser.config
        assert (cfg["compile"], cfg["channels_last"], cfg["amp_dtype"], cfg["compile_mode"]) == (
            False, False, "float16", "auto")  # eager, as before, unless asked
        assert cfg["train"]["trainer"]["network"] == "@train_network"
        assert "@train_network" in cfg["train"]["method"]
        assert cfg["train"]["checkpointer"]["save_dict"].startswith("$dict(model=@network,")  # the plain keys
        for section in ("train#trainer", "validate#evaluator", "evaluate#evaluator", "infer#evaluator"):
            assert parser[section + "#amp_kwargs"] == "$medsemiseg.bundle.speed.amp_kwargs(@amp_dtype)", section
        parser.update({"network_def": "$torch.nn.Conv2d(1, 2, 3)", "device": "$torch.device('cpu')",
                       "compile": "true"})
        assert isinstance(parser.get_parsed_content("train_network"), CompiledNetwork)
        parser.update({"compile": False})
        assert parser.get_parsed_content("train_network", lazy=False) is parser.get_parsed_content("network")


# ------------------------------------------------------------------------------------------------ cost / projection


def _row(method: str, variant: str, s: float, **extra) -> dict:
    return {"method": method, "variant": variant, "s_per_iter": s, "s_per_iter_q1": s, "s_per_iter_q3": s,
            "peak_mem_mb": 10.0, "flops_per_iter": 1e9, "flops_floor": 1e9, "measured_over_floor": 1.0,
            "floor_passes": "3F", "time_x_supervised": 1.0, "mem_x_supervised": 1.0, "flops_x_supervised": 1.0,
            **extra}


def test_cost_table_shows_eager_and_compiled_side_by_side():
    from medsemiseg.benchmark.cost import cost_table

    report = {"settings": {"task": "covid", "network": "unet", "image_size": 32, "batch_size": 2,
                           "unlabeled_batch_size": 2, "device": "cuda", "amp": True, "amp_dtype": "bfloat16",
                           "iters": 2, "warmup": 1},
              "machine": "m", "date": "d", "variants": ["eager", "compiled"],
              "results": [_row("supervised", "eager", 0.2),
                          _row("supervised", "compiled", 0.05, x_eager=0.25, compile_s=41.0,
                               compile_mode="reduce-overhead")]}
    md = cost_table(report)
    assert "cuda + AMP bfloat16" in md and "mode 'reduce-overhead'" in md
    assert "| supervised | eager | 0.200 (0.200–0.200) | 1.00 | – |" in md
    assert "| supervised | compiled | 0.050 (0.050–0.050) | 0.25 | 41.0 |" in md


def test_projection_uses_the_variant_asked_for(tmp_path):
    from medsemiseg.benchmark.projection import _step_times

    report = {"results": [_row("supervised", "eager", 0.2), _row("supervised", "compiled", 0.05),
                          {"method": "fixmatch", "s_per_iter": 0.4}]}  # a row of before the variants: eager
    assert _step_times(report) == {"supervised": 0.2, "fixmatch": 0.4}
    assert _step_times(report, "compiled") == {"supervised": 0.05}


def test_cost_cli_checks_the_speed_options(capsys):
    from medsemiseg.benchmark.cost import main as cost_main

    with pytest.raises(SystemExit):
        cost_main(["--methods", "supervised", "--amp"])  # float16 autocast on the CPU
    assert "--amp-dtype bfloat16" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cost_main(["--methods", "supervised", "--compile-mode", "fast"])
    assert "compile-mode must be one of" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ compiled bundles

#: the cost benchmark's default step (64 px, batch 4 + 4): a covid run shares its compiled graphs (Inductor's cache)
TINY = {"image_size": [64, 64], "batch_size": 4, "unlabeled_batch_size": 4, "epoch_length": 2, "val_interval": 1}

#: eager vs compiled, 4 steps (2 epochs of 2) of SGD with momentum 0.9, lr 1e-3 (TRAIN_SGD): compiled kernels sum
#: in another order (fused reductions, BatchNorm statistics in one pass), so each gradient differs from eager's in its
#: last float32 bits, a weight then by about lr x that, and a BatchNorm statistic by a few float32 ulps. Measured on
#: covid (AMD EPYC, torch 2.13): 2.4e-7 at most (a running_var), logits 1.0e-7 apart. ATOL / RTOL leave a factor 40
#: for other CPUs' kernels and stay far below what a wrong step would give: the test also checks that epoch 2 moved
#: the weights by more than 2 x ATOL. The bundles' AdamW is not used for the comparison: its first steps are
#: lr x sign(gradient), so a weight whose gradient is rounding noise (the convolution biases BatchNorm cancels) steps
#: +-lr either way; measured with AdamW, eager and compiled ended up to 2.7e-3 apart in such biases and 1.8e-3 in
#: weights after 4 steps, as far as the steps themselves go (and the resumed compiled run was bit-identical).
TRAIN_SGD = {"train#optimizer#_target_": "torch.optim.SGD", "train#optimizer#momentum": 0.9}
ATOL = 1e-5
RTOL = 1e-4
#: the two trained networks' logits on a fixed batch (eval mode): the same function (measured 1.0e-7 apart)
LOGITS_TOL = 1e-5


def _workflow(task: str, **overrides):
    from monai.bundle import ConfigWorkflow

    wf = ConfigWorkflow(config_file=str(BUNDLES / task / "configs" / "train.json"),
                        meta_file=str(BUNDLES / task / "configs" / "metadata.json"), logging_file=False,
                        run_id="training", workflow_type=None, bundle_root=str(BUNDLES / task), **overrides)
    wf.initialize()
    return wf


def _final(out) -> dict:
    return torch.load(out / "models" / "checkpoint_epoch=2.pt", weights_only=True)


@pytest.mark.integration
@pytest.mark.parametrize("task, method", [("covid", "supervised"), ("chase", "supervised"), ("covid", "supmix_sufd")])
def test_compiled_bundle_matches_eager_and_resumes_bit_for_bit(task, method, tmp_path):
    """The bundle with ``--compile true`` on the CPU (SGD, TRAIN_SGD): after 2 epochs of 2 iterations every weight and
    BatchNorm statistic (model and EMA teacher) is within ATOL / RTOL of the eager run from the same seed and the two
    networks' logits on a fixed batch within LOGITS_TOL; a compiled run stopped after its epoch-1
    checkpoint and resumed (fresh workflow, fresh compiled network) ends bit-identical to the uninterrupted one.
    Minutes each on two loaded cores (compiling); ``covid-supervised`` shares the cost benchmark's compiled graphs."""
    from ignite.engine import Events

    ov = {**TINY, **TRAIN_SGD, "cache_dir": str(tmp_path / "cache"), "method": method, "max_epochs": 2}
    _workflow(task, **ov, output_dir=str(tmp_path / "E")).run()
    wf = _workflow(task, **ov, output_dir=str(tmp_path / "U"), compile=True)
    assert isinstance(wf.parser.get_parsed_content("train#trainer").network, CompiledNetwork)
    wf.run()
    killed = _workflow(task, **ov, output_dir=str(tmp_path / "I"), compile=True)
    killed.parser.get_parsed_content("train#trainer").add_event_handler(Events.EPOCH_COMPLETED, lambda e: e.terminate())
    killed.run()
    _workflow(task, **ov, output_dir=str(tmp_path / "I"), compile=True, resume=True).run()

    eager, compiled, resumed = _final(tmp_path / "E"), _final(tmp_path / "U"), _final(tmp_path / "I")
    first = torch.load(tmp_path / "E" / "models" / "checkpoint_epoch=1.pt", weights_only=True)
    keys = ["model"] + (["teacher"] if "teacher" in eager else [])
    assert keys == (["model", "teacher"] if method == "supmix_sufd" else ["model"])
    network = wf.parser.get_parsed_content("network")
    assert isinstance(wf.parser.get_parsed_content("train#optimizer"), torch.optim.SGD)
    moved, far = 0.0, []
    for key in keys:
        states = [s[key] if key == "model" else s[key]["teacher"] for s in (eager, compiled, resumed)]
        for name, t in states[0].items():
            c, r = states[1][name], states[2][name]
            assert torch.equal(c, r), f"{key}.{name}: the resumed compiled run differs from the uninterrupted one"
            if not t.is_floating_point():
                assert torch.equal(c, t), f"{key}.{name}"
                continue
            if not torch.allclose(c, t, rtol=RTOL, atol=ATOL):
                far.append(f"{key}.{name} (max |compiled - eager| {float((c - t).abs().max()):.3g})")
            if key == "model" and "running_" not in name:  # a weight, not a BatchNorm statistic
                moved = max(moved, float((t - first[key][name]).abs().max()))
    assert not far, f"compiled vs eager beyond atol {ATOL:g} / rtol {RTOL:g}: " + "; ".join(far)
    # the trained networks compute the same function (eval mode, a fixed batch)
    x = torch.rand(2, network.in_channels, *TINY["image_size"], generator=torch.Generator().manual_seed(0))
    outs = []
    for state in (eager["model"], compiled["model"]):
        network.load_state_dict(state)
        network.eval()
        with torch.no_grad():
            outs.append(network(x.to(next(network.parameters()).device)))
    torch.testing.assert_close(outs[1], outs[0], rtol=LOGITS_TOL, atol=LOGITS_TOL)
    assert moved > 2 * ATOL  # epoch 2 changed the weights by more than the tolerance


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [None, "float16", "bfloat16"])
def test_compiled_cuda_graphs_channels_last_train_every_precision(dtype):
    """On CUDA: ``compile_mode`` auto (reduce-overhead: CUDA graphs), channels-last, and fp32 / float16 (scaler) /
    bfloat16 (no scaler) autocast train SupMix + SUFD (student encode / decode / forward, EMA teacher, discriminator)
    for 4 iterations with finite weights, the teacher compiled alike, float32 close to eager."""
    def train(compiled: bool):
        torch.manual_seed(0)
        net = _net().cuda()
        train_net = training_network(net, "cuda", compile=compiled, mode="auto", channels_last=compiled)
        method = create_method("supmix_sufd", train_net, K, strong_augment=StrongAugment(seed=0), warmup_iters=0)
        batches = [{k: v.cuda() for k, v in b.items()} for b in _batches(2, 2, True, 0)]
        unl = [{k: v.cuda() for k, v in b.items()} for b in _batches(2, 2, False, 1)]
        trainer = SemiSupervisedTrainer(
            device="cuda", max_epochs=1, train_data_loader=batches, network=train_net,
            optimizer=torch.optim.SGD(net.parameters(), lr=0.01), method=method, unlabeled_data_loader=unl,
            epoch_length=4, amp=dtype is not None, amp_dtype=dtype, decollate=False)
        trainer.run()
        return net, method, trainer

    net, method, trainer = train(True)
    assert isinstance(method.checkpoint_objects()["teacher"].teacher, CompiledNetwork)
    assert (trainer.scaler is None) == (dtype != "float16")
    assert all(torch.isfinite(t).all() for t in net.state_dict().values() if t.is_floating_point())
    if dtype is None:
        eager, _, _ = train(False)
        for name, t in eager.state_dict().items():
            if t.is_floating_point():
                torch.testing.assert_close(net.state_dict()[name], t, rtol=RTOL, atol=ATOL, msg=name)
