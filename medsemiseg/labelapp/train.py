"""Train a served bundle from MONAI Label's datastore, semi-supervised, and serve the best validated model.

What ``POST /train/<model>`` runs (through the app's ``DatastoreTrainTask``), step by step, in
:func:`train_from_datastore`:

1. the request is checked as data (:func:`medsemiseg.labelapp.params.check_train_request`): nothing runs for a
   refused one;
2. the studies the bundle's network can take (its channel count: grey CT for ``covid``, RGB for ``chase``;
   :func:`studies_for`) are laid out as MONAI Label stores them -- ``<id>.<ext>`` with the final labels in
   ``labels/final/<id>.<ext>`` -- in ``<run>/studies/`` (links to the datastore's files, copies where links are not
   possible): studies with a final label are the labelled set, every other study is unlabelled;
3. ``python -m medsemiseg.prepare folder`` (:func:`medsemiseg.data.prepare.prepare_folder`) turns them into a
   prepared data set in ``<run>/data/``, with the bundle's classes, every labelled study labelled
   (``labeled_fraction full``) and ``val_split`` of them (a share, at least one, or a count) held out for validation;
4. the bundle trains on it in a child process, exactly as its documented command does:
   ``python -m monai.bundle run training --config_file <model>/configs/train.json --args_file <run>/args.json``
   (``args.json`` holds the request's settings with ``dataset_dir``, ``output_dir`` and ``labeled_fraction``), its
   log passed through line by line (:func:`training_command`). The app's own settings shape it: ``pretrained``
   (default true, as in MONAI Label) starts from a copy of the served model (the bundle's ``pretrained_ckpt``);
   ``multi_gpu`` with two or more GPUs in ``gpus`` runs it under ``torchrun`` with the bundle's
   ``configs/multi_gpu_train.json``; ``tracking=mlflow`` adds ``--tracking mlflow`` with the store
   ``<runs>/mlruns.db``. The bundle rewrites ``<runs>/train_stats.json`` every epoch (:func:`train_stats`: what
   MONAI Label serves as ``train_stats``). SIGTERM to this process (``DELETE /train``) stops the training's whole
   process group, and the training dies with this process however it ends;
5. on success the run's ``models/model.pt`` -- the best by validation mIoU -- and its ``run.json`` replace the
   served ones atomically (the app's inference task reloads a changed ``model.pt`` on its next request); on failure
   the served model is left as it was and :class:`TrainingError` carries the run's last error line.

Each run keeps its folder, ``<runs>/<UTC date-time>/`` (``studies/``, ``data/``, ``args.json``, ``train.log``,
``models/``, ``logs/``), for its log, TensorBoard logs and checkpoints; remove old ones freely.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import warnings
from collections import deque
from pathlib import Path
from typing import Any, Callable, Mapping

from medsemiseg.atomic_io import atomic_copy, atomic_write_text
from medsemiseg.labelapp.params import check_train_request

__all__ = [
    "TrainingError",
    "bundle_channels",
    "bundle_classes",
    "lay_out_studies",
    "studies_for",
    "train_from_datastore",
    "training_command",
    "train_stats",
]

MODEL_FILE = "model.pt"
RUN_FILE = "run.json"
#: the progress of the running (or last) training, rewritten every epoch: MONAI Label's ``train_stats``
TRAIN_STATS = "train_stats.json"
#: the training's whole output (the bundle's log), in the run folder
TRAIN_LOG = "train.log"
#: the copy of the served model a run starts from (``pretrained``)
PRETRAINED = "pretrained.pt"
FINAL = "final"  # MONAI Label's tag of a confirmed label (DefaultLabelTag.FINAL)


class TrainingError(RuntimeError):
    """A training from the datastore that did not replace the served model; the message says why and what to do."""


def bundle_classes(bundle: Path) -> list[str]:
    """The bundle's class names in label order, from ``configs/metadata.json`` (what the app serves as labels)."""
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    channels = next(iter(meta["network_data_format"]["outputs"].values()))["channel_def"]
    return [channels[k] for k in sorted(channels, key=int)]


