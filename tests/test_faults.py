"""Fault injection: each case of issue 28 ends recovered (with a log line saying how) or refused (one message naming
the file or setting and the fix).

1. a missing or unusable ``models/model.pt`` on resume is rebuilt from the restored state;
2. resuming on other data (data set, split, fraction, image / patch size, intensity) is refused unless
   ``--allow_changed_data true``, which run.json then records;
3. a full disk (a patched writer raising ``OSError(ENOSPC)``, also midway) names the file and the space needed, and
   leaves no 0-byte or temporary file and the previous file intact -- the bundles' files, the benchmark grid's
   (markers, tables, figures, the README's table) and the MONAI Label app's; a built-in data set whose build was
   killed, or which an older version wrote, is built again;
4. a ``run.json`` that is not readable JSON is refused naming the file;
5. bit flips inside a checkpoint are found by its checksums, and resume falls back to the previous checkpoint;
6. a lock left by a process that is gone (another host, a reused pid) is taken over once its heartbeat is stale;
7. the smaller items (a refused malicious pickle, a killed DataLoader worker).

The bundle cases train with ``test_bundles``' tiny settings (64x64 images, two iterations per epoch) and carry the
``integration`` marker.
"""

from __future__ import annotations

import errno
import io
import json
import os
import time
from pathlib import Path

import pytest
import torch

from medsemiseg.atomic_io import DiskFullError, atomic_write_text
from medsemiseg.checkpoint_io import CheckpointReadError, newest_loadable_checkpoint, read_checkpoint
from test_bundles import TINY, _messages, cache_dir, workflow  # noqa: F401 (a fixture)

FULL = OSError(errno.ENOSPC, "No space left on device")


def _files(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in folder.iterdir() if p.is_file()} if folder.is_dir() else {}


def _flip_bytes(path: Path, start: int, count: int = 4096) -> None:
    data = bytearray(path.read_bytes())
    for i in range(start, min(start + count, len(data))):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def _tensor_offset(path: Path) -> int:
    """Where the first weight tensor's bytes lie in a ``torch.save`` archive (inside a record, not its index)."""
    import zipfile

    with zipfile.ZipFile(path) as z:
        info = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
        return info.header_offset + 30 + len(info.filename.encode()) + len(info.extra) + 64


# ------------------------------------------------------------------------------------------- 5. bit flips


def test_bit_flips_in_a_checkpoint_are_found_and_resume_falls_back(tmp_path):
    for epoch in (1, 2):
        torch.save({"trainer": {"epoch": epoch}, "model": {"w": torch.randn(64, 64)}},
                   tmp_path / f"checkpoint_epoch={epoch}.pt")
    newest = tmp_path / "checkpoint_epoch=2.pt"
    _flip_bytes(newest, _tensor_offset(newest))
    assert torch.load(newest, weights_only=True)["model"]["w"].shape == (64, 64)  # PyTorch alone loads it
    with pytest.raises(CheckpointReadError, match="fails its CRC-32 checksum"):
        read_checkpoint(newest)
    found = newest_loadable_checkpoint(tmp_path)
    assert found.path.name == "checkpoint_epoch=1.pt"
    assert [e.path.name for e in found.skipped] == ["checkpoint_epoch=2.pt"]
    assert "damaged" in found.skipped[0].reason


def test_a_pickle_that_runs_code_is_refused_as_not_plain_weights(tmp_path):
    class Payload:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    path = tmp_path / "model.pt"
    torch.save({"w": Payload()}, path)
    with pytest.raises(CheckpointReadError) as info:
        read_checkpoint(path)
    assert "not a plain weights file" in info.value.reason and "system" in info.value.reason
    assert "weights_only" not in str(info.value) and "damaged" not in str(info.value)


