"""Tests of the benchmark grid runner, aggregation, tables and plots.

The grid's cells are subprocesses; here they run a tiny *fake bundle* script (a test double of
``python -m monai.bundle run``) that writes what the real bundles write — a checkpoint-like file, TensorBoard scalars,
a metrics JSON and a saved prediction — with metrics derived from the overrides it received. That tests what this
module owns (command building, markers, resumption, failure isolation, aggregation, figures) in seconds, without
training anything. One slow test runs a real bundle cell when the bundles exist.
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from medsemiseg.benchmark import cells as grid_cells
from medsemiseg.benchmark import config as grid_config
from medsemiseg.benchmark import grid, plots, results
from medsemiseg.benchmark.__main__ import main as cli_main
from medsemiseg.benchmark.config import ConfigError, load_config
from medsemiseg.methods import method_names

FAKE_BUNDLE = textwrap.dedent(
    r'''
    """Stand-in for `python -m monai.bundle run WORKFLOW --config_file F --key value ...`."""
    import json, os, sys, zlib
    from pathlib import Path
    import numpy as np

    workflow, args = sys.argv[1], sys.argv[2:]
    ov = {args[i][2:]: args[i + 1] for i in range(0, len(args), 2)}
    out = Path(ov["output_dir"])
    out.mkdir(parents=True, exist_ok=True)
    calls = out / "calls.txt"
    with open(calls, "a") as fh:
        fh.write(workflow + "\n")
    key = f"{ov['method']}/{ov['labeled_fraction']}/{ov['seed']}"
    fail = os.environ.get("FAKE_FAIL", "")
    if fail and fail == f"{workflow}:{key}":
        print("fake failure for", key, file=sys.stderr)
        sys.exit(3)
    rank = ["supervised", "classmix", "fixmatch", "unimatch", "supmix", "sufd", "supmix_sufd"].index(ov["method"])
    frac = {"1/8": 0.125, "1/4": 0.25, "1/2": 0.5, "full": 1.0}[ov["labeled_fraction"]]
    noise = (zlib.crc32(key.encode()) % 100) / 10000.0
    if workflow == "training":
        (out / "model.pt").write_text("weights")
        if ov.get("log_curves") == "True" and ov["seed"] == "0":
            # TensorBoard's own light writer (importing torch would cost seconds per fake cell)
            from tensorboard.summary.writer.event_file_writer import EventFileWriter
            from tensorboard.compat.proto import event_pb2, summary_pb2
            w = EventFileWriter(str(out / "tb"))
            for step in range(1, 6):
                for tag, v in (("train_loss", 1.0 / step + rank * 0.01), ("val_mean_iou", 0.4 + 0.05 * step + 0.01 * rank)):
                    val = summary_pb2.Summary.Value(tag=tag, simple_value=v)
                    w.add_event(event_pb2.Event(step=step, wall_time=float(step), summary=summary_pb2.Summary(value=[val])))
            w.close()
    elif workflow == "evaluating":
        assert (out / "model.pt").is_file(), "evaluation before training"
        fg = 0.3 + 0.3 * frac + 0.01 * rank + noise
        iou = {"background": 0.95 + noise / 10, "vessel": fg}
        (out / "eval").mkdir(exist_ok=True)
        per_class = {k: {"iou": v, "dice": 2 * v / (1 + v), "iou_pooled": v + 0.01} for k, v in iou.items()}
        (out / "eval" / "metrics.json").write_text(json.dumps(
            {"classes": list(iou), "per_class": per_class, "mIoU": sum(iou.values()) / 2,
             "mIoU_pooled": sum(iou.values()) / 2 + 0.01}))
    elif workflow == "inferring":
        assert (out / "model.pt").is_file(), "inference before training"
        pd = out / "outputs"
        pd.mkdir(exist_ok=True)
        for i in range(2):
            lab = np.zeros((1, 24, 20), np.int64)
            lab[0, 4:12, 5:15] = 1
            np.save(pd / f"case{i}_seg.npy", np.roll(lab, rank, axis=1))
    else:
        sys.exit(f"unknown workflow {workflow}")
    '''
)


def _write_config(tmp_path: Path, **extra) -> Path:
    bundle = tmp_path / "bundle"
    bundle.mkdir(exist_ok=True)
    (bundle / "train.json").write_text("{}")
    (bundle / "evaluate.json").write_text("{}")
    fake = tmp_path / "fake_bundle.py"
    fake.write_text(FAKE_BUNDLE)
    src = tmp_path / "data"  # a prepared data set: images/ and labels/ named like the predictions
    for sub in ("images", "labels"):
        (src / sub).mkdir(parents=True, exist_ok=True)
    for i in range(2):
        lab = np.zeros((1, 24, 20), np.int64)
        lab[0, 4:12, 5:15] = 1
        np.save(src / "labels" / f"case{i}.npy", lab)
        np.save(src / "images" / f"case{i}.npy",
                np.random.default_rng(i).normal(size=(1, 24, 20)).astype(np.float32) + 2 * lab)
    cfg = {
        "task": "chase",
        "bundle": str(bundle),
        "classes": ["background", "vessel"],
        "methods": ["supervised", "classmix", "supmix_sufd"],
        "fractions": ["1/8", "1/4"],
        "upper_bound": {"label": "full", "value": "full"},
        "seeds": [0, 1],
        "output_dir": str(tmp_path / "runs"),
        "overrides": {"max_epochs": 1, "log_curves": True},
        "method_overrides": {"supmix_sufd": {"supmix#classes": [1]}},
        "metrics_file": "eval/metrics.json",
        "launcher": ["{python}", str(fake)],
        "predict": {"workflow": "inferring", "config_file": "inference.json", "fractions": ["1/8"], "seeds": [0]},
        "plots": {"predictions": {"glob": "outputs/*_seg.npy", "source_dir": str(src), "image_glob": "images/*.npy",
                                  "label_glob": "labels/*.npy", "count": 2}},
    }
    cfg.update(extra)
    import yaml

    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


# ---------------------------------------------------------------------------------------------------------------
# configuration and cells
# ---------------------------------------------------------------------------------------------------------------

def test_cells_enumerate_grid_with_supervised_only_upper_bound(tmp_path):
    cfg = load_config(_write_config(tmp_path))
    cells = grid_config.enumerate_cells(cfg)
    # 3 methods x 2 fractions x 2 seeds + supervised x full x 2 seeds
    assert len(cells) == 3 * 2 * 2 + 2
    assert [c.key for c in cells if c.fraction.label == "full"] == ["chase/supervised/full/seed0",
                                                                    "chase/supervised/full/seed1"]
    c = cells[0]
    assert c.key == "chase/supervised/1/8/seed0"
    assert c.directory == tmp_path / "runs" / "chase" / "supervised" / "1-8" / "seed0"
    assert len({c.directory for c in cells}) == len(cells)


def test_train_command_carries_overrides_in_precedence_order(tmp_path):
    cfg = load_config(_write_config(tmp_path))
    cell = [c for c in grid_config.enumerate_cells(cfg) if c.method == "supmix_sufd"][0]
    cmd = cfg.train_command(cell)
    assert cmd[0] == sys.executable and cmd[2] == "training"
    assert cmd[3:5] == ["--config_file", str(tmp_path / "bundle" / "train.json")]
    args = dict(zip(cmd[5::2], cmd[6::2]))
    assert args["--method"] == "supmix_sufd"
    assert args["--labeled_fraction"] == "1/8"
    assert args["--seed"] == "0"
    assert args["--output_dir"] == str(cell.directory)
    assert args["--max_epochs"] == "1"
    assert args["--log_curves"] == "True"
    assert json.loads(args["--supmix#classes"]) == [1]
    ecmd = cfg.eval_command(cell)
    assert ecmd[2] == "evaluating" and ecmd[4].endswith("evaluate.json")
    eargs = dict(zip(ecmd[5::2], ecmd[6::2]))
    assert eargs["--output_dir"] == str(cell.directory) and eargs["--method"] == "supmix_sufd"


@pytest.mark.parametrize(
    "change, message",
    [
        ({"methods": ["supervised", "clasmix"]}, "unknown method"),
        ({"methods": []}, "non-empty list"),
        ({"seeds": [-1]}, "seeds"),
        ({"overrides": {"seed": 3}}, "may not set"),
        ({"fractions": ["1/8", "1/8"]}, "repeat"),
        ({"bundle": "/nonexistent/bundle"}, "does not exist"),
        ({"typo_key": 1}, "unknown key"),
        ({"fractions": [{"value": "1/8"}]}, "labelled fraction must be"),
        ({"seeds": [0, 0]}, "seed twice"),
        ({"fractions": ["1/0"]}, "'1/0'"),
        ({"fractions": ["0"]}, "labelled fraction '0'"),
        ({"fractions": ["3/2"]}, r"must be in \(0, 1\]"),
        ({"plots": {"fraction": "1/3"}}, "'plots: fraction' '1/3' is not one of the grid's fractions"),
        ({"cell_timeout_s": 0}, "cell_timeout_s"),
        ({"cell_timeout_s": -5}, "cell_timeout_s"),
        ({"output_dir": ""}, "output_dir"),
    ],
)
def test_bad_config_raises_one_clear_error_naming_the_file(tmp_path, change, message):
    path = _write_config(tmp_path, **change)
    with pytest.raises(ConfigError, match=message) as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_missing_config_file_names_the_fix(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_shipped_configs_parse_and_cover_the_paper_grid():
    root = Path(__file__).resolve().parents[1]
    for name in ("benchmark_covid", "benchmark_chase", "benchmark_covid_quick", "benchmark_chase_quick"):
        path = root / "configs" / f"{name}.yaml"
        import yaml

        raw = yaml.safe_load(path.read_text())
        # the paper's grid: its methods and baselines (this project's own, unimatch_supmix, runs in the real grids)
        assert raw["methods"] == [m for m in method_names() if m != "unimatch_supmix"], name
        assert [str(f) for f in raw["fractions"]] == ["1/8", "1/4", "1/2"], name
        assert raw["upper_bound"]["methods"] == ["supervised"], name
        if (root / raw["bundle"]).is_dir():  # bundles land separately; parse fully once they exist
            old = os.getcwd()
            os.chdir(root)
            try:
                cfg = load_config(path)
            finally:
                os.chdir(old)
            assert len(grid_config.enumerate_cells(cfg)) == (3 * 7 + 1) * len(cfg.seeds)


def test_parse_metrics_forms():
    a = grid.parse_metrics({"iou": {"bg": 0.9, "fg": 0.5}})
    assert a["miou"] == pytest.approx(0.7) and a["dice"] is None
    b = grid.parse_metrics({"per_class": {"bg": {"iou": 0.8, "dice": 0.9}, "fg": {"iou": 0.4, "dice": 0.6}},
                            "miou": 0.6})
    assert b["iou"] == {"bg": 0.8, "fg": 0.4} and b["dice"]["fg"] == 0.6 and b["miou"] == 0.6
    c = grid.parse_metrics({"iou": [0.9, 0.3]}, classes=["background", "vessel"])
    assert c["iou"] == {"background": 0.9, "vessel": 0.3}
    # medsemiseg.metrics.write_report layout, with a class absent from the whole set (NaN)
    d = grid.parse_metrics({"classes": ["bg", "a", "b"], "mIoU": 0.6, "mIoU_pooled": 0.55,
                            "per_class": {"bg": {"iou": 0.9, "iou_pooled": 0.9}, "a": {"iou": 0.3, "iou_pooled": 0.2},
                                          "b": {"iou": float("nan"), "iou_pooled": float("nan")}}})
    assert d["miou"] == 0.6 and d["miou_pooled"] == 0.55 and d["iou_pooled"]["a"] == 0.2
    assert math.isnan(d["iou"]["b"])
    assert grid.parse_metrics({"iou": {"bg": 0.8, "x": float("nan")}})["miou"] == pytest.approx(0.8)
    with pytest.raises(ValueError, match="no per-class IoU"):
        grid.parse_metrics({"dice": {"bg": 1.0}}, source="x.json")


# ---------------------------------------------------------------------------------------------------------------
# running: markers, resumption, failure isolation
# ---------------------------------------------------------------------------------------------------------------

def _run(cfg, **kw):
    lines: list[str] = []
    res = grid.run_grid(cfg, progress=False, log=lines.append, **kw)
    return res, lines


@pytest.mark.integration
def test_grid_runs_then_rerun_skips_finished_cells(tmp_path):
    cfg = load_config(_write_config(tmp_path, seeds=[0], methods=["supervised", "supmix_sufd"]))
    res, lines = _run(cfg)
    assert [r.status for r in res] == ["done"] * 5
    expected = {}
    for c in grid_config.enumerate_cells(cfg):
        done = json.loads((c.directory / grid_cells.DONE).read_text())
        assert done["method"] == c.method and 0 < done["metrics"]["miou"] < 1
        # the progress line gives the mIoU in percent, with its unit (as results.md), not a bare "0.74"
        assert any(ln.startswith("[") and f"] {c.key}: mIoU {100 * done['metrics']['miou']:.2f} %  (" in ln
                   for ln in lines), lines
        # predictions only where the panel needs them (predict: fractions [1/8], seeds [0])
        expected[c.key] = ["training", "evaluating"] + (["inferring"] if c.fraction.label == "1/8" else [])
        assert (c.directory / "calls.txt").read_text().split() == expected[c.key]
    res2, lines2 = _run(cfg)
    assert [r.status for r in res2] == ["skipped"] * 5
    for c in grid_config.enumerate_cells(cfg):  # nothing was called again
        assert (c.directory / "calls.txt").read_text().split() == expected[c.key]
    assert "0 to run" in lines2[0]


@pytest.mark.integration
def test_failed_cell_is_recorded_not_fatal_and_retried(tmp_path, monkeypatch):
    cfg = load_config(_write_config(tmp_path, seeds=[0], methods=["supervised", "classmix"], fractions=["1/8"],
                                    upper_bound=None))
    monkeypatch.setenv("FAKE_FAIL", "training:classmix/1/8/0")
    res, _ = _run(cfg)
    assert {r.cell.method: r.status for r in res} == {"supervised": "done", "classmix": "failed"}
    failed_dir = [r.cell.directory for r in res if r.status == "failed"][0]
    info = json.loads((failed_dir / grid_cells.FAILED).read_text())
    assert info["step"] == "training" and info["returncode"] == 3 and "fake failure" in info["log_tail"]
    assert not (failed_dir / grid_cells.DONE).exists()
    # not retried when asked not to
    res_keep, _ = _run(cfg, rerun_failed=False)
    assert {r.cell.method: r.status for r in res_keep} == {"supervised": "skipped", "classmix": "failed"}
    # retried by default once the cause is gone
    monkeypatch.delenv("FAKE_FAIL")
    res2, _ = _run(cfg)
    assert {r.cell.method: r.status for r in res2} == {"supervised": "skipped", "classmix": "done"}
    assert not (failed_dir / grid_cells.FAILED).exists()


def test_evaluation_failure_reruns_only_evaluation(tmp_path, monkeypatch):
    cfg = load_config(_write_config(tmp_path, seeds=[0], methods=["supervised"], fractions=["1/8"],
                                    upper_bound=None))
    monkeypatch.setenv("FAKE_FAIL", "evaluating:supervised/1/8/0")
    (res,), _ = _run(cfg)
    assert res.status == "failed" and grid_cells.cell_status(cfg, res.cell) == "trained"
    monkeypatch.delenv("FAKE_FAIL")
    (res2,), _ = _run(cfg)
    assert res2.status == "done"
    assert (res2.cell.directory / "calls.txt").read_text().split() == [
        "training", "evaluating", "evaluating", "inferring"]


def test_changed_config_makes_cells_stale_and_refuses_to_mix(tmp_path):
    path = _write_config(tmp_path, seeds=[0], methods=["supervised"], fractions=["1/8"], upper_bound=None)
    cfg = load_config(path)
    _run(cfg)
    cfg2 = load_config(_write_config(tmp_path, seeds=[0], methods=["supervised"], fractions=["1/8"],
                                     upper_bound=None, overrides={"max_epochs": 2}))
    cell = grid_config.enumerate_cells(cfg2)[0]
    assert grid_cells.cell_status(cfg2, cell) == "stale"
    with pytest.raises(ConfigError, match="different command"):
        _run(cfg2)
    (res,), lines = _run(cfg2, rerun_stale=True)
    assert res.status == "done"
    assert (cell.directory.parent / "seed0.stale-1" / grid_cells.DONE).is_file()
    assert grid_cells.cell_status(cfg2, cell) == "done"


def test_partial_cell_is_rerun_into_same_folder(tmp_path):
    cfg = load_config(_write_config(tmp_path, seeds=[0], methods=["supervised"], fractions=["1/8"],
                                    upper_bound=None))
    cell = grid_config.enumerate_cells(cfg)[0]
    cell.directory.mkdir(parents=True)
    (cell.directory / "checkpoint_iter_3.pt").write_text("half-trained")  # a killed run
    assert grid_cells.cell_status(cfg, cell) == "partial"
    (res,), _ = _run(cfg)
    assert res.status == "done" and (cell.directory / "checkpoint_iter_3.pt").is_file()


def test_dry_run_runs_nothing(tmp_path):
    cfg = load_config(_write_config(tmp_path))
    res, lines = _run(cfg, dry_run=True)
    assert res == [] and sum("would run" in ln for ln in lines) == 14
    assert not (tmp_path / "runs" / "chase").exists()


# ---------------------------------------------------------------------------------------------------------------
# aggregation and tables
# ---------------------------------------------------------------------------------------------------------------

def test_mean_std_uses_sample_std():
    mu, sd, n = results.mean_std([0.5, 0.7, None])
    assert (mu, n) == (pytest.approx(0.6), 2) and sd == pytest.approx(math.sqrt(0.02))
    assert results.mean_std([0.4]) == (0.4, 0.0, 1)
    assert math.isnan(results.mean_std([])[0])


def test_summary_and_markdown_table_from_result_rows():
    rows = [
        {"task": "t", "method": "supervised", "fraction": "1/8", "seed": 0, "miou": 0.60, "iou/bg": 0.9, "iou/fg": 0.3},
        {"task": "t", "method": "supervised", "fraction": "1/8", "seed": 1, "miou": 0.62, "iou/bg": 0.9, "iou/fg": 0.34},
        {"task": "t", "method": "supmix_sufd", "fraction": "1/8", "seed": 0, "miou": 0.70, "iou/bg": 0.92,
         "iou/fg": 0.48},
        {"task": "t", "method": "supmix_sufd", "fraction": "1/8", "seed": 1, "miou": 0.68, "iou/bg": 0.92,
         "iou/fg": 0.44},
    ]
    classes = results.class_names(rows)
    assert classes == ["bg", "fg"]
    summ = results.summarize(rows, classes, ["1/8", "1/4"], ["supervised", "supmix_sufd"])
    assert len(summ) == 2
    assert summ[1]["iou/fg/mean"] == pytest.approx(0.46) and summ[1]["n"] == 2
    md = results.markdown_table(summ, classes)
    lines = md.strip().splitlines()
    assert lines[0] == "| Labelled | Method | bg IoU | fg IoU | mIoU | n |"
    assert lines[2].startswith("| 1/8 | supervised | 90.00 ± 0.00 | 32.00 ± 2.83 | 61.00 ± 1.41 | 2 |")
    assert "**69.00 ± 1.41**" in lines[3] and "**" not in lines[2]


@pytest.mark.integration
def test_full_report_files_and_plots(tmp_path):
    cfg = load_config(_write_config(tmp_path, seeds=[0, 1], methods=["supervised", "supmix_sufd"]))
    res, _ = _run(cfg)
    assert all(r.status == "done" for r in res)
    from medsemiseg.benchmark.report import make_report

    written = make_report(cfg, log=lambda s: None)
    out = tmp_path / "runs" / "chase"
    with open(out / "results.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 10 and {"iou/background", "iou/vessel", "miou", "dice/vessel"} <= set(rows[0])
    md = (out / "results.md").read_text()
    tables, paired = md.split("paired difference to supervised")
    assert "| full | supervised |" in md and tables.count("| 1/8 |") == 2  # per-image table's two rows
    assert md.index("per-image IoU") < md.index("paired difference") < md.index("pooled IoU")
    assert paired.split("pooled IoU")[0].count("| 1/8 |") == 1  # the one method beside supervised, paired by seed
    assert md.count("| 1/8 |") == 5
    assert float(rows[0]["miou_pooled"]) == pytest.approx(float(rows[0]["miou"]) + 0.01)
    for key in ("miou_vs_fraction", "per_class_iou", "learning_curves", "predictions", "paired_differences"):
        p = written[key]
        assert p.is_file() and p.stat().st_size > 5000, key
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the fake gives supmix_sufd the best vessel IoU; the table must say so at 1/8
    summ = list(csv.DictReader(open(out / "summary.csv")))
    best = max((r for r in summ if r["fraction"] == "1/8"), key=lambda r: float(r["miou/mean"]))
    assert best["method"] == "supmix_sufd"


PUBLISHED_CSV = """fraction,method,background,vessel,miou
1/8,Supervised,96.10,55.20,75.65
1/8,Ours,96.40,61.00,78.70
1/8,CPS,96.20,-,
1/4,Ours,96.50,63.30,79.90
"""


@pytest.mark.integration
def test_published_table_is_shown_as_written_and_compared_with_ours(tmp_path):
    (tmp_path / "paper.csv").write_text(PUBLISHED_CSV)
    spec = {"file": "paper.csv", "source": "Someone et al. (2026), Table 9",
            "methods": {"Ours": "supmix_sufd", "Supervised": "supervised"}}
    cfg = load_config(_write_config(tmp_path, seeds=[0], methods=["supervised", "supmix_sufd"], published=spec))
    res, _ = _run(cfg)
    assert all(r.status == "done" for r in res)
    results.write_tables(cfg)
    md = (tmp_path / "runs" / "chase" / "results.md").read_text()
    assert "published results — Someone et al. (2026), Table 9" in md
    # rows exactly as written, unknown methods kept, missing values shown as such
    assert "| 1/8 | Ours (= `supmix_sufd`) | 96.40 | 61.00 | 78.70 |" in md
    assert "| 1/8 | CPS | 96.20 | – | – |" in md
    # differences: our mean (percent) minus the published value, only where both exist
    summ = {(r["fraction"], r["method"]): r for r in csv.DictReader(open(tmp_path / "runs" / "chase" / "summary.csv"))}
    diff = md[md.index("ours minus published"):]
    ours = summ[("1/8", "supmix_sufd")]
    expected = f"| 1/8 | supmix_sufd | {100 * float(ours['iou/background/mean']) - 96.40:+.2f} | " \
               f"{100 * float(ours['iou/vessel/mean']) - 61.00:+.2f} | {100 * float(ours['miou/mean']) - 78.70:+.2f} | 1 |"
    assert expected in diff
    assert "| 1/4 | supmix_sufd |" in diff and "| 1/8 | supervised |" in diff and "CPS" not in diff


@pytest.mark.parametrize(
    "csv_text, spec, message",
    [
        ("fraction,method,vesel,miou\n1/8,Ours,60,70\n", {}, r"\['vesel'\] are neither 'miou' nor a class"),
        ("fraction,method,vessel,miou\n1/8,Ours,sixty,70\n", {}, "line 2, column vessel: 'sixty' is not a number"),
        ("method,miou\nOurs,70\n", {}, "needs a 'fraction' column"),
        ("fraction,method,miou\n1/8,Ours,70\n", {"source": ""}, "needs 'source'"),
        ("fraction,method,miou\n1/8,Ours,70\n", {"file": "missing.csv"}, "missing.csv does not exist"),
        ("fraction,method,miou\n1/8,Ours,70\n", {"table": 2}, "unknown key"),
        ("fraction,method,miou\n1/8,Ours,70\n", {"methods": {"Ours": "supmix_sufdd"}},
         "not one of our methods.*did you mean 'supmix_sufd'"),
        ("fraction,method,miou\n1/8,Ours,70\n1/4,Ours,71\n1/8,Ours,72\n", {}, r"line 4: \(1/8, Ours\) repeats line 2"),
    ],
)
def test_bad_published_table_stops_the_grid_before_it_runs(tmp_path, csv_text, spec, message):
    (tmp_path / "paper.csv").write_text(csv_text)
    path = _write_config(tmp_path, published={"file": "paper.csv", "source": "X (2026), Table 1", **spec})
    with pytest.raises(ConfigError, match=message) as info:
        load_config(path)
    assert str(path) in str(info.value)


@pytest.mark.integration
def test_cli_end_to_end_and_resume(tmp_path, capsys):
    path = _write_config(tmp_path, seeds=[0], methods=["supervised", "fixmatch"], fractions=["1/8"])
    assert cli_main([str(path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "results_md" in out and (tmp_path / "runs" / "chase" / "results.md").is_file()
    assert cli_main([str(path), "--no-progress"]) == 0
    assert "0 to run" in capsys.readouterr().out
    assert cli_main([str(tmp_path / "missing.yaml")]) == 2


@pytest.mark.integration
def test_cli_reports_failure_with_exit_status(tmp_path, monkeypatch, capsys):
    path = _write_config(tmp_path, seeds=[0], methods=["supervised", "fixmatch"], fractions=["1/8"],
                         upper_bound=None)
    monkeypatch.setenv("FAKE_FAIL", "training:fixmatch/1/8/0")
    assert cli_main([str(path), "--no-progress"]) == 1
    assert "FAILED chase/fixmatch/1/8/seed0" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------------
# plots
# ---------------------------------------------------------------------------------------------------------------

def test_fraction_values():
    assert plots.fraction_value("1/8") == 0.125 and plots.fraction_value("full") == 1.0
    assert math.isnan(plots.fraction_value("12"))


def test_overlay_is_upright_and_coloured():
    img = np.zeros((1, 6, 4), np.float32)  # (C, X=6 wide, Y=4 high)
    img[0, :, 2:] = 1.0
    lab = np.zeros((1, 6, 4), np.int64)
    lab[0, 5, 3] = 2  # right-most column, bottom row
    rgb = plots.overlay(img, lab)
    assert rgb.shape == (4, 6, 3)
    assert rgb[0, 0].sum() == 0 and rgb[3, 0].sum() == pytest.approx(3.0)  # bright half at large Y = bottom
    assert not np.allclose(rgb[3, 5], rgb[3, 4])  # the labelled pixel is tinted
    with pytest.raises(ValueError, match="does not match"):
        plots.overlay(img, np.zeros((1, 5, 4), np.int64))


def test_scalar_curves_roundtrip(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    w = SummaryWriter(str(tmp_path / "tb"))
    for s in range(3):
        w.add_scalar("val_mean_iou", 0.1 * s, s)
    w.close()
    curves = plots.load_scalar_curves(tmp_path)
    assert [p[0] for p in curves["val_mean_iou"]] == [0, 1, 2]
    assert curves["val_mean_iou"][2][1] == pytest.approx(0.2)
    assert plots.load_scalar_curves(tmp_path / "empty") == {}


# ---------------------------------------------------------------------------------------------------------------
# cost benchmark
# ---------------------------------------------------------------------------------------------------------------

def test_floor_units_follow_the_pass_table():
    from medsemiseg.benchmark.cost import floor_units, measurable_methods

    assert measurable_methods() == method_names()  # every listed method declares its floor
    assert floor_units("supervised", 4, 8) == (12, 0, 0)
    assert floor_units("fixmatch", 4, 8) == (12 + 4 * 8, 0, 0)  # +1 no-grad weak, +1 fwd/bwd strong
    # weak: encoder fwd+bwd 3E, clean decode (F-E), perturbed decode fwd+bwd 3(F-E); strong: 2 x 3F
    assert floor_units("unimatch", 2, 2) == (6 + 10 * 2, -1 * 2, 0)
    f_sup, e_sup, g_sup = floor_units("supmix", 2, 3)
    f, e, g = floor_units("supmix_sufd", 2, 3)
    assert f == f_sup and e_sup == g_sup == 0 and e == 3 * 3 and g == 3 * 2 + 5 * 3  # adv: D frozen, no weight grads


@pytest.mark.integration
def test_cost_measures_supervised_at_its_floor_and_semi_above(tmp_path):
    """Real engine, tiny UNet: supervised, FixMatch and SUFD do exactly their floor's passes (1 fwd + bwd = 3F per
    labelled image, ...), a semi-supervised method costs more than supervised; the table formats them."""
    pytest.importorskip("medsemiseg.engines")
    from medsemiseg.benchmark.cost import CostSettings, cost_table, run_cost_benchmark

    s = CostSettings(task="chase", image_size=32, batch_size=2, unlabeled_batch_size=2, iters=2, warmup=1,
                     threads=1, network_kwargs={"features": [4, 8, 8, 16, 16, 4]})
    report = run_cost_benchmark(["supervised", "fixmatch", "sufd"], s, isolate=False, log=lambda m: None)
    sup, fm, sufd = report["results"]
    assert "error" not in sup and "error" not in fm and "error" not in sufd
    assert sup["measured_over_floor"] == pytest.approx(1.0, rel=0.05)
    assert fm["flops_per_iter"] > 1.5 * sup["flops_per_iter"]
    assert fm["measured_over_floor"] == pytest.approx(1.0, rel=0.05)
    # SUFD's floor counts the student's encoder pass over the weak unlabelled batch (ClassMix never runs it)
    assert 0 < sufd["flops_encoder_per_image_fwd"] < sufd["flops_per_image_fwd"]
    assert sufd["measured_over_floor"] == pytest.approx(1.0, rel=0.05)
    assert sup["timed_iters"] == 2 and sup["s_per_iter"] > 0 and sup["peak_mem_mb"] >= 0
    md = cost_table(report)
    assert "| supervised |" in md and "| fixmatch |" in md and "Peak memory" in md


def test_cell_overrides_apply_to_matching_cells_only(tmp_path):
    rules = [{"fractions": ["1/8"], "seeds": [0], "overrides": {"train#checkpointer#n_saved": 100}},
             {"methods": ["supmix_sufd"], "overrides": {"method_options": {"adv_weight": 0.01}}}]
    cfg = load_config(_write_config(tmp_path, cell_overrides=rules))
    for c in grid_config.enumerate_cells(cfg):
        ov = cfg.cell_overrides(c)
        assert ("train#checkpointer#n_saved" in ov) == (c.fraction.label == "1/8" and c.seed == 0), c.key
        assert ("method_options" in ov) == (c.method == "supmix_sufd"), c.key
    with pytest.raises(ConfigError, match="cell_overrides"):
        load_config(_write_config(tmp_path, cell_overrides=[{"fractions": ["1/8"], "overrides": {"seed": 1}}]))
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(_write_config(tmp_path, cell_overrides=[{"fraction": ["1/8"], "overrides": {}}]))


def test_analysis_finds_epoch_checkpoints_and_hidden_labels(tmp_path):
    from medsemiseg.benchmark.analysis import epoch_checkpoints, hidden_labels

    models = tmp_path / "cell" / "models"
    models.mkdir(parents=True)
    for name in ("checkpoint_epoch=10.pt", "checkpoint_epoch=2.pt", "model.pt"):
        (models / name).write_text("x")
    assert [e for e, _ in epoch_checkpoints(tmp_path / "cell")] == [2, 10]
    # the datalist hides the labels of two unlabelled pool items; a third unlabelled item has none anywhere
    data = tmp_path / "data"
    data.mkdir()
    (data / "pool.json").write_text(json.dumps({
        "train": [{"image": "images/a.nii.gz", "label": "labels/a.nii.gz"},
                  {"image": "images/b.nii.gz", "label": "labels/b.nii.gz"},
                  {"image": "images/c.nii.gz", "label": "labels/c.nii.gz"}],
        "extra_unlabeled": [{"image": "images/x.nii.gz"}]}))
    (data / "datalist.json").write_text(json.dumps({
        "labeled": [{"image": "images/a.nii.gz", "label": "labels/a.nii.gz"}],
        "unlabeled": [{"image": "images/b.nii.gz"}, {"image": "images/c.nii.gz"}, {"image": "images/x.nii.gz"}]}))
    hl = hidden_labels(data / "datalist.json")
    assert [Path(h["image"]).name for h in hl] == ["b.nii.gz", "c.nii.gz"]
    assert all(Path(h["label"]).parent.name == "labels" for h in hl)


def test_analysis_keeps_the_rows_of_methods_it_does_not_analyse_again(tmp_path):
    import csv as csv_mod

    from medsemiseg.benchmark.analysis import kept_rows

    path = tmp_path / "analysis_1-8_seed0.csv"
    assert kept_rows(path, {"fixmatch"}) == []
    rows = [{"task": "drive", "method": m, "fraction": "1/8", "seed": 0, "epoch": e, "pseudo_label_source": "student",
             "pl_miou": 0.5 + e / 100, "d_acc": ""} for m in ("fixmatch", "unimatch") for e in (1, 2)]
    with open(path, "w", newline="") as fh:
        w = csv_mod.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    kept = kept_rows(path, {"unimatch", "unimatch_supmix"})
    assert [(r["method"], r["epoch"]) for r in kept] == [("fixmatch", 1), ("fixmatch", 2)]
    assert kept[1]["pl_miou"] == pytest.approx(0.52) and kept[0]["seed"] == 0 and kept[0]["d_acc"] == ""
    assert kept[0]["pseudo_label_source"] == "student"


def test_discriminator_scores_have_chance_at_one_half_whatever_the_set_sizes():
    # 4 labelled vs 25 unlabelled images: calling everything "unlabelled" used to score 25/29 = 0.86 "accuracy"
    import torch

    from medsemiseg.benchmark.analysis import ranking_auc
    from medsemiseg.handlers.discriminator import discriminator_loss

    everything_unlabelled = lambda f: -torch.ones(f.shape[0], 1, 2, 2)  # noqa: E731
    _, acc = discriminator_loss(everything_unlabelled, torch.zeros(4, 3), torch.zeros(25, 3))
    assert float(acc) == 0.5
    assert ranking_auc(torch.zeros(4), torch.zeros(25)) == 0.5  # all tied: cannot rank
    assert ranking_auc(torch.tensor([2.0, 3.0]), torch.tensor([0.0, 1.0, 2.5])) == pytest.approx(5 / 6)
    assert ranking_auc(torch.tensor([1.0]), torch.tensor([1.0, 0.0])) == 0.75  # one tie (1/2) + one win
    assert ranking_auc(torch.tensor([]), torch.tensor([1.0])) != ranking_auc(torch.tensor([]), torch.tensor([1.0]))


def test_extends_merges_a_variant_over_its_base(tmp_path):
    base = _write_config(tmp_path)
    variant = tmp_path / "variant.yaml"
    variant.write_text(f"extends: {base.name}\nseeds: [3, 4]\nmethods: [supervised]\nupper_bound: null\n")
    b, v = load_config(base), load_config(variant)
    assert v.seeds == [3, 4] and v.methods == ["supervised"] and v.task == b.task and v.overrides == b.overrides
    assert [f.label for f in v.fractions] == [f.label for f in b.fractions if f.label != "full"]
    loop = tmp_path / "loop.yaml"
    loop.write_text("extends: loop.yaml\n")
    with pytest.raises(ConfigError, match="loops back"):
        load_config(loop)


def test_shipped_seed_studies_extend_the_quick_grids():
    root = Path(__file__).resolve().parents[1]
    old = os.getcwd()
    os.chdir(root)
    try:
        for task in ("covid", "chase"):
            quick = load_config(root / "configs" / f"benchmark_{task}_quick.yaml")
            seeds = load_config(root / "configs" / f"benchmark_{task}_quick_seeds.yaml")
            assert seeds.overrides == quick.overrides and seeds.seeds == [0, 1, 2]
            assert seeds.output_dir != quick.output_dir  # its own tables; never overwrites the quick grid's
            assert len(grid_config.enumerate_cells(seeds)) == 4 * 3
            # the longer-schedule study: the same cells, five times the iterations, nothing else changed
            long = load_config(root / "configs" / f"benchmark_{task}_long_seeds.yaml")
            assert [c.key for c in grid_config.enumerate_cells(long)] == [c.key for c in grid_config.enumerate_cells(seeds)]
            assert long.overrides["max_epochs"] == 5 * quick.overrides["max_epochs"]
            rest = {k: v for k, v in long.overrides.items() if k not in ("max_epochs", "val_interval")}
            assert rest == {k: v for k, v in quick.overrides.items() if k not in ("max_epochs", "val_interval")}
            assert long.output_dir not in (quick.output_dir, seeds.output_dir)
            # the seed study with the bundles' current loaders: train_sampling is the only change
            epoch = load_config(root / "configs" / f"benchmark_{task}_quick_seeds_epoch.yaml")
            assert [c.key for c in grid_config.enumerate_cells(epoch)] == [c.key for c in grid_config.enumerate_cells(seeds)]
            assert seeds.overrides["train_sampling"] == "pass" and epoch.overrides["train_sampling"] == "epoch"
            assert {**epoch.overrides, "train_sampling": "pass"} == seeds.overrides
            assert epoch.output_dir not in (quick.output_dir, seeds.output_dir, long.output_dir)
        # the GPU probe: the paper grid's cells, 10 of their 200 epochs, nothing else
        paper = load_config(root / "configs" / "benchmark_covid.yaml")
        probe = load_config(root / "configs" / "benchmark_covid_probe.yaml")
        assert [c.key for c in grid_config.enumerate_cells(probe)] == [c.key for c in grid_config.enumerate_cells(paper)]
        for c, c_paper in zip(grid_config.enumerate_cells(probe), grid_config.enumerate_cells(paper)):
            ov, ov_paper = probe.cell_overrides(c), paper.cell_overrides(c_paper)
            assert (ov.pop("max_epochs"), ov_paper.pop("max_epochs")) == (10, 200)
            assert ov.pop("output_dir") != ov_paper.pop("output_dir") and ov == ov_paper
        # the rare-class ablation: SupMix + SUFD cells of the long CT study, pasting consolidation too; nothing else
        rare = load_config(root / "configs" / "benchmark_covid_long_paste_rare.yaml")
        long = load_config(root / "configs" / "benchmark_covid_long_seeds.yaml")
        cells = grid_config.enumerate_cells(rare)
        assert [c.key for c in cells] == [c.key for c in grid_config.enumerate_cells(long) if c.method == "supmix_sufd"]
        for c, c_long in zip(cells, (c for c in grid_config.enumerate_cells(long) if c.method == "supmix_sufd")):
            ov, ov_long = rare.cell_overrides(c), long.cell_overrides(c_long)
            assert ov.pop("method_options") == {"supmix_classes": [1, 2]} and "method_options" not in ov_long
            assert ov.pop("output_dir") != ov_long.pop("output_dir") and ov == ov_long
    finally:
        os.chdir(old)


# ---------------------------------------------------------------------------------------------------------------
# projection of a grid's time
# ---------------------------------------------------------------------------------------------------------------

_TRAIN_DEFAULTS = {"max_epochs": 2, "epoch_length": 10, "network_name": "unet", "network_kwargs": {},
                   "image_size": [32, 32], "batch_size": 2, "unlabeled_batch_size": 2,
                   "device": "$torch.device('cpu')", "amp": False, "method_options": {}}
_STEP_S = {"supervised": 0.1, "classmix": 0.2, "supmix_sufd": 0.3}


def _projection_grid(tmp_path, finished: dict[str, tuple[float, float]], **extra):
    """A grid of 7 cells (3 methods x 1/8, 1/4 + supervised full, seed 0), 20 iterations each, with ``finished``
    cells' done.json written by hand: ``{"classmix/1/8": (train_s, eval_s)}``."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    extra.setdefault("overrides", {})  # the schedule comes from the bundle's train.json below
    path = _write_config(tmp_path, seeds=[0], method_overrides={}, **extra)
    (tmp_path / "bundle" / "train.json").write_text(json.dumps(_TRAIN_DEFAULTS))
    cfg = load_config(path)
    for c in grid_config.enumerate_cells(cfg):
        key = f"{c.method}/{c.fraction.label}"
        if key in finished:
            c.directory.mkdir(parents=True, exist_ok=True)
            train_s, eval_s = finished[key]
            (c.directory / grid_cells.DONE).write_text(json.dumps({
                "train_command": grid_cells.portable_command(cfg.train_command(c)), "train_s": train_s, "eval_s": eval_s,
                "metrics": {"miou": 0.5}}))
    report = {"settings": {"network": "unet", "image_size": 32}, "machine": "test",
              "results": [{"method": m, "s_per_iter": s} for m, s in _STEP_S.items()]}
    return cfg, report