def _studies(n: int) -> str:
    return f"{n} study" if n == 1 else f"{n} studies"


def bundle_channels(bundle: Path) -> int:
    """The channels the bundle's network takes (``configs/metadata.json``): 1 for CT, 3 for RGB photographs."""
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    return int(next(iter(meta["network_data_format"]["inputs"].values()))["num_channels"])


def studies_for(
    bundle: Path,
    labelled: Mapping[str, tuple[str | os.PathLike, str | os.PathLike]],
    unlabelled: Mapping[str, str | os.PathLike],
    log: Callable[[str], None],
) -> tuple[dict, dict]:
    """The studies whose images have the channels the bundle's network takes: one datastore may hold the grey CT
    slices of ``covid`` and the RGB photographs of ``chase`` (one server serves both), and each trains on its own.
    The others are left out with a log line; an unreadable unlabelled study is left out too, an unreadable labelled
    one is an error naming its file."""
    from medsemiseg.data.io import DataReadError, read_image

    want = bundle_channels(bundle)
    other: list[str] = []
    unreadable: list[str] = []

    def fits(study_id: str, image: Any, is_labelled: bool) -> bool:
        try:
            channels = int(read_image(image).shape[0])
        except (DataReadError, OSError) as e:
            if is_labelled:
                raise TrainingError(f"labelled study {study_id!r} cannot be read: {e}") from e
            unreadable.append(f"{study_id} ({e})")
            return False
        if channels != want:
            other.append(f"{study_id} ({channels} channel{'s' if channels > 1 else ''})")
        return channels == want

    kept_l = {k: v for k, v in labelled.items() if fits(k, v[0], True)}
    kept_u = {k: v for k, v in unlabelled.items() if fits(k, v, False)}
    if other:
        log(f"left out {_studies(len(other))} whose images are not {want}-channel, as {bundle.name}'s network takes: "
            + ", ".join(other[:10]) + (", ..." if len(other) > 10 else ""))
    if unreadable:
        log(f"left out {_studies(len(unreadable))} that cannot be read (unlabelled): " + "; ".join(unreadable[:5])
            + ("; ..." if len(unreadable) > 5 else ""))
    return kept_l, kept_u


def _ext(path: Path) -> str:
    name = path.name.lower()
    for double in (".nii.gz",):
        if name.endswith(double):
            return path.name[-len(double):]
    return path.suffix


def _place(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.symlink(src.resolve(), dest, target_is_directory=src.is_dir())
    except OSError:  # no links on this file system (or this Windows account): copy
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, dest)


def lay_out_studies(
    labelled: Mapping[str, tuple[str | os.PathLike, str | os.PathLike]],
    unlabelled: Mapping[str, str | os.PathLike],
    folder: Path,
) -> None:
    """MONAI Label's local datastore layout in ``folder``: ``<id><ext>`` for every study (a DICOM series folder
    keeps its folder), ``labels/final/<id><ext>`` for each final label; links to the given files."""
    entries = [(k, image, label) for k, (image, label) in labelled.items()]
    entries += [(k, image, None) for k, image in unlabelled.items()]
    for study_id, image, label in entries:
        if not study_id or "/" in study_id or "\\" in study_id or study_id.startswith("."):
            raise TrainingError(f"study id {study_id!r} cannot name a file; rename the study in the datastore.")
        image = Path(image)
        if not image.exists():
            raise TrainingError(f"study {study_id!r}: its image {image} does not exist; refresh the datastore.")
        _place(image, folder / (study_id + ("" if image.is_dir() else _ext(image))))
        if label is not None:
            label = Path(label)
            if not label.is_file():
                raise TrainingError(f"study {study_id!r}: its final label {label} does not exist; save it again.")
            _place(label, folder / "labels" / FINAL / (study_id + _ext(label)))