@pytest.mark.integration
def test_resume_falls_back_past_a_checkpoint_with_flipped_bytes(tmp_path, cache_dir, caplog):
    """4 KB of flipped bytes inside the newest checkpoint used to load as good (one weight 3.1e5) and train on."""
    ov = {**TINY, "output_dir": str(tmp_path), "cache_dir": cache_dir, "method": "supervised", "val_interval": 5}
    workflow("covid", "training", **{**ov, "max_epochs": 2}).run()
    newest = tmp_path / "models" / "checkpoint_epoch=2.pt"
    _flip_bytes(newest, _tensor_offset(newest))
    with caplog.at_level("WARNING"):
        wf = workflow("covid", "training", **{**ov, "max_epochs": 3, "resume": True})
        checkpointer = wf.parser.get_parsed_content("train#checkpointer")
        wf.run()
    assert checkpointer.loaded_from.endswith("checkpoint_epoch=1.pt")
    assert "skipped checkpoint_epoch=2.pt, damaged (its record" in caplog.text and "CRC-32" in caplog.text
    assert read_checkpoint(newest)["trainer"]["iteration"] == 2 * TINY["epoch_length"]  # rewritten by this run


# ------------------------------------------------------------------------------------------- 3. full disk


def _full_on_real_files(real):
    """A writer that fails as a full disk does on files, but writes normally into anything else (the size probe)."""

    def write(obj, f, *args, **kwargs):
        if isinstance(f, io.BufferedWriter):
            f.write(b"\0" * 10)
            raise FULL
        return real(obj, f, *args, **kwargs)

    return write


def test_a_full_disk_names_the_file_and_the_space_it_needs(tmp_path):
    from medsemiseg.checkpoint_io import atomic_save

    with pytest.raises(DiskFullError) as info:
        atomic_save({"w": torch.zeros(64, 1024)}, tmp_path / "checkpoint_epoch=3.pt", _full_on_real_files(torch.save))
    message = str(info.value)
    assert "to write checkpoint_epoch=3.pt (it needs 25" in message and "KB" in message and "free" in message
    assert info.value.errno == errno.ENOSPC and info.value.needed > 64 * 1024 * 4
    assert _files(tmp_path) == {}  # no 0-byte file, no temporary file


def test_a_full_disk_while_writing_a_report_or_a_label_map_leaves_nothing_half_written(tmp_path, monkeypatch):
    import numpy as np

    from medsemiseg.bundle.writer import PredictionWriter
    from medsemiseg.metrics.report import write_report

    real_open = open

    def full_open(file, mode="r", *args, **kwargs):
        f = real_open(file, mode, *args, **kwargs)
        if "x" in mode or "w" in mode:
            def write(_data):
                raise FULL

            f.write = write
        return f

    report = {"classes": ["bg", "fg"], "per_class": {"bg": {"iou": 1.0}, "fg": {"iou": 0.5}}, "mIoU": 0.75}
    write_report(report, tmp_path / "metrics.json", tmp_path / "metrics.csv")
    before = {n: (tmp_path / n).read_bytes() for n in ("metrics.json", "metrics.csv")}
    monkeypatch.setattr("builtins.open", full_open)
    with pytest.raises(DiskFullError, match=r"to write metrics\.json \(it needs \d+ bytes.*previous metrics\.json is "
                                            r"intact"):
        write_report(report, tmp_path / "metrics.json", tmp_path / "metrics.csv", overwrite=True)
    writer = PredictionWriter(tmp_path / "outputs")
    with pytest.raises(DiskFullError, match=r"to write case_seg\.nii\.gz"):
        writer._save("case", np.zeros((8, 8), np.int16), np.eye(4), png=False)
    monkeypatch.undo()
    assert {n: (tmp_path / n).read_bytes() for n in before} == before
    assert sorted(_files(tmp_path)) == ["metrics.csv", "metrics.json"]
    assert _files(tmp_path / "outputs") == {}  # no 0-byte label map