def test_projection_reads_the_schedule_as_the_bundle_resolves_it(tmp_path):
    from medsemiseg.benchmark.projection import cell_schedule

    cfg, _ = _projection_grid(tmp_path, {}, overrides={"epoch_length": 7})
    sch = cell_schedule(cfg, grid_config.enumerate_cells(cfg)[0])
    assert sch["iterations"] == 2 * 7 and sch["device"] == "cpu" and sch["image_size"] == [32, 32]


def test_projection_splits_finished_cells_into_steps_and_overhead(tmp_path):
    """classmix 1/8 took 20 x (0.2 step + 0.05 overhead) + 1 s eval, supervised 1/8 20 x (0.1 + 0.02) + 0.5: the
    other cells of a method with finished cells take their measured mean; supmix_sufd (none finished) gets its step
    time plus the overhead of the finished cells of its kind (classmix's), not supervised's."""
    from medsemiseg.benchmark.projection import holdout_check, project_grid, projection_table

    cfg, report = _projection_grid(tmp_path, {"classmix/1/8": (5.0, 1.0), "supervised/1/8": (2.4, 0.5)})
    proj = project_grid(cfg, report)
    rows = {r["method"]: r for r in proj["rows"]}
    assert rows["supmix_sufd"]["projected_cell_s"] == pytest.approx(20 * (0.3 + 0.05) + 1.0)
    assert rows["supmix_sufd"]["basis"] == "overhead of classmix"
    assert rows["classmix"]["remaining_s"] == pytest.approx(6.0) and rows["classmix"]["finished"] == 1
    assert rows["supervised"]["remaining_s"] == pytest.approx(2 * 2.9)  # 1/4 and the full-label upper bound
    assert proj["finished_s"] == pytest.approx(8.9) and not proj["lower_bound"]
    assert proj["remaining_s"] == pytest.approx(2 * 8.0 + 6.0 + 2 * 2.9)
    # hold-out: each method from the other's cells only (here of the other kind)
    hold = {h["method"]: h for h in holdout_check(cfg, report)}
    assert hold["classmix"]["projected_s"] == pytest.approx(20 * (0.2 + 0.02) + 0.5)
    assert hold["classmix"]["error"] == pytest.approx(4.9 / 6.0 - 1)
    assert hold["supervised"]["projected_s"] == pytest.approx(20 * (0.1 + 0.05) + 1.0)
    md = projection_table(proj, list(hold.values()))
    assert "| supmix_sufd | 0.300 | 20 | 2 | 0 |" in md and "Hold-out check" in md