def _validation_count(val_split: float | int, n_labelled: int) -> int:
    count = val_split if isinstance(val_split, int) else max(1, int(val_split * n_labelled + 0.5))
    if n_labelled < 2:
        raise TrainingError(
            f"{n_labelled} {'study has' if n_labelled == 1 else 'studies have'} a final label; training needs at least "
            "2 (one to train on, one to validate): label more studies and save them as final (PUT /datastore/label "
            "with tag final)."
        )
    if count >= n_labelled:
        raise TrainingError(
            f"val_split {val_split} holds out {count} of the {n_labelled} studies with a final label for validation, "
            "leaving none to train on: lower val_split (e.g. val_split=1) or label more studies."
        )
    return count


def _prepare(studies: Path, out: Path, bundle: Path, val_count: int, seed: int, log: Callable[[str], None]) -> Path:
    from medsemiseg.data.prepare import prepare_folder

    classes = bundle_classes(bundle)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        datalist = prepare_folder(
            studies, out, task=bundle.name, num_classes=len(classes), class_names=classes, labeled_fraction="full",
            seed=seed, val_fraction=val_count, test_fraction=0, val_seed=seed, overwrite=True, progress=False,
        )
    for w in caught:
        log(f"prepare: {w.message}")
    counts = json.loads(Path(datalist).read_text())["meta"]["counts"]
    log(f"prepare: {counts['labeled']} labelled + {counts['unlabeled']} unlabelled training item(s), "
        f"{counts['validation']} validation item(s) -> {datalist}")
    return Path(datalist)


def _repo_root() -> str:
    import medsemiseg

    return str(Path(medsemiseg.__file__).resolve().parents[1])


