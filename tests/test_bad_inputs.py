"""The bad-input corpus: every command refuses bad input with one clear last line, and loses nothing.

One parametrised test per path -- ``python -m medsemiseg.prepare``, and the bundles' ``training``, ``evaluating`` and
``inferring`` -- each case asserting the exit status, that the last line on stderr names the file or key and the fix,
that no traceback is printed (it comes with ``MEDSEMISEG_DEBUG=1``), and that nothing was lost: an earlier
preparation in ``--out``, an earlier ``models/model.pt``, the checkpoint given, earlier label maps, the inputs.

``prepare`` runs in-process (``main(argv)`` is the CLI; its exit status is the return value). The bundle commands run
as the user runs them, ``python -m monai.bundle run ...``, because the last line comes from the excepthook the
bundles install there; as each costs about 7 s of imports, the selected cases start together, two at a time, when the
first of them is asked for (:class:`_BundleRuns`). Images are 16 x 16, networks untrained.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from medsemiseg.data.prepare import main as prepare_main

REPO = Path(__file__).resolve().parents[1]
RNG = np.random.default_rng(0)


# ------------------------------------------------------------------------------------------------ helpers


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def snapshot(path: Path) -> dict[str, str]:
    """Every file under ``path`` (or ``path`` itself) with the SHA-1 of its content."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file()) if path.exists() else []
    return {str(p.relative_to(path.parent)): hashlib.sha1(p.read_bytes()).hexdigest() for p in files}


def ct_slice(path: Path, nan: bool = False, inf: bool = False, size: int = 16) -> Path:
    a = RNG.normal(-500, 300, (size, size)).astype(np.float32)
    if nan:
        a[3, 4] = np.nan
    if inf:
        a[5, 6] = np.inf
    nib.save(nib.Nifti1Image(a, np.eye(4)), str(path))
    return path


def ct_mask(path: Path, size: int = 16) -> Path:
    m = np.zeros((size, size), np.uint8)
    m[size // 4: size // 2, size // 4: size // 2] = 1
    nib.save(nib.Nifti1Image(m, np.eye(4)), str(path))
    return path


def truncate(path: Path, keep: int | None = None) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2 if keep is None else keep])
    return path


def covid_model(path: Path) -> Path:
    """A ``model.pt`` of the covid bundle's network (unet, 1 channel, 4 classes), untrained."""
    from medsemiseg.networks import get_network

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(get_network("unet", 1, 4).state_dict(), path)
    return path


def chase_model(path: Path) -> Path:
    from medsemiseg.networks import get_network

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(get_network("unet", 3, 2).state_dict(), path)
    return path


def assert_refused(code: int, stderr: str, expected_code: int, *needles: str) -> None:
    last = last_line(stderr)
    assert code == expected_code, f"exit {code}, expected {expected_code}:\n{stderr[-3000:]}"
    assert last.startswith("error: ") or "error: " in last, last
    for needle in needles:
        assert needle in last, f"{needle!r} not in the last line: {last}\n{stderr[-3000:]}"
    assert "Traceback" not in stderr, stderr[-3000:]


# -------------------------------------------------------------------------------------------------- prepare


@pytest.fixture(scope="module")
def good_source(tmp_path_factory) -> Path:
    """A ``prepare folder`` source of six CT slices with masks."""
    src = tmp_path_factory.mktemp("good_source")
    (src / "labels").mkdir()
    for i in range(6):
        ct_slice(src / f"im{i}.nii.gz")
        ct_mask(src / "labels" / f"im{i}.nii.gz")
    return src


