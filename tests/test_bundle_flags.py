"""The engine's errors name its own arguments; a user of `python -m monai.bundle run` sees the bundle's flags instead
(medsemiseg.bundle.flags, installed by the bundles' failure report)."""

from __future__ import annotations

import inspect
import json
import logging
import sys
from pathlib import Path

import pytest
import torch
from monai.data import DataLoader, Dataset

from medsemiseg import cli_errors
from medsemiseg.bundle import flags
from medsemiseg.bundle.cli import install_failure_report
from medsemiseg.bundle.settings import BundleConfigError
from medsemiseg.engines import SemiSupervisedTrainer
from medsemiseg.handlers import ValidationEveryAndLastHandler
from medsemiseg.methods import create_method
from medsemiseg.networks import UNet

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = json.loads((REPO / "bundles" / "workflow.template.json").read_text())


def test_each_engine_argument_is_set_by_its_bundle_key():
    # the mapping is true of the shared workflow: the key is a bundle key, and the trainer's argument reads it
    trainer, train = TEMPLATE["train"]["trainer"], TEMPLATE["train"]
    assert trainer["_target_"].endswith("SemiSupervisedTrainer")
    wiring = {
        "max_epochs": trainer["max_epochs"],
        "epoch_length": trainer["epoch_length"],
        "train_data_loader.batch_size": train["dataloader"]["batch_size"],
        "unlabeled_data_loader.batch_size": train["unlabeled_dataloader"]["batch_size"],
        "the optimizer's lr": train["optimizer"]["lr"],
        "amp": trainer["amp"],
        "amp_dtype": trainer["amp_kwargs"],  # the engine reads amp_kwargs' dtype as it reads amp_dtype
        "ValidationEveryAndLastHandler.interval": next(
            h["interval"] for h in train["handlers"] if h["_target_"].endswith(".ValidationEveryAndLastHandler")
        ),
    }
    assert set(wiring) == set(flags.ENGINE_TO_BUNDLE)
    params = inspect.signature(SemiSupervisedTrainer).parameters
    for name, key in flags.ENGINE_TO_BUNDLE.items():
        assert key in TEMPLATE, key
        assert f"@{key}" in wiring[name] and f"@{key}_" not in wiring[name], (name, wiring[name])
        if name.startswith("ValidationEveryAndLastHandler."):
            assert name.split(".")[1] in inspect.signature(ValidationEveryAndLastHandler).parameters
            continue
        argument = name.split(".")[0] if "'" not in name else "optimizer"
        assert argument in params, name
    for bundle in ("covid", "chase"):  # the keys users type are in the generated configs too
        train_json = json.loads((REPO / "bundles" / bundle / "configs" / "train.json").read_text())
        assert set(flags.ENGINE_TO_BUNDLE.values()) <= set(train_json), bundle


def test_as_flags_writes_arguments_as_flags_and_leaves_other_words():
    assert flags.as_flags("epoch_length=0 must be >= 1; max_epochs=-1 too.") == "--epoch_length 0 must be >= 1; --max_epochs -1 too."
    assert flags.as_flags("lower unlabeled_data_loader.batch_size.") == "lower --unlabeled_batch_size."
    assert (flags.as_flags("Lower the learning rate (the optimizer's lr); with amp=True, check amp_dtype or pass amp=False.")
            == "Lower the learning rate (--learning_rate); with --amp true, check --amp_dtype or pass --amp false.")
    assert flags.as_flags("amp_dtype='bfloat16'") == "--amp_dtype bfloat16"
    unchanged = "unlabeled_data_loader is None; amp_kwargs dtype; --amp false; the bundles' --epoch_length; example"
    assert flags.as_flags(unchanged) == unchanged


def _net() -> UNet:
    return UNet(in_channels=1, out_channels=2, features=(4, 4, 8, 8, 16, 4))


def _loader(n: int, batch_size: int, label: bool = True) -> DataLoader:
    item = {"image": torch.zeros(1, 16, 16)} | ({"label": torch.zeros(1, 16, 16)} if label else {})
    return DataLoader(Dataset([item] * n), batch_size=batch_size, drop_last=not label)