def test_atomic_text_write_replaces_whole(tmp_path):
    target = tmp_path / "run.json"
    atomic_write_text(target, "{}\n")
    atomic_write_text(target, json.dumps({"a": 1}))
    assert json.loads(target.read_text()) == {"a": 1} and _files(tmp_path) == {"run.json": 8}


# ------------------------------------------------------------------------------------- 1. model.pt on resume


@pytest.mark.integration
@pytest.mark.parametrize("damage", ["missing", "text"])
def test_resume_rebuilds_a_missing_or_unusable_best_model(tmp_path, cache_dir, caplog, damage):
    """``rm models/model.pt`` (or a text file in its place), then ``--resume true`` on a finished run: the restored
    network is re-evaluated and written as model.pt, and the log says so."""
    ov = {**TINY, "output_dir": str(tmp_path), "cache_dir": cache_dir, "method": "supervised", "val_interval": 1}
    workflow("covid", "training", **ov).run()
    model = tmp_path / "models" / "model.pt"
    weights = torch.load(model, weights_only=True)
    if damage == "missing":
        model.unlink()
    else:
        model.write_text("not a model\n")
    with caplog.at_level("WARNING"):
        workflow("covid", "training", **{**ov, "resume": True}).run()
    rebuilt = read_checkpoint(model)
    assert rebuilt.keys() == weights.keys()
    assert all(torch.equal(rebuilt[k], weights[k]) for k in weights)  # epoch 1's state is the best model's
    said = [r.getMessage() for r in caplog.records if "rebuilt it from the restored epoch-1" in r.getMessage()]
    assert len(said) == 1 and str(model) in said[0]
    assert ("was missing" if damage == "missing" else "not a PyTorch checkpoint") in said[0]


# ------------------------------------------------------------------------------------- 2. other data on resume


@pytest.mark.integration
def test_resume_on_other_data_is_refused_unless_allowed_and_then_recorded(tmp_path, cache_dir, caplog):
    """``--resume true`` with another ``--labeled_fraction`` and ``--image_size`` used to continue silently and
    overwrite run.json with the new data set; now it stops naming each difference and the flag, and with
    ``--allow_changed_data true`` it continues and run.json keeps both."""
    ov = {**TINY, "output_dir": str(tmp_path), "cache_dir": cache_dir, "method": "supervised", "val_interval": 5}
    workflow("covid", "training", **ov).run()
    run_file = tmp_path / "models" / "run.json"
    first = json.loads(run_file.read_text())
    assert first["data_sizes"]["labeled"] > 0 and len(first["datalist_sha256"]) == 64
    other = {**ov, "max_epochs": 2, "resume": True, "labeled_fraction": "1/4", "image_size": [72, 72]}
    with pytest.raises(Exception) as info:
        workflow("covid", "training", **other).parser.get_parsed_content("train#trainer")
    message = next(m for m in _messages(info.value) if "trained on other data" in m)
    assert "checkpoint_epoch=1.pt" in message and "image_size: checkpoint [64, 64], this run [72, 72]" in message
    assert "split sizes" in message and "--allow_changed_data true" in message and '--image_size "[64, 64]"' in message
    assert json.loads(run_file.read_text()) == first  # the record still says what the model saw

    with caplog.at_level("WARNING"):
        wf = workflow("covid", "training", **other, allow_changed_data=True)
        wf.run()
    assert wf.parser.get_parsed_content("train#trainer").state.epoch == 2
    record = json.loads(run_file.read_text())
    change, = record["data_changes"]
    assert change["epoch"] == 1 and change["before"]["image_size"] == [64, 64] and change["after"]["image_size"] == [72, 72]
    assert change["before"]["data_sizes"] == first["data_sizes"] and record["image_size"] == [72, 72]
    assert "recorded in run.json under data_changes" in caplog.text
    # the next resume on the new data needs no flag, and keeps the history
    workflow("covid", "training", **{**other, "max_epochs": 3}).run()
    assert json.loads(run_file.read_text())["data_changes"] == record["data_changes"]