def test_projection_what_if_and_lower_bound(tmp_path):
    from medsemiseg.benchmark.projection import project_grid

    cfg, report = _projection_grid(tmp_path, {"classmix/1/8": (5.0, 1.0), "supervised/1/8": (2.4, 0.5)})
    # what-if: only classmix 1/8 counts as finished; supervised is projected from it (other kind), and the
    # grid's measured cells are there to compare
    proj = project_grid(cfg, report, keep=lambda c: c.method == "classmix" and c.fraction.label == "1/8")
    rows = {r["method"]: r for r in proj["rows"]}
    assert rows["supervised"]["projected_cell_s"] == pytest.approx(20 * (0.1 + 0.05) + 1.0)
    assert rows["supervised"]["basis"].endswith("(other kind)")
    assert proj["finished_cells"] == 1 and proj["measured_cells"] == 2 and proj["measured_s"] == pytest.approx(8.9)
    # nothing finished: training steps only, flagged as a lower bound
    cfg2, report2 = _projection_grid(tmp_path / "empty", {})
    proj2 = project_grid(cfg2, report2)
    assert proj2["lower_bound"] and proj2["remaining_s"] == pytest.approx(20 * (3 * 0.1 + 2 * 0.2 + 2 * 0.3))


def test_projection_refuses_what_it_cannot_project(tmp_path):
    from medsemiseg.benchmark.projection import cost_settings_for_grid, project_grid

    cfg, report = _projection_grid(tmp_path, {})
    report["results"] = [r for r in report["results"] if r["method"] != "classmix"]
    with pytest.raises(ConfigError, match="classmix"):
        project_grid(cfg, report)
    mixed = [{"methods": ["classmix"], "overrides": {"image_size": [64, 64]}}]
    cfg2, _ = _projection_grid(tmp_path / "mixed", {}, cell_overrides=mixed)
    with pytest.raises(ConfigError, match="image_size"):
        cost_settings_for_grid(cfg2)