def _die_with_parent() -> None:
    """In the training process (Linux): SIGTERM when the app's training process dies, however it dies (MONAI Label's
    ``DELETE /train`` may kill it outright), so no orphaned training goes on."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the SIGTERM handler of _run_bundle still stops the training
        pass


def gpu_count(gpus: str | list[int]) -> int:
    """How many GPUs ``gpus`` (``"all"`` or indices) names on this machine."""
    if gpus == "all":
        import torch

        return torch.cuda.device_count()
    return len(gpus)


def training_command(bundle: Path, args_file: Path, python: str, multi_gpu: bool = False,
                     gpus: str | list[int] = "all", tracking: bool = False) -> tuple[list[str], dict[str, str]]:
    """``(command, environment additions)`` of the bundle's training: ``python -m monai.bundle run training`` with
    ``configs/train.json``, or with ``multi_gpu`` and two or more GPUs in ``gpus``, ``torchrun --standalone
    --nproc_per_node N -m monai.bundle run training`` with ``configs/train.json`` and ``configs/multi_gpu_train.json``
    (``CUDA_VISIBLE_DEVICES`` set to listed indices); ``--tracking mlflow`` with ``tracking``."""
    configs = bundle / "configs"
    env: dict[str, str] = {}
    n = gpu_count(gpus) if multi_gpu else 1
    if multi_gpu and n >= 2:
        files = "[" + ",".join(repr(str(configs / f)) for f in ("train.json", "multi_gpu_train.json")) + "]"
        cmd = [python, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}", "-m", "monai.bundle",
               "run", "training", "--config_file", files]
        if gpus != "all":
            env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in gpus)
    else:
        cmd = [python, "-m", "monai.bundle", "run", "training", "--config_file", str(configs / "train.json")]
    cmd += ["--args_file", str(args_file)]
    if tracking:
        cmd += ["--tracking", "mlflow"]
    return cmd, env


def _run_bundle(bundle: Path, args_file: Path, python: str, log: Callable[[str], None],
                cmd: list[str] | None = None, env_extra: Mapping[str, str] | None = None) -> str:
    """Run the bundle's training (``cmd``, default :func:`training_command`); returns its summary line
    (``training: reached epoch ...; best val_mIoU ...``). Its whole output (the bundle's log: every iteration's
    losses, every validation) is passed to ``log`` line by line and kept in ``<run>/train.log``.

    The training runs in its own process group. SIGTERM to this process (how MONAI Label's ``DELETE /train`` stops
    a training) stops that whole group -- the training, torchrun's workers, data loader workers -- and ends here
    with :class:`TrainingError`; the served model is left as it was."""
    import signal

    if cmd is None:
        cmd = training_command(bundle, args_file, python)[0]
    env = dict(os.environ, **(env_extra or {}))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_repo_root(), env.get("PYTHONPATH", "")) if p)
    log("training: " + " ".join(cmd))
    tail: deque[str] = deque(maxlen=40)
    stopped: list[int] = []
    with open(args_file.parent / TRAIN_LOG, "w", encoding="utf-8") as saved, \
            subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                             cwd=str(args_file.parent), start_new_session=True,
                             preexec_fn=_die_with_parent if os.name == "posix" else None) as proc:

        def stop(signum: int, frame: Any) -> None:  # noqa: ARG001
            stopped.append(signum)
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                pass

        try:
            previous = signal.signal(signal.SIGTERM, stop)
        except ValueError:  # not the main thread: the caller stops the process itself
            previous = None
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                line = line.rstrip()
                tail.append(line)
                saved.write(line + "\n")
                saved.flush()
                log(line)
            code = proc.wait()
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
            if proc.poll() is None:  # this process is leaving (an exception): take the training with it
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except (ProcessLookupError, PermissionError):
                    pass
    if stopped:
        raise TrainingError(f"training {bundle.name} stopped (SIGTERM); the served model is unchanged; the run's "
                            f"files are in {args_file.parent}.")
    if code != 0:
        errors = [t for t in tail if t.startswith("error:")]
        reason = errors[-1][len("error:"):].strip() if errors else (tail[-1] if tail else f"exit status {code}")
        raise TrainingError(f"training {bundle.name} failed (exit status {code}): {reason} The served model is "
                            f"unchanged; the run's log and files are in {args_file.parent}.")
    summaries = [t for t in tail if "training: reached epoch" in t]
    return summaries[-1].split("training: ", 1)[1] if summaries else ""


def _serve(run_models: Path, bundle: Path) -> Path:
    """Replace the served ``model.pt`` (then its ``run.json``) by the run's, each atomically."""
    best = run_models / MODEL_FILE
    if not best.is_file():
        raise TrainingError(f"training finished without {best} (no validation ran?); the served model is unchanged.")
    from medsemiseg.checkpoint_io import atomic_save

    def copy(src: Path, out: Any) -> None:
        with open(src, "rb") as f:
            shutil.copyfileobj(f, out)

    served = bundle / "models"
    served.mkdir(exist_ok=True)
    for name in (MODEL_FILE, RUN_FILE):
        if (run_models / name).is_file():
            atomic_save(run_models / name, served / name, save=copy)
    return served / MODEL_FILE


def _run_folder(runs: Path) -> Path:
    runs.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    for k in range(100):
        run = runs / (stamp if k == 0 else f"{stamp}-{k}")
        try:
            run.mkdir()
            return run
        except FileExistsError:
            continue
    raise TrainingError(f"{runs}: cannot create a run folder; remove old runs there.")


def train_stats(runs: str | os.PathLike, running: bool | None = None) -> dict[str, Any]:
    """The running or last training's progress (``epoch``, ``total_epochs``, ``best_metric``, ``total_time``,
    ``status``, ...: :class:`medsemiseg.handlers.TrainStatsWriter`), ``{}`` before the first epoch.

    ``running=False`` (no training runs now, as the server knows) turns a ``"running"`` status, left by a training
    that ended without finishing (stopped by ``DELETE /train``, killed, failed), into ``"stopped"``; ``None``
    (unknown) leaves the status as the training wrote it."""
    try:
        stats = json.loads((Path(runs) / TRAIN_STATS).read_text())
    except (OSError, ValueError):
        return {}
    if running is False and stats.get("status") == "running":
        stats["status"] = "stopped"
    return stats