# ------------------------------------------------------------------------------------------- 6. foreign locks


def _foreign_lock(path: Path, age_s: float, **content) -> None:
    path.write_text(json.dumps({"since": "2026-01-01T00:00:00", **content}))
    then = time.time() - age_s
    os.utime(path, (then, then))


def test_a_lock_whose_heartbeat_stopped_is_taken_over_whatever_its_host(tmp_path, caplog):
    from medsemiseg import runlock

    lock = tmp_path / ".training.lock"
    _foreign_lock(lock, age_s=301, host="container-before-restart", pid=1, heartbeat_s=30, stale_after_s=300)
    with caplog.at_level("WARNING", logger="medsemiseg.runlock"):
        me = runlock.acquire(lock, heartbeat_s=30)
    assert runlock.holder(lock) == me and me["stale_after_s"] == 300
    assert "took over the lock" in caplog.text and "container-before-restart" in caplog.text
    assert "heartbeat stopped 30" in caplog.text and "limit is 300 s" in caplog.text


def test_a_live_foreign_lock_is_still_held(tmp_path):
    from medsemiseg import runlock

    lock = tmp_path / ".training.lock"
    _foreign_lock(lock, age_s=10, host="other-host", pid=1, heartbeat_s=30, stale_after_s=300)
    with pytest.raises(runlock.LockHeld):
        runlock.acquire(lock)
    _foreign_lock(lock, age_s=3600, host="other-host", pid=1)  # no heartbeat declared: its life cannot be judged
    with pytest.raises(runlock.LockHeld):
        runlock.acquire(lock)


def test_a_lock_of_a_reused_pid_on_this_host_is_taken_over(tmp_path, caplog):
    """A container restart gives the old lock's pid to another, live process: its start time tells them apart."""
    import socket

    from medsemiseg import runlock

    lock = tmp_path / ".training.lock"
    parent = os.getppid()
    started = runlock._pid_start(parent)
    if started is None:
        pytest.skip("this system does not say when a process started (no /proc)")
    _foreign_lock(lock, age_s=1, host=socket.gethostname(), pid=parent, pid_start=started + 1)
    with caplog.at_level("WARNING", logger="medsemiseg.runlock"):
        runlock.acquire(lock)
    assert "was reused" in caplog.text
    _foreign_lock(lock, age_s=1, host=socket.gethostname(), pid=parent, pid_start=started)  # the same process: held
    with pytest.raises(runlock.LockHeld):
        runlock.acquire(lock)


def test_the_heartbeat_keeps_a_live_lock_fresh(tmp_path):
    from medsemiseg import runlock

    lock = tmp_path / ".training.lock"
    me = runlock.acquire(lock, heartbeat_s=30)
    old = time.time() - 1000
    os.utime(lock, (old, old))
    beat = runlock.Heartbeat(lock, me)
    assert beat.beat() and time.time() - lock.stat().st_mtime < 60
    assert runlock.stale_reason(lock, runlock.holder(lock)) is None
    lock.write_text(json.dumps({**me, "since": "another run"}))
    assert not beat.beat()  # no longer ours: left alone