@pytest.mark.parametrize("amp, expected", [("false", False), ("true", True), (0, False), (True, True)])
def test_projection_reads_the_amp_switch_as_the_bundle_does(tmp_path, amp, expected):
    # `--amp false` is how a grid may spell the switch (the bundle reads it as False): the step times must then be
    # measured without AMP, not with it because bool("false") is True
    from medsemiseg.benchmark.projection import cost_settings_for_grid

    cfg, _ = _projection_grid(tmp_path, {}, overrides={"amp": amp})
    assert cost_settings_for_grid(cfg).amp is expected


def test_projection_cost_settings_of_the_shipped_grids(monkeypatch):
    from medsemiseg.benchmark.projection import cost_settings_for_grid

    monkeypatch.chdir(Path(__file__).resolve().parents[1])  # the configs name the bundles relative to the repo root
    paper = cost_settings_for_grid(load_config("configs/benchmark_covid.yaml"))
    assert (paper.network, paper.image_size, paper.batch_size, paper.unlabeled_batch_size) == ("unet", 256, 8, 8)
    assert paper.device == "cuda" and paper.amp and paper.network_kwargs == {"features": [16, 32, 64, 128, 256, 16]}
    quick = cost_settings_for_grid(load_config("configs/benchmark_chase_quick.yaml"))
    assert (quick.image_size, quick.batch_size, quick.device, quick.amp, quick.threads) == (128, 2, "cpu", False, 1)