def _failed_build(**kwargs) -> BaseException:
    """The engine's error as MONAI's config parser hands it on (``RuntimeError`` raised from it)."""
    net = _net()
    args = {"device": "cpu", "max_epochs": 1, "train_data_loader": _loader(2, 1), "network": net,
            "optimizer": torch.optim.SGD(net.parameters(), lr=0.01), "method": create_method("supervised", net, 2)}
    try:
        try:
            SemiSupervisedTrainer(**(args | kwargs))
        except ValueError as e:
            raise RuntimeError("Failed to instantiate {'_target_': 'SemiSupervisedTrainer', ...}") from e
    except RuntimeError as wrapped:
        return wrapped
    raise AssertionError("the trainer was built")


def test_the_bundle_report_names_the_flag_the_engine_message_the_argument():
    exc = _failed_build(epoch_length=0)
    engine = cli_errors.last_line(exc)
    assert engine.startswith("error: ValueError: SemiSupervisedTrainer: epoch_length=0 must be a whole number >= 1")
    assert "--" not in engine
    assert cli_errors.last_line(exc, flags.rewrite) == engine.replace("epoch_length=0", "--epoch_length 0")

    exc = _failed_build(unlabeled_data_loader=_loader(1, 4, label=False))  # drop_last with 1 image: 0 batches
    engine = cli_errors.last_line(exc)
    assert "unlabeled_data_loader is empty" in engine and "lower unlabeled_data_loader.batch_size" in engine
    bundle = cli_errors.last_line(exc, flags.rewrite)
    assert "unlabeled_data_loader is empty" in bundle and bundle.endswith("or lower --unlabeled_batch_size.")
    assert "unlabeled_data_loader.batch_size" not in bundle

    try:  # the validation handler speaks of its own argument too
        ValidationEveryAndLastHandler(0.5)
    except ValueError as e:
        handler = cli_errors.last_line(e)
        assert "ValidationEveryAndLastHandler.interval=0.5 must be a whole number" in handler and "--" not in handler
        assert cli_errors.last_line(e, flags.rewrite) == handler.replace(
            "ValidationEveryAndLastHandler.interval=0.5", "--val_interval 0.5"
        ).replace("(e.g. ValidationEveryAndLastHandler.interval=1)", "(e.g. --val_interval 1)")
    else:
        raise AssertionError("ValidationEveryAndLastHandler(0.5) was accepted")

    # the bundle layer's own messages name the flags already and stay as written
    ours = BundleConfigError("amp_dtype must be float16 or bfloat16, got 'x' (e.g. --amp_dtype bfloat16).")
    try:
        raise ours
    except BundleConfigError as e:
        assert cli_errors.last_line(e, flags.rewrite) == f"error: {ours}"


@pytest.fixture
def bundle_cli_report(monkeypatch):
    """The failure report as ``python -m monai.bundle run`` installs it; the process's hooks restored afterwards."""
    import monai.bundle

    factory = logging.getLogRecordFactory()
    monkeypatch.setattr(sys, "excepthook", sys.__excepthook__)
    monkeypatch.delenv(cli_errors.DEBUG_ENV, raising=False)
    monkeypatch.setattr(sys, "argv", [str(Path(monai.bundle.__file__).parent / "__main__.py"), "run", "training"])
    try:
        install_failure_report(sys.argv)
        assert getattr(sys.excepthook, cli_errors._MARK, False)
        yield sys.excepthook
    finally:
        logging.setLogRecordFactory(factory)


def test_under_the_bundle_cli_the_failure_and_the_engine_log_name_the_flags(bundle_cli_report, capsys, caplog):
    exc = _failed_build(max_epochs=0)
    bundle_cli_report(type(exc), exc, exc.__traceback__)
    hint, last = capsys.readouterr().err.strip().splitlines()[-2:]
    assert hint.startswith("training failed in medsemiseg/engines/trainer.py:")
    assert last.startswith("error: ValueError: SemiSupervisedTrainer: --max_epochs 0 must be a whole number >= 1")

    caplog.set_level(logging.INFO, logger="medsemiseg.engines.trainer")
    net = _net()
    SemiSupervisedTrainer(device="cpu", max_epochs=1, train_data_loader=_loader(2, 4), network=net,
                          optimizer=torch.optim.SGD(net.parameters(), lr=0.01), method=create_method("supervised", net, 2))
    assert "labelled split has 2 image(s), fewer than its batch size 4 (--batch_size)" in caplog.text