# ------------------------------------------------------------------------------------------- 4. a bad run.json


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", b"\xff\xfe\x00"])
def test_a_damaged_run_json_is_refused_naming_it_not_ignored(tmp_path, content):
    """Evaluation and inference used to fall back to the HU window and drop the out-of-distribution check."""
    from medsemiseg.bundle.checkpoints import check_trained_on
    from medsemiseg.runrecord import RunRecordError
    from medsemiseg.data.declared import declared_value
    from medsemiseg.handlers import InputDistributionCheck

    models = tmp_path / "models"
    models.mkdir()
    run = models / "run.json"
    run.write_bytes(content if isinstance(content, bytes) else content.encode())
    ckpt = models / "model.pt"
    scan = tmp_path / "scan.nii.gz"  # an inference input that declares nothing: the record would be asked
    scan.write_bytes(b"")
    checks = [
        lambda: declared_value(str(scan), "intensity", None, str(ckpt)),
        lambda: check_trained_on(ckpt, None, "evaluating"),
        lambda: InputDistributionCheck(ckpt)._load_reference(),
    ]
    for check in checks:
        with pytest.raises(RunRecordError) as info:
            check()
        assert str(run) in str(info.value) and "delete it" in str(info.value)
    run.unlink()  # no record at all (weights from elsewhere): nothing to refuse
    assert declared_value(str(scan), "intensity", None, str(ckpt)) is None
    check_trained_on(ckpt, None, "evaluating")


# ------------------------------------------------------------------------------------------- 7. smaller items


def _pictures(src: Path, n: int = 6) -> Path:
    import numpy as np
    from PIL import Image

    for i in range(n):
        rng = np.random.default_rng(i)
        (src / "labels").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (8, 9), dtype=np.uint8)).save(src / f"p{i}.png")
        Image.fromarray(rng.integers(0, 2, (8, 9), dtype=np.uint8)).save(src / "labels" / f"p{i}.png")
    return src


def test_prepare_warns_on_a_dangling_link_and_on_another_labelled_subset(tmp_path):
    from medsemiseg.data.prepare import prepare_folder

    src = _pictures(tmp_path / "src")
    (src / "p9.png").symlink_to(tmp_path / "gone.png")
    out = tmp_path / "out"
    with pytest.warns(UserWarning, match=r"p9\.png is a symbolic link to .*gone\.png, which does not exist"):
        prepare_folder(src, out, labeled_fraction="1/2", test_fraction=1, progress=False)
    with pytest.warns(UserWarning, match=r"another labelled subset \(seed 0 -> 3\).*--allow_changed_data"):
        prepare_folder(src, out, labeled_fraction="1/2", test_fraction=1, seed=3, progress=False)


def test_a_killed_dataloader_worker_ends_with_the_fix():
    from medsemiseg import cli_errors

    try:
        try:
            raise RuntimeError("DataLoader worker (pid 4242) is killed by signal: Killed. ")
        except RuntimeError as e:
            raise RuntimeError("DataLoader worker (pid(s) 4242) exited unexpectedly") from e
    except RuntimeError as e:
        line = cli_errors.last_line(e)
    assert line.startswith("error: RuntimeError: DataLoader worker (pid 4242) is killed by signal")
    assert "--num_workers 0" in line and "--resume true" in line


def test_the_run_summary_is_the_last_line_of_a_finished_command(caplog):
    from ignite.engine import Engine

    from medsemiseg.handlers import RunSummary

    engine = Engine(lambda e, b: None)
    RunSummary(label="training").attach(engine)
    with caplog.at_level("INFO"):
        engine.run([0], max_epochs=1)
    messages = [r.getMessage() for r in caplog.records]
    assert messages[-1].startswith("training:") and not any("Engine run finished" in m for m in messages)


def test_a_datalist_without_unlabelled_and_validation_splits_is_named_as_such(tmp_path):
    from types import SimpleNamespace

    from medsemiseg.bundle.datalists import unlabeled_loader_for
    from medsemiseg.bundle.settings import BundleConfigError

    datalist = tmp_path / "datalist.json"
    datalist.write_text(json.dumps({"labeled": [{"image": "a.png", "label": "a_mask.png"}], "test": []}))
    method, empty = SimpleNamespace(requires_unlabeled=True), SimpleNamespace(dataset=[])
    with pytest.raises(BundleConfigError) as info:
        unlabeled_loader_for(method, empty, str(datalist))
    assert f"datalist {datalist} has no 'unlabeled' / 'validation' splits" in str(info.value)
    assert "is empty" not in str(info.value)
    datalist.write_text(json.dumps({"labeled": [{}], "unlabeled": [], "validation": [{}]}))
    with pytest.raises(BundleConfigError, match="'unlabeled' split is empty"):
        unlabeled_loader_for(method, empty, str(datalist))