def test_projection_cli(tmp_path, capsys):
    from medsemiseg.benchmark.projection import main as projection_main

    cfg, report = _projection_grid(tmp_path, {"classmix/1/8": (5.0, 1.0)})
    cost = tmp_path / "cost.json"
    cost.write_text(json.dumps(report))
    out = tmp_path / "proj.json"
    assert projection_main([str(cfg.source), "--cost", str(cost), "--holdout", "--json", str(out),
                            "--finished-only", "classmix/1/8/seed0"]) == 0
    printed = capsys.readouterr().out
    assert "Whole grid" in printed and "What-if" in printed
    assert json.loads(out.read_text())["finished_cells"] == 1
    assert projection_main([str(cfg.source), "--cost", str(cost), "--finished-only", "nosuch/1/8/seed0"]) == 2
    assert "--finished-only: no cell" in capsys.readouterr().err


def _probe_of(cfg, tmp_path, finished: dict[str, tuple[float, float]], **overrides):
    """A probe grid that extends ``cfg``'s YAML and trains 1 of its 2 epochs (10 iterations), plus ``overrides``."""
    import yaml

    path = tmp_path / "probe.yaml"
    path.write_text(yaml.safe_dump({"extends": str(Path(cfg.source).resolve()), "output_dir": str(tmp_path / "probe_runs"),
                                    "cell_overrides": [{"overrides": {"max_epochs": 1, **overrides}}]}))
    probe = load_config(path)
    for c in grid_config.enumerate_cells(probe):
        if f"{c.method}/{c.fraction.label}" in finished:
            c.directory.mkdir(parents=True, exist_ok=True)
            train_s, eval_s = finished[f"{c.method}/{c.fraction.label}"]
            (c.directory / grid_cells.DONE).write_text(json.dumps({
                "train_command": grid_cells.portable_command(probe.train_command(c)), "train_s": train_s, "eval_s": eval_s,
                "metrics": {"miou": 0.5}}))
    return probe