@pytest.fixture(scope="module")
def earlier_preparation(good_source, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("earlier") / "prepared"
    assert prepare_main(["folder", str(good_source), "--out", str(out), "--no-progress"]) == 0
    return out


def _written(path: Path, content: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def _replace(src: Path, stem: str, new: Callable[[Path], Path]) -> Path:
    """``src`` with image ``stem`` replaced by what ``new(folder)`` writes; the file written."""
    for p in src.glob(f"{stem}.*"):
        p.unlink()
    return new(src)


def _one_pixel(src: Path) -> Path:
    ct_mask(src / "labels" / "im3.nii.gz", size=1)
    return ct_slice(src / "im3.nii.gz", size=1)


def _duplicated_series(src: Path) -> Path:
    """A DICOM series of four slices in ``unlabeled/``, two of them copied twice (two duplicate pairs)."""
    from test_io import write_ct_dicom

    series = src / "unlabeled" / "series"
    series.mkdir(parents=True)
    for i, z in enumerate((0.0, 2.5, 5.0, 7.5)):
        write_ct_dicom(series / f"s{i}.dcm", np.full((16, 16), 1000, np.int16), z=z, instance=i + 1)
    shutil.copy(series / "s1.dcm", series / "s1_copy.dcm")
    shutil.copy(series / "s3.dcm", series / "s3_copy.dcm")
    return series


@dataclass
class PrepareCase:
    id: str
    make: Callable[[Path], Path] | None  # changes the source copy; returns the bad file (named in the last line)
    needles: tuple[str, ...]
    args: tuple[str, ...] = ()
    code: int = 2
    raises: tuple[int, bool] | None = None  # nib.save raises OSError(errno), naming the file being written or not
    out: str = "prepared"  # --out, relative to the case folder


PREPARE_CASES = [
    PrepareCase("empty-picture", lambda s: _replace(s, "im3", lambda d: _written(d / "im3.png", b"")),
                ("is empty (0 bytes)", "copy or export it again")),
    PrepareCase("undecodable-picture", lambda s: _replace(s, "im3", lambda d: _written(d / "im3.png", RNG.bytes(400))),
                ("is not a picture PIL can decode", "export it again")),
    PrepareCase("empty-nifti", lambda s: truncate(s / "im3.nii.gz", keep=0), ("is empty (0 bytes)",)),
    PrepareCase("truncated-nifti-gz", lambda s: truncate(s / "im3.nii.gz"),
                ("is truncated", "copy or export it again")),
    PrepareCase("truncated-nifti-header",
                lambda s: _replace(s, "im3", lambda d: truncate(ct_slice(d / "im3.nii"), keep=200)),
                ("is truncated: 200 bytes, shorter than a NIfTI header",)),
    PrepareCase("nan-voxel", lambda s: ct_slice(s / "im3.nii.gz", nan=True), ("holds 1 NaN value(s)", "nan_to_num")),
    PrepareCase("inf-voxel", lambda s: ct_slice(s / "im3.nii.gz", inf=True), ("holds 1 infinite value(s)",)),
    PrepareCase("one-pixel-image", _one_pixel, ("is 1 x 1 pixels", "too small to segment")),
    PrepareCase("duplicated-dicom-slices", _duplicated_series,
                ("2 pair(s) of files", "s1.dcm and s1_copy.dcm", "s3.dcm and s3_copy.dcm", "remove one file of each")),
    PrepareCase("val-fraction-1.0", None, ("--val-fraction", "'1.0' is ambiguous", "0.1", "e.g. 1 for one item"),
                args=("--val-fraction", "1.0")),
    PrepareCase("out-under-a-file", None, ("a part of this path is a file, not a folder", "choose another --out"),
                out="a_file/prepared"),
    PrepareCase("read-only-file-system", None, ("the file system is read-only", "choose an --out on a writable disk"),
                raises=(errno.EROFS, True)),
    PrepareCase("disk-full", None, ("--out", "the disk is full", "free some space"),
                raises=(errno.ENOSPC, False)),
]


@pytest.mark.parametrize("case", PREPARE_CASES, ids=[c.id for c in PREPARE_CASES])
def test_prepare_refuses_bad_input(case, good_source, earlier_preparation, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MEDSEMISEG_DEBUG", raising=False)
    src = tmp_path / "src"
    shutil.copytree(good_source, src)
    bad = case.make(src) if case.make is not None else None
    (tmp_path / "a_file").write_text("a file, not a folder")
    out = tmp_path / case.out
    if case.out == "prepared":
        shutil.copytree(earlier_preparation, out)  # an earlier preparation, which a failed run must keep
    before = snapshot(tmp_path / "a_file") | snapshot(out)
    if case.raises is not None:
        number, names_file = case.raises

        def full_or_read_only(_img, path, *a, **k):
            raise OSError(number, os.strerror(number), *([str(path)] if names_file else []))

        monkeypatch.setattr(nib, "save", full_or_read_only)
    argv = ["folder", str(src), "--out", str(out), "--overwrite", "--no-progress", *case.args]
    try:
        code = prepare_main(argv)
    except SystemExit as e:  # argparse refuses an option value before anything runs
        code = e.code
    err = capsys.readouterr().err
    assert_refused(code, err, case.code, *case.needles)
    if bad is not None:
        assert str(bad) in last_line(err)
    if case.raises is not None and not case.raises[1]:
        assert f"--out {out}" in last_line(err)  # a full disk's write names no file: the message names --out
    assert snapshot(tmp_path / "a_file") | snapshot(out) == before  # the earlier preparation is intact
    assert not list(out.glob(".prepare-partial-*")) if out.is_dir() else True


def test_prepare_warns_about_masks_without_foreground_naming_each(good_source, tmp_path, capsys):
    src = tmp_path / "src"
    shutil.copytree(good_source, src)
    empty = [src / "labels" / f"im{i}.nii.gz" for i in (1, 4)]
    for m in empty:
        nib.save(nib.Nifti1Image(np.zeros((16, 16), np.uint8), np.eye(4)), str(m))
    assert prepare_main(["folder", str(src), "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    warning = next(line for line in capsys.readouterr().err.splitlines() if "no foreground" in line)
    assert warning.startswith("warning: 2 mask(s) hold no foreground") and all(str(m) in warning for m in empty)
    meta = json.loads((tmp_path / "out" / "datalist.json").read_text())["meta"]
    assert any("no foreground" in w for w in meta["warnings"])  # kept with the preparation


def test_prepare_debug_switch_prints_the_traceback_before_the_same_last_line(good_source, tmp_path, capsys,
                                                                             monkeypatch):
    src = tmp_path / "src"
    shutil.copytree(good_source, src)
    truncate(src / "im2.nii.gz")
    argv = ["folder", str(src), "--out", str(tmp_path / "out"), "--no-progress"]
    monkeypatch.delenv("MEDSEMISEG_DEBUG", raising=False)
    assert prepare_main(argv) == 2
    quiet = capsys.readouterr().err
    monkeypatch.setenv("MEDSEMISEG_DEBUG", "1")
    assert prepare_main(argv) == 2
    loud = capsys.readouterr().err
    assert "Traceback" not in quiet and "Traceback" in loud
    assert last_line(quiet) == last_line(loud) and "im2.nii.gz: is truncated" in last_line(loud)


# ------------------------------------------------------------------------------------------ bundle commands


@dataclass
class BundleCase:
    id: str
    run: str  # training / evaluating / inferring
    setup: Callable[[Path], list[str]]  # writes the case's files under its folder; returns extra CLI arguments
    needles: Callable[[Path], tuple[str, ...]]  # the last line must contain each (paths under the case folder)
    keep: tuple[str, ...] = ("run",)  # what must be unchanged afterwards, relative to the case folder
    absent: tuple[str, ...] = ("cache",)  # what must not have been created
    written: tuple[str, ...] = ()  # what the run must have written despite the failure
    task: str = "covid"


def _run_dir(case_dir: Path, model: Callable[[Path], Path] | None = covid_model) -> Path:
    """``run/``: an output folder holding an earlier run's ``models/model.pt`` and label map."""
    run = case_dir / "run"
    if model is not None:
        model(run / "models" / "model.pt")
    (run / "outputs").mkdir(parents=True, exist_ok=True)
    (run / "outputs" / "earlier_seg.nii.gz").write_bytes(b"an earlier label map")
    return run


def _datalist(case_dir: Path, bad: Callable[[Path], Path] | None = None) -> Path:
    """``data/datalist.json`` of four CT slices (two labelled); with ``bad``, the second labelled image is
    replaced by the file ``bad(data folder)`` writes."""
    data = case_dir / "data"
    data.mkdir(parents=True, exist_ok=True)
    for i in range(4):
        ct_slice(data / f"i{i}.nii.gz")
        ct_mask(data / f"l{i}.nii.gz")
    second = bad(data).name if bad is not None else "i1.nii.gz"
    content = {
        "labeled": [{"image": "i0.nii.gz", "label": "l0.nii.gz"}, {"image": second, "label": "l1.nii.gz"}],
        "unlabeled": [{"image": "i2.nii.gz"}],
        "validation": [{"image": "i3.nii.gz", "label": "l3.nii.gz"}],
        "test": [{"image": "i3.nii.gz", "label": "l3.nii.gz"}],
    }
    (data / "datalist.json").write_text(json.dumps(content))
    return data / "datalist.json"


def _training(*overrides: str, datalist: Callable[[Path], Path] | None = None) -> Callable[[Path], list[str]]:
    def setup(case_dir: Path) -> list[str]:
        _run_dir(case_dir)
        path = datalist(case_dir) if datalist is not None else _datalist(case_dir)
        return ["--dataset_dir", str(path), *overrides]

    return setup


def _malformed_datalist(case_dir: Path) -> Path:
    path = _datalist(case_dir)
    path.write_text(path.read_text()[:-20])  # cut off mid-item
    return path


def _evaluating(ckpt: Callable[[Path], Path]) -> Callable[[Path], list[str]]:
    def setup(case_dir: Path) -> list[str]:
        _run_dir(case_dir, model=None)
        return ["--ckpt_path", str(ckpt(case_dir / "given" / "model.pt"))]

    return setup


def _not_torch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("these are not network weights\n")
    return path


def _inference_folder(case_dir: Path) -> list[str]:
    _run_dir(case_dir)
    inputs = case_dir / "inputs"
    inputs.mkdir()
    ct_slice(inputs / "good_a.nii.gz")
    ct_slice(inputs / "good_b.nii.gz")
    (inputs / "empty.nii.gz").write_bytes(b"")
    ct_slice(inputs / "nan.nii.gz", nan=True)
    truncate(ct_slice(inputs / "cut.nii.gz"))
    return ["--dataset_dir", str(inputs)]


def _inference_input(make: Callable[[Path], Path]) -> Callable[[Path], list[str]]:
    def setup(case_dir: Path) -> list[str]:
        _run_dir(case_dir)
        (case_dir / "inputs").mkdir()
        return ["--dataset_dir", str(make(case_dir / "inputs"))]

    return setup


def _undecodable_picture(folder: Path) -> Path:
    (folder / "photo.png").write_bytes(RNG.bytes(300))
    return folder / "photo.png"


BUNDLE_CASES = [
    # training: bad setting values, a malformed datalist, and unreadable or NaN training images
    BundleCase("learning-rate-abc", "training", _training("--learning_rate", "abc"),
               lambda d: ("--learning_rate 'abc'", "must be a number > 0", "e.g. --learning_rate 0.001")),
    BundleCase("seed-abc", "training", _training("--seed", "abc"),
               lambda d: ("--seed 'abc'", "must be a whole number >= 0", "e.g. --seed 0")),
    BundleCase("unlabeled-batch-size-0", "training", _training("--unlabeled_batch_size", "0"),
               lambda d: ("--unlabeled_batch_size 0", "must be a whole number >= 1")),
    BundleCase("malformed-datalist", "training", _training(datalist=_malformed_datalist),
               lambda d: (f"datalist {d / 'data' / 'datalist.json'} is not valid JSON", "prepare the data set again")),
    BundleCase("empty-training-image", "training",
               _training(datalist=lambda d: _datalist(d, lambda data: truncate(data / "i1.nii.gz", keep=0))),
               lambda d: (f"{d / 'data' / 'i1.nii.gz'}: is empty (0 bytes)",)),
    BundleCase("nan-training-image", "training",
               _training(datalist=lambda d: _datalist(d, lambda data: ct_slice(data / "nan.nii.gz", nan=True))),
               lambda d: (f"{d / 'data' / 'nan.nii.gz'}: holds 1 NaN value(s)", "nan_to_num")),
    # evaluating: checkpoints given with --ckpt_path that cannot be used (checked before any data is read)
    BundleCase("empty-checkpoint", "evaluating", _evaluating(lambda p: _written(p, b"")),
               lambda d: (f"checkpoint {d / 'given' / 'model.pt'} is empty (0 bytes)", "--ckpt_path"),
               keep=("given",), absent=("cache", "run/eval")),
    BundleCase("truncated-checkpoint", "evaluating", _evaluating(lambda p: truncate(covid_model(p))),
               lambda d: (f"checkpoint {d / 'given' / 'model.pt'} is truncated", "--ckpt_path"),
               keep=("given",), absent=("cache", "run/eval")),
    BundleCase("checkpoint-of-the-other-bundle", "evaluating", _evaluating(chase_model),
               lambda d: (f"checkpoint {d / 'given' / 'model.pt'} was trained for 2 classes on 3-channel images",
                          "4 classes and takes 1-channel images", "chase bundle"),
               keep=("given",), absent=("cache", "run/eval")),
    # inferring: a folder with good and bad inputs, single bad inputs, no model at all
    BundleCase("folder-with-bad-inputs", "inferring", _inference_folder,
               lambda d: ("wrote the label maps of 2 input(s)", "3 input(s) could not be read",
                          f"{d / 'inputs' / 'empty.nii.gz'}: is empty", f"{d / 'inputs' / 'nan.nii.gz'}: holds 1 NaN",
                          f"{d / 'inputs' / 'cut.nii.gz'}: is truncated", "Fix or remove them"),
               keep=("run/models", "run/outputs/earlier_seg.nii.gz", "inputs"), absent=("cache",),
               written=("run/outputs/good_a_seg.nii.gz", "run/outputs/good_b_seg.nii.gz")),
    BundleCase("nan-input", "inferring", _inference_input(lambda f: ct_slice(f / "scan.nii.gz", nan=True)),
               lambda d: (f"{d / 'inputs' / 'scan.nii.gz'}: holds 1 NaN value(s)",),
               keep=("run", "inputs"), absent=("cache", "run/outputs/scan_seg.nii.gz")),
    BundleCase("undecodable-picture-input", "inferring", _inference_input(_undecodable_picture),
               lambda d: (f"{d / 'inputs' / 'photo.png'}: is not a picture PIL can decode",),
               keep=("run", "inputs"), absent=("cache",)),
    BundleCase("no-trained-model", "inferring", lambda d: _run_dir(d, model=None) and [],
               lambda d: (f"no trained model at {d / 'run' / 'models' / 'model.pt'}", "run training", "--ckpt_path"),
               keep=("run",), absent=("cache",)),  # the synthetic data set is not generated for nothing
]


class _BundleRuns:
    """Runs the selected bundle cases, two at a time, on the first request; each result is ``(exit status, stderr,
    what ``keep`` held before)``."""

    def __init__(self, root: Path, selected: list[BundleCase]) -> None:
        self.root = root
        self.selected = selected
        self.results: dict[str, tuple[int, str, dict]] | None = None

    def _run(self, case: BundleCase) -> tuple[int, str, dict]:
        case_dir = self.root / case.id
        case_dir.mkdir()
        extra = case.setup(case_dir)
        before = {k: snapshot(case_dir / k) for k in case.keep}
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
        env.pop("MEDSEMISEG_DEBUG", None)
        proc = subprocess.run(
            [sys.executable, "-m", "monai.bundle", "run", case.run, "--config_file",
             f"bundles/{case.task}/train.json", "--output_dir", str(case_dir / "run"), "--cache_dir",
             str(case_dir / "cache"), "--image_size", "[16, 16]", "--max_epochs", "1", "--epoch_length", "1",
             "--batch_size", "2", "--unlabeled_batch_size", "1", *extra],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
        )
        return proc.returncode, proc.stderr, before

    def result(self, case: BundleCase) -> tuple[int, str, dict]:
        if self.results is None:
            with ThreadPoolExecutor(max_workers=2) as pool:
                runs = {c.id: pool.submit(self._run, c) for c in self.selected}
                self.results = {k: f.result() for k, f in runs.items()}
        if case.id not in self.results:  # not collected with the others (e.g. rerun alone)
            self.results[case.id] = self._run(case)
        return self.results[case.id]


@pytest.fixture(scope="module")
def bundle_runs(request, tmp_path_factory) -> _BundleRuns:
    params = [getattr(item, "callspec", None) for item in request.session.items]
    chosen = {p.params["case"].id for p in params if p is not None and isinstance(p.params.get("case"), BundleCase)}
    return _BundleRuns(tmp_path_factory.mktemp("bundle_cases"), [c for c in BUNDLE_CASES if c.id in chosen])


def _bundle_case_test(case: BundleCase, bundle_runs: _BundleRuns) -> None:
    code, stderr, before = bundle_runs.result(case)
    case_dir = bundle_runs.root / case.id
    assert_refused(code, stderr, 1, *case.needles(case_dir))
    hint = stderr.strip().splitlines()[-2]
    assert hint.startswith(f"{case.run} failed in medsemiseg/") and "MEDSEMISEG_DEBUG=1" in hint, hint
    for k in case.keep:
        assert snapshot(case_dir / k) == before[k], f"{k} changed"
    for k in case.absent:
        assert not (case_dir / k).exists(), f"{k} was created"
    for k in case.written:
        assert (case_dir / k).is_file(), f"{k} was not written"


TRAINING = [c for c in BUNDLE_CASES if c.run == "training"]
EVALUATING = [c for c in BUNDLE_CASES if c.run == "evaluating"]
INFERRING = [c for c in BUNDLE_CASES if c.run == "inferring"]


@pytest.mark.parametrize("case", TRAINING, ids=[c.id for c in TRAINING])
@pytest.mark.integration
def test_training_refuses_bad_input(case, bundle_runs):
    _bundle_case_test(case, bundle_runs)
    assert not list((bundle_runs.root / case.id / "run" / "models").glob("checkpoint_epoch=*.pt"))


@pytest.mark.parametrize("case", EVALUATING, ids=[c.id for c in EVALUATING])
@pytest.mark.integration
def test_evaluating_refuses_bad_checkpoints(case, bundle_runs):
    _bundle_case_test(case, bundle_runs)


@pytest.mark.parametrize("case", INFERRING, ids=[c.id for c in INFERRING])
@pytest.mark.integration
def test_inferring_refuses_bad_input(case, bundle_runs):
    _bundle_case_test(case, bundle_runs)


# ---------------------------------------------------------------------------- in-process checks of the same rules


def test_checkpoint_problems_are_named_without_running_a_bundle(tmp_path):
    from medsemiseg.bundle.checkpoints import CheckpointError, trained_checkpoint
    from medsemiseg.networks import get_network

    net = get_network("unet", 1, 4)
    good = covid_model(tmp_path / "good.pt")
    assert trained_checkpoint(good, network=net) == str(good)
    legacy = tmp_path / "legacy.pt"
    torch.save(net.state_dict(), legacy, _use_new_zipfile_serialization=False)  # the format before PyTorch 1.6
    assert trained_checkpoint(legacy, network=net) == str(legacy)
    cases = {
        _not_torch(tmp_path / "text.pt"): "is not a PyTorch checkpoint",
        truncate(_copy(legacy, tmp_path / "legacy_cut.pt")): "is damaged, PyTorch cannot read it",
        _saved({"epoch": 3}, tmp_path / "no_weights.pt"): "holds no network weights",
        _saved(get_network("unet", 1, 4, features=[8, 8, 16, 32, 64, 8]).state_dict(), tmp_path / "small.pt"):
            "was trained with another network architecture",
        _saved(get_network("deeplabv3plus", 1, 4).state_dict(), tmp_path / "deeplab.pt"):
            "--network_name / --network_kwargs",
    }
    for path, needle in cases.items():
        with pytest.raises(CheckpointError) as err:
            trained_checkpoint(path, network=net)
        assert str(err.value).startswith(f"checkpoint {path}") and needle in str(err.value), str(err.value)
    # a training checkpoint (network under "model", with the optimiser) is accepted as --ckpt_path too
    full = _saved({"model": net.state_dict(), "optimizer": {}}, tmp_path / "checkpoint_epoch=2.pt")
    assert trained_checkpoint(full, network=net) == str(full)


def _copy(src: Path, dst: Path) -> Path:
    shutil.copy(src, dst)
    return dst


def _saved(obj, path: Path) -> Path:
    torch.save(obj, path)
    return path


def test_every_numeric_setting_is_checked_naming_its_key():
    from medsemiseg.bundle.settings import NUMERIC_SETTINGS, BundleConfigError, check_settings

    good = {"seed": 0, "max_epochs": 5, "epoch_length": 12, "val_interval": 1, "batch_size": 4,
            "unlabeled_batch_size": 4, "num_workers": 0, "learning_rate": 1e-3}
    assert set(good) == set(NUMERIC_SETTINGS)
    check_settings(**good)
    check_settings(learning_rate=1)  # a whole number is a number
    for key, bad in [("seed", -1), ("seed", 1.5), ("max_epochs", 0), ("batch_size", "4"), ("num_workers", True),
                     ("learning_rate", 0), ("learning_rate", float("nan")), ("epoch_length", None)]:
        with pytest.raises(BundleConfigError, match=rf"^--{key} {bad!r}: must be a .* e\.g\. --{key} "):
            check_settings(**{key: bad})


def test_a_series_lists_every_duplicated_slice_pair_in_one_error(tmp_path):
    from medsemiseg.data.io import DataReadError, read_image
    from test_io import write_ct_dicom

    series = tmp_path / "series"
    series.mkdir()
    for i, z in enumerate((0.0, 2.5, 5.0, 7.5)):
        write_ct_dicom(series / f"s{i}.dcm", np.zeros((4, 4)), z=z, instance=i + 1)
    for i, z in ((5, 2.5), (6, 7.5)):  # new files (own UIDs) at positions taken: two pairs at one position
        write_ct_dicom(series / f"x{i}.dcm", np.zeros((4, 4)), z=z, instance=i)
    with pytest.raises(DataReadError) as err:
        read_image(series)
    text = str(err.value)
    assert "2 pair(s) of files are at the same slice position" in text
    assert "s1.dcm and x5.dcm" in text and "s3.dcm and x6.dcm" in text


def test_out_of_distribution_inputs_are_warned_by_the_documented_rule(tmp_path, caplog):
    """The fundus bundle's example: a photograph of a person (skimage's astronaut) against the synthetic fundus
    training set's ranges is flagged on its blue and green channels, a training-like image is not."""
    from medsemiseg.handlers.distribution import InputDistributionCheck, flagged_statistics, image_statistics

    reference = {"images": 20, "foreground": [0.10, 0.101], "mean_0": [0.38, 0.50], "mean_1": [0.14, 0.21],
                 "mean_2": [0.05, 0.10], "std_0": [0.26, 0.33], "std_1": [0.10, 0.15], "std_2": [0.045, 0.074]}
    # inside: the margin is half the spread plus 0.05 on each side
    assert flagged_statistics({"mean_2": 0.10 + 0.025 + 0.05 - 1e-6}, reference) == []
    assert flagged_statistics({"mean_2": 0.10 + 0.025 + 0.05 + 1e-3}, reference) == [
        "channel 2 mean 0.176 (training 0.050 to 0.100)"]
    skimage_data = pytest.importorskip("skimage.data")
    photo = torch.as_tensor(skimage_data.astronaut()).permute(2, 1, 0).float() / 255  # (C, X, Y), FundusNormalized
    stats = image_statistics(photo, torch.ones(1, 8, 8))
    flagged = flagged_statistics(stats, reference)
    assert any(f.startswith("channel 2 mean") for f in flagged) and any("foreground" in f for f in flagged)
    (tmp_path / "run.json").write_text(json.dumps({"input_reference": reference}))
    check = InputDistributionCheck(tmp_path / "model.pt")
    check._load_reference()
    g = torch.Generator().manual_seed(0)
    fundus_like = torch.stack([m + s * torch.randn((32, 32), generator=g) for m, s in ((0.45, 0.3), (0.17, 0.12),
                                                                                    (0.07, 0.06))])
    with caplog.at_level("WARNING", logger="medsemiseg.distribution"):
        check._add({"image": photo, "pred": torch.ones(1, 8, 8), "name": "photo", "source": "photo.png", "slice": -1})
        check._add({"image": fundus_like, "pred": (torch.rand(1, 10, 10) < 0.1).long(), "name": "eye",
                    "source": "eye.png", "slice": -1})
    assert check.flagged == ["photo.png"]
    assert "photo.png looks unlike the images the model was trained on" in caplog.text


def test_unlabelled_images_unlike_the_labelled_ones_are_warned_at_the_start_of_training(tmp_path, caplog):
    """COVID-SemiSeg's case made small: labelled slices in one display window, unlabelled ones mostly darker (another
    window). A quarter or more outside the labelled range warns, naming the datalist; a like-for-like pool does not,
    and too few images give no verdict."""
    from medsemiseg.handlers.distribution import UNLABELLED_OUTSIDE_WARN, unlabelled_check

    def stats(mean, std):
        return {"mean_0": mean, "std_0": std, "foreground": 0.1}

    labelled = [stats(0.50 + 0.01 * i, 0.30) for i in range(5)]  # range 0.50-0.54, margin 0.07
    alike = [stats(0.48 + 0.01 * (i % 8), 0.29) for i in range(40)]
    with caplog.at_level("WARNING", logger="medsemiseg.distribution"):
        check = unlabelled_check(labelled, alike, "dl.json")
    assert check["outside"] == 0 and check["unlabelled"] == 40 and not caplog.text
    shifted = alike[:29] + [stats(0.34, 0.21)] * 11  # 11 of 40 = 27.5 % darker, narrower
    assert 11 / 40 >= UNLABELLED_OUTSIDE_WARN > 9 / 40
    with caplog.at_level("WARNING", logger="medsemiseg.distribution"):
        below = unlabelled_check(labelled, alike[:31] + [stats(0.34, 0.21)] * 9, "dl.json")
    assert below["outside"] == 9 and not caplog.text  # under a quarter: no warning
    with caplog.at_level("WARNING", logger="medsemiseg.distribution"):
        check = unlabelled_check(labelled, shifted, "dl.json")
    assert check["outside"] == 11 and check["labelled_mean"]["mean_0"] == 0.52
    assert caplog.text.count("lie outside the labelled images' intensity range") == 1
    assert "11 of 40 unlabelled images read from dl.json" in caplog.text and "normalise them alike" in caplog.text
    assert unlabelled_check(labelled[:1], shifted) is None and unlabelled_check(labelled, shifted[:9]) is None