def test_the_tensorboard_writer_opens_its_file_only_when_it_writes(tmp_path):
    """A training refused because another holds the folder builds its writer before the lock is checked: it must
    leave no event file in the other run's logs."""
    from medsemiseg.bundle.tensorboard import DeferredSummaryWriter

    writer = DeferredSummaryWriter(log_dir=str(tmp_path / "logs"))
    writer.flush()
    writer.close()
    assert not (tmp_path / "logs").exists() or list((tmp_path / "logs").iterdir()) == []
    writer = DeferredSummaryWriter(log_dir=str(tmp_path / "logs"))
    writer.add_scalar("loss", 1.0, 1)
    writer.close()
    assert [p.name.startswith("events.out.tfevents.") for p in (tmp_path / "logs").iterdir()] == [True]


# ------------------------------- 3. full disk and kills: the benchmark grid's, MONAI Label's and the built-in data's files


def _full_after(limit: int):
    """An ``open`` whose files opened for writing take ``limit`` bytes, then fail as a full disk does (midway)."""
    real_open = open

    def full_open(file, mode="r", *args, **kwargs):
        f = real_open(file, mode, *args, **kwargs)
        if "x" in mode or "w" in mode:
            real_write, taken = f.write, [0]

            def write(data):
                n = memoryview(data).nbytes if not isinstance(data, str) else len(data)
                if taken[0] + n > limit:
                    raise FULL
                taken[0] += n
                return real_write(data)

            f.write = write
        return f

    return full_open


def _figure(i: int):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [1, i])
    return fig


BENCHMARK_WRITES = {
    "results.csv": lambda path, i: __import__("medsemiseg.benchmark.results", fromlist=["x"]).write_csv(
        [{"method": "supervised", "miou": 0.5 + i, "cell": "chase/1-8/seed0/supervised"},
         {"method": "supmix", "miou": 0.6, "cell": "chase/1-8/seed0/supmix"}], path),
    "done.json": lambda path, i: __import__("medsemiseg.benchmark.grid", fromlist=["x"])._write_json(
        path, {"metrics": {"miou": 0.5 + i}, "filler": "x" * 300}),
    "miou_vs_fraction.png": lambda path, i: __import__("medsemiseg.benchmark.plots", fromlist=["x"])._save(
        _figure(i), path),
}


@pytest.mark.parametrize("name", sorted(BENCHMARK_WRITES))
def test_a_full_disk_midway_through_a_benchmark_file_keeps_the_previous_one_and_names_it(tmp_path, monkeypatch, name):
    write = BENCHMARK_WRITES[name]
    target = tmp_path / name
    write(target, 0)
    before = target.read_bytes()
    assert len(before) > 64
    monkeypatch.setattr("builtins.open", _full_after(64))  # the first 64 bytes go to disk, then the disk is full
    with pytest.raises(DiskFullError) as info:
        write(target, 1)
    monkeypatch.undo()
    assert f"to write {name} (" in str(info.value) and f"the previous {name} is intact" in str(info.value)
    assert str(info.value).splitlines()[-1].endswith("and run the command again.")
    assert target.read_bytes() == before
    assert sorted(_files(tmp_path)) == [name]  # no temporary file left
    write(target, 1)  # with space again it is replaced whole
    assert target.read_bytes() != before and sorted(_files(tmp_path)) == [name]