def test_projection_from_a_probe_grid(tmp_path, capsys):
    """A probe cell (classmix 1/8, 10 of the grid's 20 iterations: 10 x (0.2 step + 0.05 overhead) + 1 s eval) gives
    the overhead of every cell of the grid, none of which counts as finished; a probe with other step settings is
    refused."""
    from medsemiseg.benchmark.projection import main as projection_main
    from medsemiseg.benchmark.projection import project_grid, projection_table

    cfg, report = _projection_grid(tmp_path, {})
    probe = _probe_of(cfg, tmp_path, {"classmix/1/8": (2.5, 1.0)})
    proj = project_grid(cfg, report, probe=probe)
    rows = {r["method"]: r for r in proj["rows"]}
    assert rows["classmix"]["projected_cell_s"] == pytest.approx(20 * (0.2 + 0.05) + 1.0)  # not the probe's 3.5 s
    assert rows["classmix"]["basis"] == "overhead of classmix (probe)" and rows["classmix"]["finished"] == 0
    assert rows["supmix_sufd"]["projected_cell_s"] == pytest.approx(20 * (0.3 + 0.05) + 1.0)
    assert rows["supervised"]["basis"] == "overhead of classmix (probe) (other kind)"
    assert proj["finished_cells"] == 0 and not proj["lower_bound"]
    assert proj["probe_cells"] == [{"method": "classmix", "iterations": 10, "train_s": 2.5, "eval_s": 1.0,
                                    "overhead_per_iter_s": pytest.approx(0.05), "fixed_s": 0.0,
                                    "changed_since": []}]
    assert "Probe (" in projection_table(proj) and "10 iterations" in projection_table(proj)
    # without the probe the same grid is a lower bound
    assert project_grid(cfg, report)["lower_bound"]
    # the CLI
    cost = tmp_path / "cost.json"
    cost.write_text(json.dumps(report))
    assert projection_main([str(cfg.source), "--cost", str(cost), "--probe", str(probe.source)]) == 0
    assert "overhead of classmix (probe)" in capsys.readouterr().out
    # the probe's cells kept elsewhere (docs/results/...): --probe-output-dir
    import shutil

    kept = tmp_path / "kept"
    shutil.move(str(tmp_path / "probe_runs"), kept)
    assert projection_main([str(cfg.source), "--cost", str(cost), "--probe", str(probe.source)]) == 0
    assert "lower bound" in capsys.readouterr().out
    assert projection_main([str(cfg.source), "--cost", str(cost), "--probe", str(probe.source),
                            "--probe-output-dir", str(kept)]) == 0
    assert "overhead of classmix (probe)" in capsys.readouterr().out
    assert projection_main([str(cfg.source), "--cost", str(cost), "--probe-output-dir", str(kept)]) == 2
    assert "--probe-output-dir needs --probe" in capsys.readouterr().err
    shutil.move(str(kept), tmp_path / "probe_runs")
    # a probe whose cells train another step (here: image size) cannot stand for the grid
    (tmp_path / "other").mkdir()
    other = _probe_of(cfg, tmp_path / "other", {"classmix/1/8": (2.5, 1.0)}, image_size=[64, 64])
    with pytest.raises(ConfigError, match="image_size"):
        project_grid(cfg, report, probe=other)


def test_projection_counts_a_probe_cells_start_up_once(tmp_path):
    """A finished probe cell whose train.log shows its epochs: the time outside them (imports, caching) is paid once
    per cell, not per iteration, so a 20-iteration grid cell is not charged it twice over. The validation
    evaluator's own "Epoch[1] Complete" line is not a training epoch. A log that does not cover every epoch (an
    earlier, resumed attempt) leaves the whole training time per iteration."""
    from medsemiseg.benchmark.projection import epochs_from_log, project_grid, projection_table

    log = ("$ python -m monai.bundle run training\n"
           "2026 - ignite.engine.engine.SupervisedEvaluator - INFO - Epoch[1] Complete. Time taken: 00:00:00.100\n"
           "2026 - ignite.engine.engine.SemiSupervisedTrainer - INFO - Epoch[1] Complete. Time taken: 00:00:02.300\n")
    assert epochs_from_log(log) == [2.3]
    cfg, report = _projection_grid(tmp_path, {})
    probe = _probe_of(cfg, tmp_path, {"classmix/1/8": (2.5, 1.0)})
    cell = next(c for c in grid_config.enumerate_cells(probe) if c.method == "classmix" and c.fraction.label == "1/8")
    (cell.directory / "train.log").write_text(log)
    proj = project_grid(cfg, report, probe=probe)
    rows = {r["method"]: r for r in proj["rows"]}
    # 10 iterations in 2.3 s: 0.03 s beyond classmix's 0.2 s step; 0.2 s of the 2.5 s once; evaluation 1 s
    assert rows["classmix"]["projected_cell_s"] == pytest.approx(20 * (0.2 + 0.03) + 0.2 + 1.0)
    assert rows["supmix_sufd"]["projected_cell_s"] == pytest.approx(20 * (0.3 + 0.03) + 0.2 + 1.0)
    (p,) = proj["probe_cells"]
    assert (p["overhead_per_iter_s"], p["fixed_s"]) == (pytest.approx(0.03), pytest.approx(0.2))
    assert "plus 0.2 s once" in projection_table(proj)
    # the last attempt's log has no completed epoch of the cell's one: nothing to split, as without a log
    (cell.directory / "train.log").write_text(log + "$ python -m monai.bundle run training\nresumed, done\n")
    (p,) = project_grid(cfg, report, probe=probe)["probe_cells"]
    assert (p["overhead_per_iter_s"], p["fixed_s"]) == (pytest.approx(0.05), 0.0)


def test_projection_from_a_probe_cell_stopped_early(tmp_path):
    """A probe cell killed before the end (the GPU lease ran out) still gives the overhead: its last run's completed
    epochs in train.log (an earlier failed attempt is not counted). No evaluation time is known, and the projection
    says so; a probe cell recorded with another command than the probe YAML now gives is flagged."""
    from medsemiseg.benchmark.projection import epochs_from_log, project_grid, projection_table

    assert epochs_from_log("$ a\nEpoch[1] Complete. Time taken: 00:00:09.000\n$ b\n"
                           "x Epoch[12] Complete. Time taken: 01:02:03.250\n") == [3723.25]
    cfg, report = _projection_grid(tmp_path, {})
    probe = _probe_of(cfg, tmp_path, {})
    cell = next(c for c in grid_config.enumerate_cells(probe) if c.method == "supmix_sufd" and c.fraction.label == "1/8")
    cell.directory.mkdir(parents=True)
    (cell.directory / "train.log").write_text(
        "$ python -m monai.bundle run training\nTraceback: No module named 'fire'\n"
        "$ python -m monai.bundle run training\n2026 - INFO - Epoch[1] Complete. Time taken: 00:00:03.500\n"
        "Epoch: 2/1, Iter: 3/10 -- loss: 0.4\n")
    (cell.directory / grid_cells.STARTED).write_text(json.dumps(
        {"train_command": grid_cells.portable_command(probe.train_command(cell)) + ["--num_workers", "4"]}))
    proj = project_grid(cfg, report, probe=probe)
    rows = {r["method"]: r for r in proj["rows"]}
    # 10 iterations in 3.5 s: 0.35 s each, 0.05 s beyond supmix_sufd's 0.3 s step; no evaluation time
    assert rows["supmix_sufd"]["projected_cell_s"] == pytest.approx(20 * (0.3 + 0.05))
    assert "evaluation time not measured" in rows["supmix_sufd"]["basis"]
    (p,) = proj["probe_cells"]
    assert (p["iterations"], p["eval_s"]) == (10, None) and p["changed_since"] == ["--num_workers 4 -> (not set)"]
    md = projection_table(proj)
    assert "stopped early: 10 iterations" in md and "WARNING: that probe cell ran with another command" in md
    # a log without a completed epoch gives nothing to project from
    (cell.directory / "train.log").write_text("$ python -m monai.bundle run training\nTraceback\n")
    assert project_grid(cfg, report, probe=probe)["lower_bound"]