def train_from_datastore(
    bundle: str | os.PathLike,
    labelled: Mapping[str, tuple[str | os.PathLike, str | os.PathLike]],
    unlabelled: Mapping[str, str | os.PathLike],
    runs: str | os.PathLike,
    request: Mapping[str, Any],
    python: str | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train the served bundle ``bundle`` (``<app>/model/<name>``) on the datastore's studies; see the module doc.

    Args:
        bundle: the served copy of the bundle.
        labelled: ``{study id: (image path, final label path)}``.
        unlabelled: ``{study id: image path}``: every study without a final label.
        runs: the folder for this model's runs (``<app>/runs/<name>``).
        request: the training request's settings (:data:`medsemiseg.labelapp.params.TRAIN_KEYS`).
        python: the interpreter of the training process (default: this one).
        log: where progress lines go (MONAI Label shows the last ones in ``GET /train/``).

    Returns the served model, the run folder, the split sizes (studies) and the bundle's summary line.
    Raises :class:`~medsemiseg.labelapp.params.RequestError` for a refused request (nothing ran) and
    :class:`TrainingError` when the served model was left unchanged.
    """
    bundle = Path(bundle)
    overrides, settings = check_train_request(request)
    _validation_count(settings["val_split"], len(labelled))  # before reading any study
    labelled, unlabelled = studies_for(bundle, labelled, unlabelled, log)
    val_count = _validation_count(settings["val_split"], len(labelled))
    run = _run_folder(Path(runs))
    log(f"training {bundle.name} from the datastore: {len(labelled)} labelled studies ({val_count} for validation), "
        f"{len(unlabelled)} unlabelled; run folder {run}")
    lay_out_studies(labelled, unlabelled, run / "studies")
    seed = int(overrides.get("seed", 0))
    try:
        datalist = _prepare(run / "studies", run / "data", bundle, val_count, seed, log)
    except (ValueError, OSError) as e:  # prepare's DataReadError is a ValueError naming the file
        raise TrainingError(f"the datastore's studies cannot be prepared for training: {e} The served model is "
                            "unchanged.") from e
    args = {**overrides, "dataset_dir": str(datalist.parent), "labeled_fraction": "full", "output_dir": str(run),
            "train_stats_file": str(Path(runs) / TRAIN_STATS)}
    served_model = bundle / "models" / MODEL_FILE
    if settings["pretrained"] and served_model.is_file():  # a copy: the served file may be replaced meanwhile
        atomic_copy(served_model, run / PRETRAINED)
        args["pretrained_ckpt"] = str(run / PRETRAINED)
        log(f"starting from the served model {served_model} (a request with pretrained=false starts from scratch)")
    elif settings["pretrained"]:
        log(f"no served model in {served_model.parent}: training from scratch")
    tracking = settings["tracking"] == "mlflow"
    if tracking:
        from medsemiseg.tracking import sqlite_uri

        args.update(tracking_uri=sqlite_uri(Path(runs)), experiment_name=f"monailabel-{bundle.name}")
    args_file = run / "args.json"
    atomic_write_text(args_file, json.dumps(args, indent=2) + "\n")
    (Path(runs) / TRAIN_STATS).unlink(missing_ok=True)  # the last run's progress is not this one's
    python = python or sys.executable
    cmd, env = training_command(bundle, args_file, python, settings["multi_gpu"], settings["gpus"], tracking)
    if settings["multi_gpu"] and len(cmd) > 2 and cmd[2] != "torch.distributed.run":
        log(f"multi_gpu: {gpu_count(settings['gpus'])} GPU(s) in gpus={settings['gpus']}; training in one process")
    summary = _run_bundle(bundle, args_file, python, log, cmd, env)
    served = _serve(run / "models", bundle)
    log(f"training {bundle.name} done, now serving {served}: {summary}")
    return {"model": str(served), "run": str(run), "labelled": len(labelled) - val_count, "validation": val_count,
            "unlabelled": len(unlabelled), "summary": summary}
