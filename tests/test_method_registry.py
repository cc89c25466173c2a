"""The method registry: a new method is one module, and the bundles, the grid and the cost benchmark find it.

The throwaway method lives in one module written into a temporary folder (entropy minimisation on the unlabelled
batch, a method this package does not have); ``MEDSEMISEG_METHODS`` names it. It then trains through the covid bundle
as the user runs it (``python -m monai.bundle run training ... --method entropymin``), is measured by the cost
benchmark against the FLOP floor it declares, and is accepted by a grid YAML.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from medsemiseg.methods import registry

REPO = Path(__file__).resolve().parents[1]

THROWAWAY = textwrap.dedent(
    '''
    """Entropy minimisation: the supervised term plus the mean entropy of the student's unlabelled predictions."""

    import torch

    from medsemiseg.methods.base import Method, features_output, label_map, student_forward
    from medsemiseg.methods.registry import FlopFloor, MethodSpec


    class EntropyMin(Method):
        def __init__(self, num_classes, entropy_weight=0.1, sup_loss=None):
            super().__init__(num_classes, sup_loss)
            self.entropy_weight = float(entropy_weight)

        def __call__(self, engine, labeled, unlabeled, features=None):
            x_u = self._require_unlabeled(unlabeled, "EntropyMin")
            label_map(labeled["label"])
            pred, feats = student_forward(engine.network, labeled["image"], need_features=features is not None)
            loss_sup = self.supervised_loss(engine, pred, labeled["label"])
            prob = torch.softmax(engine.network(x_u).float(), dim=1)
            entropy = -(prob * torch.log(prob.clamp_min(1e-8))).sum(1).mean()
            return {"loss": loss_sup + self.entropy_weight * entropy, "pred": pred, "loss_sup": loss_sup,
                    "entropy": entropy, **features_output(features, (feats, pred))}


    METHODS = (
        MethodSpec("entropymin", EntropyMin, "entropy minimisation on the unlabelled batch",
                   floor=FlopFloor(network={"l": 3, "u": 3}, text="sup + fwd+bwd (u)")),
    )
    '''
)


@pytest.fixture
def throwaway(tmp_path, monkeypatch) -> dict[str, str]:
    """The throwaway method's module on the path, named in MEDSEMISEG_METHODS; the environment for subprocesses."""
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "entropymin_method.py").write_text(THROWAWAY)
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setenv(registry.ENV, "entropymin_method")
    path = os.pathsep.join([str(folder), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return dict(os.environ, PYTHONPATH=path, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")


def test_a_method_module_declares_name_options_and_floor(throwaway, monkeypatch):
    spec = registry.get("EntropyMin")
    assert spec.name == "entropymin" and spec.options == ["entropy_weight", "sup_loss"] and spec.requires_unlabeled
    assert registry.method_names()[-1] == "entropymin"  # after the package's own methods
    assert spec.floor.units(4, 2) == (3 * 4 + 3 * 2, 0, 0)
    net = torch.nn.Conv2d(1, 4, 1)
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['entropy_wieght'\]; valid options: \['entropy_weight'"):
        registry.create_method("entropymin", net, 4, entropy_wieght=1.0)
    monkeypatch.delenv(registry.ENV)
    with pytest.raises(ValueError, match="unknown method 'entropymin'"):
        registry.get("entropymin")  # not registered without its module named


def test_a_module_named_but_declaring_no_methods_is_refused(tmp_path, monkeypatch):
    (tmp_path / "not_a_method.py").write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv(registry.ENV, "not_a_method")
    with pytest.raises(ValueError, match="'not_a_method', which declares no METHODS"):
        registry.specs()


@pytest.mark.integration
def test_a_throwaway_method_trains_through_the_bundle_and_the_cost_benchmark(throwaway, tmp_path):
    out = tmp_path / "run"
    train = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", "bundles/covid/train.json",
             "--method", "entropymin", "--method_options", "{'entropy_weight': 0.5}", "--output_dir", str(out),
             "--cache_dir", str(tmp_path / "cache"), "--image_size", "[64, 64]", "--max_epochs", "1",
             "--epoch_length", "2", "--batch_size", "2", "--unlabeled_batch_size", "2", "--device", "cpu"]
    proc = subprocess.run(train, cwd=REPO, env=throwaway, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((out / "models" / "run.json").read_text())["method"] == "entropymin"
    assert (out / "models" / "model.pt").is_file()
    assert "entropy" in proc.stdout + proc.stderr  # its own loss term is logged with the others

    report = tmp_path / "cost.json"
    cost = [sys.executable, "-m", "medsemiseg.benchmark.cost", "--methods", "supervised", "entropymin", "--iters", "2",
            "--warmup", "0", "--image-size", "32", "--network-kwargs", '{"features": [4, 4, 8, 8, 16, 4]}',
            "--threads", "1", "--json", str(report)]
    proc = subprocess.run(cost, cwd=REPO, env=throwaway, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {r["method"]: r for r in json.loads(report.read_text())["results"]}
    ours = rows["entropymin"]
    assert ours["floor_passes"] == "sup + fwd+bwd (u)" and ours["floor_F_units"] == 3 * 4 + 3 * 4
    # the step does exactly its declared passes: measured FLOPs at the floor (the floor counts backward as 2 x fwd)
    assert ours["measured_over_floor"] == pytest.approx(1.0, rel=0.05)
    assert ours["flops_x_supervised"] > 1.5


def test_the_grid_accepts_a_registered_method(throwaway, tmp_path, monkeypatch):
    from medsemiseg.benchmark.config import load_config

    config = tmp_path / "grid.yaml"
    config.write_text(textwrap.dedent(f"""
        task: covid
        bundle: {REPO / 'bundles' / 'covid'}
        methods: [supervised, entropymin]
        fractions: ["1/8"]
        output_dir: {tmp_path / 'runs'}
        method_overrides: {{entropymin: {{method_options: {{entropy_weight: 0.5}}}}}}
    """))
    cfg = load_config(config)
    assert cfg.methods == ["supervised", "entropymin"]
    monkeypatch.delenv(registry.ENV)
    with pytest.raises(ValueError, match=r"unknown method\(s\) \['entropymin'\]"):
        load_config(config)