def test_projection_warns_only_when_the_cost_report_settings_differ(tmp_path, capsys):
    import dataclasses

    from medsemiseg.benchmark.projection import cost_settings_for_grid
    from medsemiseg.benchmark.projection import main as projection_main

    cfg, report = _projection_grid(tmp_path, {}, overrides={"device": "cuda:1"})
    settings = dataclasses.asdict(cost_settings_for_grid(cfg))
    cost = tmp_path / "cost.json"
    cost.write_text(json.dumps({**report, "settings": {**settings, "device": "cuda:1"}}))  # `cost --device cuda:1`
    assert projection_main([str(cfg.source), "--cost", str(cost)]) == 0
    assert "WARNING" not in capsys.readouterr().err
    cost.write_text(json.dumps({**report, "settings": {**settings, "batch_size": 16}}))
    assert projection_main([str(cfg.source), "--cost", str(cost)]) == 0
    assert "batch_size: 16 vs 2" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------------
# audit fixes: staleness of unfinished cells, report safety, validation, attempts, interrupt, lock, cost/analysis
# ---------------------------------------------------------------------------------------------------------------

def _one_cell(tmp_path, **extra):
    kw = dict(seeds=[0], methods=["supervised"], fractions=["1/8"], upper_bound=None)
    kw.update(extra)
    return load_config(_write_config(tmp_path, **kw))


@pytest.mark.parametrize("state", ["trained", "failed", "partial"])
def test_unfinished_cell_run_with_other_settings_is_stale_not_resumed(tmp_path, monkeypatch, state):
    """A trained / failed / interrupted cell must not be resumed from a checkpoint made with other settings."""
    cfg = _one_cell(tmp_path, overrides={"max_epochs": 1, "batch_size": 4})
    cell = grid_config.enumerate_cells(cfg)[0]
    step = "evaluating" if state == "trained" else "training"
    monkeypatch.setenv("FAKE_FAIL", f"{step}:supervised/1/8/0")
    (res,), _ = _run(cfg)
    assert res.status == "failed"
    if state == "partial":  # a killed runner: no marker but started.json (and a checkpoint)
        (cell.directory / grid_cells.FAILED).unlink()
        (cell.directory / "checkpoint_epoch=4.pt").write_text("old weights")
    assert grid_cells.cell_status(cfg, cell) == state
    monkeypatch.delenv("FAKE_FAIL")
    cfg2 = _one_cell(tmp_path, overrides={"max_epochs": 1, "batch_size": 2})
    assert grid_cells.cell_status(cfg2, cell) == "stale"
    with pytest.raises(ConfigError, match="different command") as info:
        _run(cfg2)
    assert "--batch_size 4 -> 2" in str(info.value)  # the error says what changed
    (res2,), lines = _run(cfg2, rerun_stale=True)
    assert res2.status == "done" and any("moved to" in ln for ln in lines)
    assert (cell.directory.parent / "seed0.stale-1").is_dir()
    assert (cell.directory / "calls.txt").read_text().split() == ["training", "evaluating", "inferring"]
    assert not (cell.directory / "checkpoint_epoch=4.pt").exists()


def test_cells_written_before_the_new_markers_are_not_stale(tmp_path):
    """Old cells lack started.json / eval_command: unknown is not stale (existing grids stay finished)."""
    cfg = _one_cell(tmp_path)
    _run(cfg)
    cell = grid_config.enumerate_cells(cfg)[0]
    done = json.loads((cell.directory / grid_cells.DONE).read_text())
    del done["eval_command"]
    (cell.directory / grid_cells.DONE).write_text(json.dumps(done))
    (cell.directory / grid_cells.STARTED).unlink()
    assert grid_cells.cell_status(cfg, cell) == "done"
    old_partial = grid_config.enumerate_cells(_one_cell(tmp_path, seeds=[1]))[0]
    old_partial.directory.mkdir(parents=True)
    (old_partial.directory / "checkpoint_epoch=2.pt").write_text("x")
    assert grid_cells.cell_status(cfg, old_partial) == "partial"


def test_changed_evaluation_settings_make_a_cell_stale_and_re_evaluate_only(tmp_path):
    cfg = _one_cell(tmp_path)
    _run(cfg)
    cell = grid_config.enumerate_cells(cfg)[0]
    cfg2 = _one_cell(tmp_path, evaluate={"workflow": "evaluating", "config_file": "evaluate.json",
                                         "overrides": {"eval_batch": 4}})
    assert grid_cells.cell_status(cfg2, cell) == "stale"
    assert grid_cells.stale_changes(cfg2, cell) == ("evaluation", ["--eval_batch (not set) -> 4"])
    with pytest.raises(ConfigError, match="evaluation command"):
        _run(cfg2)
    (res,), _ = _run(cfg2, rerun_stale=True)
    assert res.status == "done" and grid_cells.cell_status(cfg2, cell) == "done"
    assert (cell.directory / "done.stale-1.json").is_file()  # the old result is kept, the model is not retrained
    assert (cell.directory / "calls.txt").read_text().split() == ["training", "evaluating", "inferring",
                                                                  "evaluating", "inferring"]


def test_command_diff_names_each_changed_argument():
    old = ["python", "-m", "x", "training", "--a", "1", "--b", "2", "--c", "3"]
    new = ["python", "-m", "x", "training", "--a", "1", "--b", "5", "--d", "4"]
    assert grid_cells.command_diff(old, new) == ["--b 2 -> 5", "--c 3 -> (not set)", "--d (not set) -> 4"]
    assert grid_cells.command_diff(old, old[:4] + ["--b", "2", "--a", "1", "--c", "3"]) == [
        "the same arguments in another order"]


@pytest.mark.integration
def test_report_only_refuses_stale_cells_and_keeps_the_last_report(tmp_path, capsys):
    path = _write_config(tmp_path, seeds=[0], methods=["supervised"], fractions=["1/8"], upper_bound=None)
    assert cli_main([str(path), "--no-progress"]) == 0
    md = tmp_path / "runs" / "chase" / "results.md"
    before = md.read_text()
    assert "| 1/8 | supervised |" in before
    _write_config(tmp_path, seeds=[0], methods=["supervised"], fractions=["1/8"], upper_bound=None,
                  overrides={"max_epochs": 3, "log_curves": True})
    capsys.readouterr()
    assert cli_main([str(path), "--report-only"]) == 2
    err = capsys.readouterr().err
    assert "different command" in err and "--max_epochs 1 -> 3" in err
    assert md.read_text() == before
    # a filtered run whose own cells are not stale still must not replace the table by one without the stale cells
    path2 = _write_config(tmp_path, seeds=[0], methods=["supervised", "classmix"], fractions=["1/8"],
                          upper_bound=None, overrides={"max_epochs": 3, "log_curves": True})
    assert cli_main([str(path2), "--no-progress", "--methods", "classmix"]) == 2
    assert md.read_text() == before


def test_cli_filters_must_match_the_grid(tmp_path, capsys):
    path = _write_config(tmp_path, seeds=[0], methods=["supervised", "fixmatch"], fractions=["1/8"])
    assert cli_main([str(path), "--dry-run", "--methods", "fixmach"]) == 2
    assert "--methods fixmach not in the grid; its values are supervised fixmatch" in capsys.readouterr().err
    assert cli_main([str(path), "--dry-run", "--fractions", "1/3"]) == 2
    assert "its values are 1/8 full" in capsys.readouterr().err
    assert cli_main([str(path), "--dry-run", "--seeds", "7"]) == 2
    assert cli_main([str(path), "--dry-run", "--methods", "fixmatch", "--fractions", "full"]) == 2
    assert "no cell of the grid matches" in capsys.readouterr().err
    assert cli_main([str(path), "--dry-run", "--methods", "fixmatch"]) == 0


def test_dry_run_report_only_writes_nothing(tmp_path):
    path = _write_config(tmp_path, seeds=[0], methods=["supervised"], fractions=["1/8"], upper_bound=None)
    assert cli_main([str(path), "--dry-run", "--report-only"]) == 0
    assert not (tmp_path / "runs").exists()