def test_the_readme_table_on_a_full_disk_keeps_the_readme_and_names_it(tmp_path, monkeypatch, capsys):
    from medsemiseg.benchmark.readme_table import BEGIN, END, main
    from test_readme_table import _grids

    root = _grids(tmp_path, drive={"supervised": ("70.00 ± 1.00", "")}, covid={"supervised": ("30.00 ± 1.00", "")})
    readme = root / "README.md"
    readme.write_text(f"# x\n\n{BEGIN}\n| an old table |\n{END}\n\n" + "more text\n" * 20)
    before = readme.read_bytes()
    monkeypatch.setattr("builtins.open", _full_after(16))
    assert main(["--root", str(root), "--write"]) == 2
    monkeypatch.undo()
    err = capsys.readouterr().err.strip().splitlines()
    assert "to write README.md" in err[-1] and "previous README.md is intact" in err[-1]
    assert readme.read_bytes() == before and not list(root.glob(".README.md.*"))


@pytest.mark.integration
def test_the_benchmark_report_on_a_full_disk_ends_on_one_line_naming_the_file(tmp_path, monkeypatch, capsys):
    from medsemiseg.benchmark.__main__ import main as cli_main
    from test_benchmark import _write_config

    path = _write_config(tmp_path, seeds=[0], methods=["supervised"], fractions=["1/8"], upper_bound=None)
    assert cli_main([str(path), "--no-progress"]) == 0
    out = tmp_path / "runs" / "chase"
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert {"results.csv", "results.md"} <= set(before)
    capsys.readouterr()
    monkeypatch.setattr("builtins.open", _full_after(32))
    assert cli_main([str(path), "--report-only"]) == 1
    monkeypatch.undo()
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("error: no space left on the device of") and "to write results.csv" in last
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before  # nothing half-written


