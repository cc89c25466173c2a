"""The training state saved every epoch, and ``--resume``.

:class:`TrainCheckpointer` is the bundles' ``train#checkpointer``: it saves the network, optimiser, scheduler, the
method's stateful pieces, the trainer's counters, the random state and the best-metric record every epoch
(atomically, :mod:`medsemiseg.checkpoint_io`), restores the newest checkpoint that loads with ``resume``, keeps an
earlier training in the same folder from being replaced by mistake, and holds the folder's run lock
(:mod:`medsemiseg.runlock`). The small adapters beside it make what ignite's ``Checkpoint`` cannot save directly
checkpointable: :class:`BestMetricRecord`, :class:`~.run_settings.RunRecord` (the settings a state only makes sense with) and
:class:`GradScalerState`.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medsemiseg.checkpoint_io import CHECKPOINT_RE

from medsemiseg.runrecord import RUN_FILE, RunRecordError, read_run_record
from .run_settings import RunRecord
from .settings import BundleConfigError, as_bool

__all__ = ["BestMetricRecord", "GradScalerState", "RunRecord", "TrainCheckpointer"]

logger = logging.getLogger(__name__)


class BestMetricRecord:
    """The validation's best-metric record as a checkpointable object, so that a resumed run keeps its best model.

    Without it, a resumed run starts with the evaluator's ``best_metric`` at -1 and an empty record in the
    key-metric ``CheckpointSaver`` (``models/model.pt``), so the first validation after resuming overwrites the best
    model even when it is worse. :class:`TrainCheckpointer` saves this record with the training state and restores
    it on resume: the evaluator's ``best_metric`` / ``best_metric_epoch`` and the saver's list of ``(score,
    filename)`` (ignite ``Checkpoint.state_dict``).

    Args:
        evaluator: the validation ``SupervisedEvaluator``.
        best_model_saver: its key-metric ``monai.handlers.CheckpointSaver`` (``save_key_metric=True``), or ``None``.
    """

    def __init__(self, evaluator: Any, best_model_saver: Any = None) -> None:
        self.evaluator = evaluator
        # MONAI keeps the ignite Checkpoint of the key metric in a private attribute; without it only the
        # evaluator's record is restored
        self.checkpoint = getattr(best_model_saver, "_key_metric_checkpoint", None)

    def state_dict(self) -> dict:
        state = self.evaluator.state
        out: dict = {
            "best_metric": float(getattr(state, "best_metric", -1)),
            "best_metric_epoch": int(getattr(state, "best_metric_epoch", -1)),
        }
        if self.checkpoint is not None:
            out["key_metric_checkpoint"] = dict(self.checkpoint.state_dict())
        return out

    def load_state_dict(self, state_dict: Mapping) -> None:
        self.evaluator.state.best_metric = state_dict["best_metric"]
        self.evaluator.state.best_metric_epoch = state_dict["best_metric_epoch"]
        if self.checkpoint is not None and "key_metric_checkpoint" in state_dict:
            self.checkpoint.load_state_dict(state_dict["key_metric_checkpoint"])


def _say_if_already_finished(engine: Any) -> None:
    if int(engine.state.epoch or 0) >= int(engine.state.max_epochs or 0):
        logger.warning(
            f"resume: the checkpoint is already at epoch {engine.state.epoch} of max_epochs {engine.state.max_epochs}: "
            "nothing left to train (pass a higher --max_epochs to continue it)."
        )


def _epoch_of(state: Mapping[str, Any]) -> int | None:
    """The epoch a training state was saved at (ignite's trainer record: iteration / epoch_length)."""
    trainer = state.get("trainer") if isinstance(state.get("trainer"), Mapping) else {}
    if "epoch" in trainer:
        return int(trainer["epoch"])
    if {"iteration", "epoch_length"} <= set(trainer):
        return int(trainer["iteration"]) // max(int(trainer["epoch_length"]), 1)
    return None


def _schedule_of(scheduler: Any) -> dict | None:
    """The run's own schedule settings (before a checkpoint overwrites them): total length and base rates."""
    if not hasattr(scheduler, "total_iters") or not hasattr(scheduler, "_get_closed_form_lr"):
        return None
    return {"total_iters": int(scheduler.total_iters), "base_lrs": list(scheduler.base_lrs)}


def _retarget_schedule(scheduler: Any, configured: dict | None) -> None:
    """After a resume: keep this run's schedule length and base rates, not the checkpoint's.

    The checkpoint restores the scheduler's ``total_iters`` and ``base_lrs``, with which a finished run extended to
    a higher ``--max_epochs`` would train its extra epochs at learning rate 0 and ignore a new ``--learning_rate``.
    The decay is re-targeted to this run's length from the iteration reached (closed form, e.g.
    ``base * (1 - t / T) ** power``), and logged."""
    if configured is None:
        return
    old = {"total_iters": int(scheduler.total_iters), "base_lrs": list(scheduler.base_lrs)}
    if old == configured:
        return
    scheduler.total_iters = configured["total_iters"]
    scheduler.base_lrs = list(configured["base_lrs"])
    lrs = scheduler._get_closed_form_lr()
    for group, base, lr in zip(scheduler.optimizer.param_groups, scheduler.base_lrs, lrs):
        group["initial_lr"] = base
        group["lr"] = lr
    scheduler._last_lr = list(lrs)
    logger.info(
        f"resume: learning-rate schedule re-targeted to this run (total {old['total_iters']} -> "
        f"{configured['total_iters']} iterations, base {old['base_lrs']} -> {configured['base_lrs']}); at "
        f"iteration {scheduler.last_epoch} the rate is {[float(f'{v:.4g}') for v in lrs]}."
    )


class GradScalerState:
    """The trainer's AMP ``GradScaler`` state (loss scale, growth tracker) as a checkpoint entry.

    A run with ``amp`` on CUDA scales its loss by a factor the ``GradScaler`` adapts as it goes (halved, and the
    optimiser step skipped, on every overflow; doubled after 2000 clean steps). Without this entry a resumed run
    would restart at the initial scale 2**16: its first iterations would overflow again and skip optimiser steps
    where the uninterrupted run steps, so it would not be the same training. MONAI's ``Trainer.run()`` creates a
    new ``engine.scaler`` each time it runs, so the scaler is looked up when saving and when loading
    (``CheckpointLoader`` loads at ``Events.STARTED``, after ``run()`` created it), never held. A disabled scaler
    (no CUDA) saves ``{}``; such an entry is not loaded into an enabled one (the scale then starts afresh, logged).
    """

    def __init__(self, engine: Any) -> None:
        self.engine = engine

    def _scaler(self) -> Any:
        scaler = getattr(self.engine, "scaler", None)
        return scaler if scaler is not None and scaler.is_enabled() else None

    def state_dict(self) -> dict:
        scaler = self._scaler()
        return dict(scaler.state_dict()) if scaler is not None else {}

    def load_state_dict(self, state: Mapping) -> None:
        scaler = self._scaler()
        if scaler is None:
            return  # this run does not scale its loss (no CUDA): nothing to restore
        if not state:
            logger.warning("resume: the checkpoint's GradScaler state is empty (written without CUDA); the AMP loss "
                           "scale starts afresh.")
            return
        scaler.load_state_dict(dict(state))


class TrainCheckpointer:
    """Save the full training state every ``save_interval`` epochs and, with ``resume``, restore the latest one.

    The saved state is ``save_dict`` (network, optimiser, the method's :meth:`checkpoint_objects` -- EMA teacher,
    discriminator and its optimiser --, lr scheduler...) plus the trainer itself (epoch / iteration counters) and
    its random state (:class:`medsemiseg.random_state.RandomState`: torch / numpy / python RNGs, the random
    transforms' states, the data streams' positions) and, with ``amp``, its ``GradScaler`` state
    (:class:`GradScalerState`), which are added at :meth:`attach` so that a bundle config needs no reference from the
    trainer's handler list back to the trainer. Files: ``<save_dir>/checkpoint_epoch=K.pt``, the last ``n_saved``
    kept -- those of an earlier run into the same folder are removed once this run has saved its own. MONAI's
    ``CheckpointSaver`` / ``CheckpointLoader`` do the work.

    With ``resume=True`` the newest such file is loaded when the run starts, and training continues from its
    epoch up to ``max_epochs`` (the trainer's, not the checkpoint's, so a finished run can be extended); with no
    checkpoint there yet, training starts from scratch (logged), so a job runner may always pass ``--resume true``.

    With ``evaluator`` (and its key-metric ``best_model_saver``) the best validation metric is saved and restored
    too (:class:`BestMetricRecord`), so resuming never replaces ``model.pt`` by a worse model. A checkpoint written
    without that record still resumes (the record then starts afresh, with a warning).

    Other data: with ``resume``, a run whose data settings differ from the checkpoint's (:meth:`RunRecord.check_data`)
    stops naming them, unless ``allow_changed_data``; then it continues and ``run.json`` records the change. A best
    model (``model.pt``) that is missing although the checkpoint's record says one was saved, or that does not load
    into the network, is rebuilt when the run starts: the restored network is re-evaluated and saved, and the log
    says so (:meth:`_rebuild_best_model`).

    Losing work: the files are written atomically (:class:`medsemiseg.checkpoint_io.AtomicCheckpointSaver`; the
    bundles' ``best_model_saver`` is one too), so a kill or a full disk mid-write leaves the previous checkpoint and
    ``model.pt`` intact. ``resume`` takes the newest checkpoint that loads and logs each newer one it skips and why
    (0 bytes, truncated, not a torch file); when none loads it stops, naming them. A run *without* ``resume`` into a
    folder an earlier training used, when it starts and before it writes anything: stops if that training is
    unfinished (its newest checkpoint is short of its ``max_epochs``: a forgotten ``--resume true`` would otherwise
    replace its training state), and otherwise keeps that training's best model, whose file
    (``best_model_saver``'s ``model.pt``) this run replaces at its first validation whatever the scores, as
    ``model.<date-time>.pt`` (and ``run.json`` as ``run.<date-time>.json``), with a warning. ``overwrite=True``
    replaces the earlier run without either.

    Several processes (``torchrun``, :mod:`medsemiseg.distributed`): every process is attached and, with ``resume``,
    loads the same checkpoint (each its own random state); only rank 0 takes the lock, writes ``run.json`` and the
    checkpoints, keeps or replaces an earlier run and removes superseded files.
    """

    def __init__(
        self,
        save_dir: str | os.PathLike,
        save_dict: Mapping[str, Any],
        resume: bool = False,
        save_interval: int = 1,
        n_saved: int = 1,
        map_location: Any = None,
        evaluator: Any = None,
        best_model_saver: Any = None,
        run_info: Mapping[str, Any] | None = None,
        overwrite: bool = False,
        allow_changed_data: bool = False,
    ) -> None:
        self.save_dir = str(save_dir)
        self.evaluator = evaluator
        self.best_model_saver = best_model_saver
        self.save_dict = dict(save_dict)
        if evaluator is not None:
            self.save_dict.setdefault("best_metric", BestMetricRecord(evaluator, best_model_saver))
        self.run_info = RunRecord(run_info) if run_info is not None else None
        if self.run_info is not None:
            self.save_dict.setdefault("run", self.run_info)
        self.resume = as_bool(resume, "resume")
        self.overwrite = as_bool(overwrite, "overwrite")
        self.allow_changed_data = as_bool(allow_changed_data, "allow_changed_data")
        self.save_interval = int(save_interval)
        self.n_saved = int(n_saved)
        self.map_location = map_location
        self.loaded_from: str | None = None
        self._saver_attached = False
        self._earlier: dict[Path, float] = {}

    LOCK = ".training.lock"

    def _write_run_file(self) -> None:
        """``<save_dir>/run.json``: this run's settings (method, network, classes, data set...) next to the models it
        writes, so ``evaluating`` / ``inferring`` can say when they are pointed at other data than the model was
        trained on (:func:`check_trained_on`)."""
        if self.run_info is None:
            return
        Path(self.save_dir).mkdir(parents=True, exist_ok=True)
        from medsemiseg.atomic_io import atomic_write_text

        atomic_write_text(Path(self.save_dir) / RUN_FILE, json.dumps(self.run_info.state_dict(), indent=2, default=str))

    def _take_lock(self, engine: Any) -> None:
        """One training per ``models/`` folder: a second run into it would overwrite and delete the first one's
        checkpoints mid-run (:mod:`medsemiseg.runlock`: host, pid and a heartbeat every
        :data:`~medsemiseg.runlock.HEARTBEAT_S` seconds inside). A lock whose holder is gone -- its pid gone or
        reused on this host, or its heartbeat older than :data:`~medsemiseg.runlock.STALE_AFTER_S` on any host -- is
        taken over, with a warning. Released when the run completes or its process exits; a failed run's lock left
        in a live process (a notebook) is that process's own and is taken over by its next run."""
        import atexit

        from ignite.engine import Events

        from medsemiseg import runlock

        lock = Path(self.save_dir) / self.LOCK
        try:
            me = runlock.acquire(lock, take_own=True, heartbeat_s=runlock.HEARTBEAT_S)
        except runlock.LockHeld as held:
            other = held.holder
            limit = other.get("stale_after_s")
            when_gone = (f"if it is gone, this lock is taken over once its heartbeat is older than {limit:.0f} s, or "
                         f"delete {lock}" if isinstance(limit, (int, float)) else f"if it is gone, delete {lock}")
            raise BundleConfigError(
                f"another training (pid {other.get('pid')} on host {other.get('host')}, since {other.get('since')}) "
                f"is writing to {self.save_dir}: two runs in one output_dir would overwrite each other's checkpoints "
                f"and logs. Give this run its own --output_dir, or wait for that one ({when_gone})."
            ) from None
        heartbeat = runlock.Heartbeat(lock, me).start()

        def release(*_args: Any) -> None:
            heartbeat.stop()
            runlock.release(lock, me)

        # COMPLETED for a run that ends normally, atexit for one that fails (an EXCEPTION_RAISED handler would
        # change how ignite re-raises)
        engine.add_event_handler(Events.COMPLETED, release)
        atexit.register(release)

    def _best_model_file(self) -> Path | None:
        """The file ``best_model_saver`` keeps the best model in (``models/model.pt``), when it has a fixed name."""
        checkpoint = getattr(self.best_model_saver, "_key_metric_checkpoint", None)
        name = getattr(getattr(checkpoint, "save_handler", None), "filename", None)
        return Path(str(self.best_model_saver.save_dir)) / name if name else None

    def _keep_the_earlier_run(self) -> None:
        """For a run without ``resume`` / ``overwrite``, before it writes: stop over an unfinished earlier training,
        else keep the earlier best model and run record under dated names (the class docstring)."""
        from medsemiseg.checkpoint_io import keep_copy, newest_loadable_checkpoint

        if self.resume or self.overwrite:
            return
        found = newest_loadable_checkpoint(self.save_dir)
        state = found.content if isinstance(found.content, Mapping) else {}
        trainer = state.get("trainer") if isinstance(state.get("trainer"), Mapping) else {}
        if {"iteration", "epoch_length", "max_epochs"} <= set(trainer):
            reached = int(trainer["iteration"]) // max(int(trainer["epoch_length"]), 1)
            if reached < int(trainer["max_epochs"]):
                raise BundleConfigError(
                    f"{self.save_dir} holds an unfinished training (epoch {reached} of {int(trainer['max_epochs'])}, "
                    f"{found.path.name}); this run, started without --resume, would replace its training state and "
                    "its best model. Continue it with --resume true, give this run another --output_dir, or pass "
                    "--overwrite true to replace it."
                )
        model = self._best_model_file()
        if model is None or not model.is_file():
            return
        known = []
        run_file = Path(self.save_dir) / RUN_FILE
        try:
            method = (read_run_record(run_file) or {}).get("method")
            if method:
                known.append(f"method {method}")
        except RunRecordError as e:
            logger.warning(f"{e.path} is {e.reason}; it is kept as it is beside the earlier model.")
        record = state.get("best_metric")
        if isinstance(record, Mapping) and int(record.get("best_metric_epoch", -1)) > 0:
            name = getattr(getattr(self.evaluator, "state", None), "key_metric_name", None) or "validation score"
            known.append(f"best {name} {float(record['best_metric']):.4f} at epoch {int(record['best_metric_epoch'])}")
        kept = keep_copy(model)
        kept_run = keep_copy(run_file) if run_file.is_file() else None
        logger.warning(
            f"{model} holds the best model of an earlier training{' (' + ', '.join(known) + ')' if known else ''}, "
            f"which this run, started without --resume, replaces at its first validation: the earlier model is kept "
            f"as {kept.name}" + (f" and its run record as {kept_run.name}" if kept_run else "")
            + ". (--resume true continues that training instead; --overwrite true replaces it without a copy.)"
        )

    def _broken_best_model(self, stored: Mapping[str, Any]) -> tuple[Path, str, Mapping] | None:
        """``(model.pt, what is wrong with it, the checkpoint's best-metric record)`` when a resumed run must rebuild
        the best model: the file is missing although the record says it was saved, or it is there but does not
        load into this network (empty, truncated, damaged, not a weights file, another architecture); else
        ``None``."""
        from .checkpoints import CheckpointError, _check_checkpoint

        model = self._best_model_file() if self.best_model_saver is not None else None
        if model is None or self.evaluator is None:
            return None
        record = stored.get("best_metric") if isinstance(stored.get("best_metric"), Mapping) else {}
        saved = (record.get("key_metric_checkpoint") or {}).get("_saved") if isinstance(
            record.get("key_metric_checkpoint"), Mapping) else None
        if not model.exists():
            if saved or int(record.get("best_metric_epoch", -1)) > 0:
                return model, "missing", record
            return None  # no validation has saved one yet: nothing lost
        try:
            _check_checkpoint(model, self.save_dict.get("model"))
        except (CheckpointError, OSError) as e:
            reason = getattr(e.__cause__, "reason", None) or str(e).split("; pass the ")[0]
            return model, f"unusable ({reason})", record
        return None

    def _rebuild_best_model(self, engine: Any, model: Path, problem: str, record: Mapping) -> None:
        """Re-evaluate the restored network and write ``model.pt`` from it (logged), when resume found the best
        model missing or unusable (:meth:`_broken_best_model`).

        The best-metric record is reset first, so the validation's key-metric saver writes the file whatever the
        recorded best score; the record then restarts from this score. When the restored state is the epoch the
        best model came from, the rebuilt file holds the same weights; otherwise the lost best model cannot be
        recovered and the log says which epoch and score it had. The random state is kept as it was restored, so
        the training goes on as it would have."""
        import random

        epoch = int(engine.state.epoch or 0)
        best_epoch = int(record.get("best_metric_epoch", -1)) if record else -1
        best = record.get("best_metric") if record else None
        np_state, py_state = np.random.get_state(), random.getstate()
        with torch.random.fork_rng(devices=[]):
            self.evaluator.state.best_metric = -1
            self.evaluator.state.best_metric_epoch = -1
            checkpoint = getattr(self.best_model_saver, "_key_metric_checkpoint", None)
            if checkpoint is not None:
                checkpoint.reset()
            self.evaluator.run(max(epoch, 1))
        np.random.set_state(np_state)
        random.setstate(py_state)
        name = getattr(self.evaluator.state, "key_metric_name", None) or "validation score"
        score = float(getattr(self.evaluator.state, "best_metric", float("nan")))
        same = best_epoch == epoch and best_epoch > 0
        lost = "" if same or best_epoch <= 0 else (
            f"; the best model of epoch {best_epoch} ({name} {float(best):.4f}) was lost with it, so the best-model "
            "record restarts from this epoch")
        logger.warning(
            f"resume: {model} was {problem}; rebuilt it from the restored epoch-{epoch} training state"
            + (" (the epoch it was saved at: the same weights)" if same else "")
            + f", re-evaluated at {name} {score:.4f}{lost}."
        )

    def _checkpoint_files(self) -> dict[Path, float]:
        d = Path(self.save_dir)
        if not d.is_dir():
            return {}
        return {p: p.stat().st_mtime_ns for p in d.iterdir() if CHECKPOINT_RE.match(p.name) and p.is_file()}

    def _prune_earlier_runs(self, engine: Any) -> None:
        """Keep the folder at ``n_saved`` training states across runs.

        ``CheckpointSaver`` only rotates the files its own process wrote, so a resumed run (or a new run into the
        same ``output_dir``) would leave the earlier process's ``checkpoint_epoch=K.pt`` behind: a stale state that
        ``--resume`` could later pick up when it has the higher epoch. Once this run has written a checkpoint, an
        earlier file of a *later* epoch than this run has reached is removed (it belongs to a replaced run), and the
        other earlier files only beyond the ``n_saved`` newest states in the folder (logged)."""
        if not self._earlier:
            return
        now = self._checkpoint_files()
        ours = [p for p in now if p not in self._earlier or now[p] != self._earlier[p]]
        if not ours:
            return  # nothing of this run saved yet (save_interval > 1)
        epoch = int(getattr(engine.state, "epoch", 0) or 0)

        def number(p: Path) -> int:
            m = CHECKPOINT_RE.match(p.name)
            return int(m.group(2)) if m else -1

        earlier = [p for p in self._earlier if now.get(p) == self._earlier[p]]
        keep = max(self.n_saved - len(ours), 0)
        survivors = sorted((p for p in earlier if number(p) <= epoch), key=number, reverse=True)[:keep]
        for p in earlier:
            if p not in survivors:
                p.unlink()
                logger.info(f"removed {p.name}: training state of an earlier run, superseded by this run's checkpoint")
        self._earlier = {p: self._earlier[p] for p in survivors}

    def attach(self, engine: Any) -> None:
        from ignite.engine import Events
        from monai.handlers import CheckpointLoader

        from medsemiseg.checkpoint_io import AtomicCheckpointSaver, newest_loadable_checkpoint, remove_partial_writes
        from medsemiseg.distributed import is_main
        from medsemiseg.random_state import RandomState

        objs = dict(self.save_dict)
        objs.setdefault("trainer", engine)
        # torch / numpy / python RNGs, the random transforms' and generators' states and the data streams' positions:
        # without them a resumed run replays epoch 1's random stream (set_determinism and the DataLoaders re-seed)
        objs.setdefault("rng", RandomState(engine))
        if getattr(engine, "amp", False):
            # the AMP loss scale: without it a resumed run restarts at 2**16 and skips steps the uninterrupted one took
            objs.setdefault("scaler", GradScalerState(engine))
        # under torchrun only rank 0 writes (lock, run record, checkpoints); every process loads a resumed state
        writes = is_main()
        if writes:
            self._take_lock(engine)
            # when the run starts, not here: building the trainer (a config check, ConfigWorkflow.check_properties)
            # must not replace the record of the model already in save_dir, nor stop because there is one
            engine.add_event_handler(Events.STARTED, lambda _engine: self._keep_the_earlier_run())
            engine.add_event_handler(Events.STARTED, lambda _engine: remove_partial_writes(self.save_dir))
            engine.add_event_handler(Events.STARTED, lambda _engine: self._write_run_file())
        if self.resume:
            # only the key structure is read here (tensors memory-mapped); CheckpointLoader reads them at STARTED
            found = newest_loadable_checkpoint(self.save_dir)
            for skipped in found.skipped:
                logger.warning(f"resume: skipped {skipped.path.name}, {skipped.reason}.")
            if found.path is None and found.skipped:
                raise BundleConfigError(
                    f"resume: no checkpoint in {self.save_dir} can be loaded ("
                    + "; ".join(f"{e.path.name}: {e.reason}" for e in found.skipped)
                    + "). Delete them to train from scratch in this folder, or train into another --output_dir."
                )
            try:
                read_run_record(Path(self.save_dir) / RUN_FILE)
            except RunRecordError as e:
                logger.warning(f"resume: {e.path} is {e.reason}; it is written again from this run's settings when "
                               "the run starts.")
            if found.path is None:
                logger.info(f"resume: no checkpoint in {self.save_dir} yet; training from scratch.")
            else:
                path = str(found.path)
                stored = found.content
                self.loaded_from = path
                loc = self.map_location if self.map_location is not None else engine.state.device
                load = dict(objs)
                if "best_metric" in load and "best_metric" not in stored:
                    logger.warning(f"resume: {path} holds no best-metric record; the best model restarts.")
                    load.pop("best_metric")
                if "rng" in load and "rng" not in stored:
                    logger.warning(
                        f"resume: {path} holds no random-state record (written by an older version); training "
                        "continues, but its random draws (augmentations, shuffling) differ from an uninterrupted run."
                    )
                    load.pop("rng")
                if "scaler" in load and "scaler" not in stored:
                    logger.warning(
                        f"resume: {path} holds no AMP GradScaler state (written without amp, or by an older version); "
                        "training continues with the loss scale starting afresh, so its first steps may differ "
                        "from an uninterrupted run (overflow-skipped steps)."
                    )
                    load.pop("scaler")
                if "run" in load:
                    if "run" in stored:
                        self.run_info.check_against(stored["run"], path)
                        self.run_info.check_data(stored["run"], path, self.allow_changed_data, _epoch_of(stored))
                    else:
                        load.pop("run")  # written before run records existed: nothing to compare
                missing = sorted(set(load) - set(stored))
                if missing:
                    raise BundleConfigError(
                        f"resume: {path} holds no {missing} (it holds {sorted(stored)}): it was written by a run with "
                        "another method (e.g. a supervised run has no EMA teacher). Resume with that run's --method, "
                        "or train this one into another --output_dir (or replace that run: --overwrite true, "
                        "without --resume)."
                    )
                CheckpointLoader(load_path=path, load_dict=load, map_location=loc).attach(engine)
                broken = self._broken_best_model(stored)
                if broken is not None:
                    # after the loader (handlers run in the order attached): the restored network is re-evaluated
                    engine.add_event_handler(Events.STARTED, lambda e: self._rebuild_best_model(e, *broken))
                scheduler = self.save_dict.get("lr_scheduler")
                if scheduler is not None:
                    configured = _schedule_of(scheduler)
                    engine.add_event_handler(Events.STARTED, lambda _e: _retarget_schedule(scheduler, configured))
                engine.add_event_handler(Events.STARTED, _say_if_already_finished)
                logger.info(f"resume: training state will be restored from {path}"
                            + (f" (the newest that loads; {len(found.skipped)} newer skipped)." if found.skipped
                               else "."))
        if self.save_interval > 0:
            if writes:
                Path(self.save_dir).mkdir(parents=True, exist_ok=True)
            # attached in every process, so that each one's state_dict() runs at the same point (the random-state
            # record gathers every process's); ignite's DiskSaver writes in rank 0 only
            saver = AtomicCheckpointSaver(
                save_dir=self.save_dir,
                save_dict=objs,
                save_interval=self.save_interval,
                n_saved=self.n_saved,
                epoch_level=True,
            )
            # ignite calls EPOCH_COMPLETED handlers in the order they were attached; this one is attached when
            # the run starts, after every handler of the config (ValidationHandler included), so that an epoch's
            # checkpoint holds that epoch's validation result in its best-metric record
            from ignite.engine import Events

            def _attach_saver(_engine: Any) -> None:
                if not self._saver_attached:  # a second engine.run() must not attach a second saver
                    saver.attach(_engine)
                    if writes:
                        # attached after the saver: runs once that epoch's checkpoint is on disk
                        _engine.add_event_handler(Events.EPOCH_COMPLETED, self._prune_earlier_runs)
                        self._earlier = self._checkpoint_files()
                    self._saver_attached = True

            engine.add_event_handler(Events.STARTED, _attach_saver)