def test_override_keys_are_checked_against_the_bundle_config(tmp_path):
    keys = {"max_epochs": 10, "log_curves": False, "batch_size": 2, "train": {"checkpointer": {}}, "eval_batch": 1}
    path = _write_config(tmp_path, method_overrides={})
    (tmp_path / "bundle" / "train.json").write_text(json.dumps(keys))
    load_config(path)  # every key known
    bad = [({"overrides": {"max_epoch": 3}}, r"'overrides' key 'max_epoch' .* did you mean 'max_epochs'"),
           ({"method_overrides": {"classmix": {"bach_size": 3}}}, r"'method_overrides: classmix' key 'bach_size'"),
           ({"cell_overrides": [{"overrides": {"trian#checkpointer#n_saved": 3}}]},
            r"'trian#checkpointer#n_saved'.*'train'"),
           ({"evaluate": {"overrides": {"eval_bach": 3}}}, r"'evaluate: overrides' key 'eval_bach'")]
    for change, message in bad:
        p = _write_config(tmp_path, **{"method_overrides": {}, **change})
        (tmp_path / "bundle" / "train.json").write_text(json.dumps(keys))
        with pytest.raises(ConfigError, match=message) as info:
            load_config(p)
        assert str(p) in str(info.value)
    p = _write_config(tmp_path, method_overrides={}, cell_overrides=[{"overrides": {"train#checkpointer#n_saved": 3}}])
    (tmp_path / "bundle" / "train.json").write_text(json.dumps(keys))
    load_config(p)  # nested path: its first segment exists


@pytest.mark.integration
def test_failed_and_unfinished_cells_are_listed_under_the_table(tmp_path, monkeypatch, capsys):
    path = _write_config(tmp_path, seeds=[0], methods=["supervised", "fixmatch"], fractions=["1/8"],
                         upper_bound=None)
    monkeypatch.setenv("FAKE_FAIL", "training:fixmatch/1/8/0")
    assert cli_main([str(path), "--no-progress"]) == 1
    md = (tmp_path / "runs" / "chase" / "results.md").read_text()
    assert "Not in the table" in md and "failed: 1 cell(s): chase/fixmatch/1/8/seed0 (training, exit 3)" in md
    capsys.readouterr()
    assert cli_main([str(path), "--report-only"]) == 0
    assert "not in the table: failed: 1 cell(s): chase/fixmatch/1/8/seed0" in capsys.readouterr().out


def test_training_time_accumulates_over_attempts_and_feeds_the_projection(tmp_path, monkeypatch):
    cfg = _one_cell(tmp_path)
    cell = grid_config.enumerate_cells(cfg)[0]
    cmd = grid_cells.portable_command(cfg.train_command(cell))

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(grid, "_run_logged", interrupted)
    with pytest.raises(KeyboardInterrupt):
        grid.run_cell(cfg, cell)
    started = json.loads((cell.directory / grid_cells.STARTED).read_text())
    assert started["train_command"] == cmd
    assert started["attempts"][0]["outcome"] == "interrupted" and started["attempts"][0]["train_s"] is not None
    started["attempts"][0]["train_s"] = 100.0  # the interrupted attempt had trained for 100 s
    (cell.directory / grid_cells.STARTED).write_text(json.dumps(started))
    monkeypatch.undo()
    (res,), _ = _run(cfg)
    done = json.loads((cell.directory / grid_cells.DONE).read_text())
    assert res.status == "done" and 100.0 <= done["train_s"] < 160.0 and done["train_attempts"] == 2
    from medsemiseg.benchmark.projection import _finished_cells

    (tmp_path / "bundle" / "train.json").write_text(json.dumps(_TRAIN_DEFAULTS))
    (f,) = _finished_cells(cfg, {"supervised": 0.1}, grid_cells.iter_done(cfg))
    assert f.train_s == done["train_s"]


def test_a_killed_attempt_counts_its_seconds_up_to_its_last_output(tmp_path, monkeypatch):
    # a runner killed with SIGKILL never records its attempt's seconds; they used to count 0 in train_s
    import datetime as dt
    import os

    cfg = _one_cell(tmp_path)
    cell = grid_config.enumerate_cells(cfg)[0]
    cell.directory.mkdir(parents=True)
    t0 = dt.datetime.now().replace(microsecond=0) - dt.timedelta(seconds=600)
    started = {"train_command": grid_cells.portable_command(cfg.train_command(cell)),
               "attempts": [{"started_at": t0.isoformat(), "train_s": None, "outcome": "running"}]}
    (cell.directory / grid_cells.STARTED).write_text(json.dumps(started))
    log = cell.directory / "train.log"
    log.write_text("epoch 3 ...\n")
    os.utime(log, (t0.timestamp() + 250, t0.timestamp() + 250))  # its last output, 250 s in
    (res,), _ = _run(cfg)
    attempts = json.loads((cell.directory / grid_cells.STARTED).read_text())["attempts"]
    assert attempts[0]["train_s"] == pytest.approx(250.0) and attempts[0]["outcome"].startswith("killed")
    done = json.loads((cell.directory / grid_cells.DONE).read_text())
    assert res.status == "done" and 250.0 <= done["train_s"] < 310.0 and done["train_attempts"] == 2
    # unknown start (a record written by hand, or corrupted): still 0, not an error
    assert grid._seconds_until_last_output(log, None) is None and grid._attempts_s([{"train_s": None}]) == 0.0


def test_ctrl_c_stops_with_a_resume_hint_and_exit_130(tmp_path, monkeypatch, capsys):
    import medsemiseg.benchmark.__main__ as bench_main

    path = _write_config(tmp_path, seeds=[0], methods=["supervised"], fractions=["1/8"], upper_bound=None)

    def ctrl_c(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(bench_main, "run_grid", ctrl_c)
    assert cli_main([str(path), "--no-progress"]) == 130
    assert "interrupted: rerun the same command to resume (finished cells are kept)" in capsys.readouterr().err
    assert not (tmp_path / "runs" / "chase" / "runner.lock").exists()  # released


def test_runner_lock_refuses_a_live_runner_and_takes_over_a_dead_one(tmp_path, capsys):
    import socket
    import subprocess

    path = _write_config(tmp_path, seeds=[0], methods=["supervised"], fractions=["1/8"], upper_bound=None)
    lock = tmp_path / "runs" / "chase" / "runner.lock"
    lock.parent.mkdir(parents=True)
    live = os.getppid()
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": live, "since": "x"}))
    assert cli_main([str(path), "--no-progress"]) == 2
    assert f"pid {live}" in capsys.readouterr().err
    assert not (tmp_path / "runs" / "chase" / "supervised").exists()  # nothing ran
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": dead.pid, "since": "x"}))
    assert cli_main([str(path), "--no-progress"]) == 0
    assert not lock.exists()


def test_cost_in_process_hides_cpu_peak_memory_and_cuda_needs_a_gpu(capsys):
    from medsemiseg.benchmark.cost import cost_table
    from medsemiseg.benchmark.cost import main as cost_main

    r = {"method": "supervised", "s_per_iter": 0.1, "s_per_iter_q1": 0.1, "s_per_iter_q3": 0.1, "peak_mem_mb": 12.0,
         "flops_per_iter": 1e9, "flops_floor": 1e9, "measured_over_floor": 1.0, "floor_passes": "3F"}
    report = {"settings": {"task": "covid", "network": "unet", "image_size": 32, "batch_size": 2,
                           "unlabeled_batch_size": 2, "device": "cpu", "amp": False, "iters": 2, "warmup": 1},
              "machine": "m", "date": "d", "results": [r], "in_process": True}
    md = cost_table(report)
    assert "n/a (in-process)" in md and "| 12 |" not in md
    assert "| 12 |" in cost_table({**report, "in_process": False})
    import torch

    if not torch.cuda.is_available():
        assert cost_main(["--device", "cuda", "--methods", "supervised", "fixmatch"]) == 2
        err = capsys.readouterr().err
        assert err.count("no CUDA device") == 1 and "Traceback" not in err


def test_analysis_names_an_unknown_fraction_or_method(tmp_path, capsys):
    from medsemiseg.benchmark.analysis import main as analysis_main

    path = _write_config(tmp_path, seeds=[0], methods=["supervised"], fractions=["1/8"], upper_bound=None)
    assert analysis_main([str(path), "--fraction", "1/16"]) == 2
    assert "--fraction 1/16 is not in the grid" in capsys.readouterr().err
    assert analysis_main([str(path), "--methods", "classmix"]) == 2
    assert "its values are supervised" in capsys.readouterr().err


@pytest.mark.integration
def test_results_md_pairs_every_baseline_with_the_papers_method_too(tmp_path):
    cfg = load_config(_write_config(tmp_path, seeds=[0], methods=["supervised", "classmix", "supmix_sufd"]))
    res, _ = _run(cfg)
    assert all(r.status == "done" for r in res)
    results.write_tables(cfg)
    rows = {r["method"]: r for r in csv.DictReader(open(tmp_path / "runs" / "chase" / "results.csv"))
            if r["fraction"] == "1/8"}
    md = (tmp_path / "runs" / "chase" / "results.md").read_text()
    section = md[md.index("paired difference to supmix_sufd"):].split("###")[0]
    diff = 100 * (float(rows["classmix"]["miou"]) - float(rows["supmix_sufd"]["miou"]))
    assert f"| 1/8 | classmix | {diff:+.2f} |" in section
    assert "| supervised |" not in section and "| supmix_sufd |" not in section