def test_monai_labels_train_stats_and_model_copy_on_a_full_disk_keep_the_previous_files(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from medsemiseg.atomic_io import atomic_copy
    from medsemiseg.handlers import TrainStatsWriter

    stats = tmp_path / "train_stats.json"
    writer = TrainStatsWriter(stats)
    engine = SimpleNamespace(state=SimpleNamespace(epoch=1, max_epochs=4, best_metric=0.5, best_metric_epoch=1),
                             key_metric_name="val_mean_iou")
    writer._write(engine, "running")
    before = stats.read_bytes()
    served = tmp_path / "served.pt"
    served.write_bytes(b"w" * 4096)
    atomic_copy(served, tmp_path / "pretrained.pt")
    monkeypatch.setattr("builtins.open", _full_after(8))
    engine.state.epoch = 2
    with pytest.raises(DiskFullError, match=r"to write train_stats\.json .*previous train_stats\.json is intact"):
        writer._write(engine, "running")
    with pytest.raises(DiskFullError, match=r"to write pretrained\.pt \(it needs 4\.0 KB"):
        atomic_copy(served, tmp_path / "pretrained.pt")
    monkeypatch.undo()
    assert stats.read_bytes() == before and json.loads(before)["epoch"] == 1
    assert (tmp_path / "pretrained.pt").read_bytes() == served.read_bytes()
    assert sorted(_files(tmp_path)) == ["pretrained.pt", "served.pt", "train_stats.json"]


SMALL_CHASE = {"n_images": 8, "size": (48, 50)}


def _dead_pid() -> int:
    import subprocess
    import sys

    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_a_built_in_data_set_whose_build_was_killed_is_built_again(tmp_path, monkeypatch, caplog):
    """A kill mid-build leaves the hidden build folder and nothing under the data set's name; the next run removes
    that folder (its process is gone) and builds the set whole."""
    import socket

    import medsemiseg.data.builtin as builtin

    real_prepare = builtin.prepare_chase

    def killed_midway(raw, out, **kwargs):
        real_prepare(raw, out, **kwargs)  # half the folder is written ...
        raise KeyboardInterrupt  # ... when the process is stopped

    monkeypatch.setattr(builtin, "prepare_chase", killed_midway)
    monkeypatch.setattr(builtin.shutil, "rmtree", lambda *a, **k: None)  # a kill runs no clean-up
    with pytest.raises(KeyboardInterrupt):
        builtin.ensure_synthetic_datalist("chase", tmp_path, "1/4", **SMALL_CHASE)
    monkeypatch.undo()
    task_dir = builtin.synthetic_task_dir("chase", tmp_path, **SMALL_CHASE)
    [left] = [p for p in tmp_path.iterdir()]
    assert not task_dir.exists() and left.name.startswith(f".{task_dir.name}.tmp-") and (left / "pool.json").exists()
    # as a stopped process's folder would be named
    left.rename(task_dir.with_name(f".{task_dir.name}.tmp-{socket.gethostname()}-{_dead_pid()}"))
    with caplog.at_level("INFO", logger="medsemiseg.data.builtin"):
        path = builtin.ensure_synthetic_datalist("chase", tmp_path, "1/4", **SMALL_CHASE)
    assert "the unfinished build of a run that was stopped" in caplog.text
    assert [p.name for p in tmp_path.iterdir()] == [task_dir.name]  # the leftover is gone
    assert builtin.incomplete_reason(task_dir) is None and json.loads(path.read_text())["labeled"]


@pytest.mark.parametrize("damage", ["no marker", "truncated", "missing"])
def test_an_incomplete_built_in_data_set_is_not_used_but_built_again(tmp_path, caplog, damage):
    """A folder an older version wrote (no complete.json) or one with a file cut short or gone is logged, set aside
    and built again; the new datalist is the same as the old one (a resumed training sees the same data)."""
    import medsemiseg.data.builtin as builtin

    path = builtin.ensure_synthetic_datalist("chase", tmp_path, "1/4", **SMALL_CHASE)
    task_dir = path.parent
    before = path.read_bytes()
    image = sorted((task_dir / "images").iterdir())[0]
    if damage == "no marker":
        (task_dir / builtin.COMPLETE_FILE).unlink()
        reason = "it has no complete.json"
    elif damage == "truncated":
        image.write_bytes(image.read_bytes()[:100])
        reason = f"images/{image.name} has 100 bytes, not the"
    else:
        image.unlink()
        reason = f"images/{image.name} is missing"
    assert reason in builtin.incomplete_reason(task_dir)
    with caplog.at_level("WARNING", logger="medsemiseg.data.builtin"):
        again = builtin.ensure_synthetic_datalist("chase", tmp_path, "1/4", **SMALL_CHASE)
    assert f"{task_dir}: not a complete built-in chase data set ({reason}" in caplog.text
    assert again == path and builtin.incomplete_reason(task_dir) is None and path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [task_dir.name]  # nothing set aside is left


KILL_MIDWAY = """
import os, sys
import medsemiseg.data.builtin as builtin
real = builtin.prepare_chase
def killed(raw, out, **kwargs):
    real(raw, out, **kwargs)
    os._exit(137)  # SIGKILL's exit status: no clean-up, no finally
builtin.prepare_chase = killed
builtin.ensure_synthetic_datalist("chase", sys.argv[1], "1/4", n_images=8, size=(48, 50))
"""


@pytest.mark.integration
def test_a_built_in_data_set_build_killed_in_another_process_is_built_again(tmp_path):
    import subprocess
    import sys

    import medsemiseg.data.builtin as builtin

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                                        os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", KILL_MIDWAY, str(tmp_path)], env=env, capture_output=True, text=True)
    assert done.returncode == 137, done.stderr
    task_dir = builtin.synthetic_task_dir("chase", tmp_path, **SMALL_CHASE)
    [left] = list(tmp_path.iterdir())
    assert not task_dir.exists() and left.name.startswith(f".{task_dir.name}.tmp-")
    path = builtin.ensure_synthetic_datalist("chase", tmp_path, "1/4", **SMALL_CHASE)
    assert [p.name for p in tmp_path.iterdir()] == [task_dir.name] and builtin.incomplete_reason(task_dir) is None
    assert json.loads(path.read_text())["labeled"]
