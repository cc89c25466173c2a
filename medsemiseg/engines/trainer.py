"""``SemiSupervisedTrainer``: a MONAI ``SupervisedTrainer`` that also draws unlabelled batches.

MONAI's trainer runs one labelled batch per iteration through ``network`` and ``loss_function``. Semi-supervised
methods need, in the same iteration, a batch of unlabelled images and a method-specific loss (pseudo-labels,
mixing, strong views, a discriminator term). This class keeps everything of ``SupervisedTrainer`` — ignite engine,
``train_handlers``, ``key_train_metric``, ``postprocessing``, decollation, ``amp``/``GradScaler``, MONAI's
``IterationEvents`` — and replaces only ``_iteration``:

1. ``prepare_batch`` the labelled batch (``engine.state.batch``) as ``SupervisedTrainer`` does;
2. take the next batch of an *independently cycled* unlabelled loader (its iterator is recreated when exhausted,
   so every pass reshuffles; a ``DistributedSampler``'s epoch is advanced each pass) and move it to the device;
3. call ``method(engine, labeled, unlabeled)`` under ``torch.autocast`` when ``amp``: on CUDA in ``amp_dtype``
   (float16 or bfloat16), on the CPU in bfloat16 only (a network wrapped for speed,
   :class:`medsemiseg.engines.speed.CompiledNetwork`, is told a new step begins first, for CUDA graphs);
4. check the total loss is finite (else stop with an error naming the iteration and the non-finite terms, before
   any optimiser step, so nothing is updated and no checkpoint of a broken model is written);
5. back-propagate (through the trainer's ``GradScaler`` when amp in float16; bfloat16 needs no scaler), step the optimiser, fire ``FORWARD_COMPLETED``,
   ``LOSS_COMPLETED``, ``BACKWARD_COMPLETED``, ``MODEL_COMPLETED`` as ``SupervisedTrainer`` does;
6. a network with ``sync_buffers`` (:class:`medsemiseg.distributed.DistributedNetwork`, one of several
   ``torchrun`` processes) averages its BatchNorm statistics over the processes, so the EMA teacher and the
   checkpoint see the same model in every process;
7. before ``MODEL_COMPLETED``, check every floating-point parameter and buffer of the network is finite (a finite
   loss can still leave e.g. BatchNorm's ``running_var`` at inf); else stop with the same ``NonFiniteLossError``
   naming the first non-finite tensor and the iteration, before that iteration's ``MODEL_COMPLETED`` /
   ``ITERATION_COMPLETED`` handlers and the epoch's checkpoint run (one device sync per iteration).

``engine.state.output`` holds ``image``, ``label``, ``pred``, ``loss`` and every scalar the method returned
(``loss_sup``, ``loss_unsup``, ``mask_ratio``, ...) as detached tensors, so stock handlers log them. Because MONAI
decollates ``engine.state.output`` into one dict per *labelled* item at ``MODEL_COMPLETED`` (and the unlabelled
batch may have another size), non-scalar extras (e.g. SUFD's detached features) are kept, with the scalars, whole
in ``engine.state.method_output``: that is where handlers such as ``DiscriminatorStep`` read them.

The labelled loader needs no special code to cycle: when ``epoch_length`` exceeds ``len(train_data_loader)``
ignite restarts the data iterator inside the epoch (``DATALOADER_STOP_ITERATION``); this class only sets a
``DistributedSampler``'s epoch to the number of the pass it starts, so every pass is reshuffled too.
"""

from __future__ import annotations

import logging
import math
import numbers
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from monai.data import MetaTensor
from monai.engines import SupervisedTrainer
from monai.engines.utils import IterationEvents, default_prepare_batch
from monai.utils.enums import CommonKeys as Keys
from torch.utils.data import DataLoader, DistributedSampler

logger = logging.getLogger(__name__)

__all__ = ["SemiSupervisedTrainer", "NonFiniteLossError"]


class NonFiniteLossError(FloatingPointError):
    """Raised when a method returns a NaN/inf loss (names the iteration, epoch and offending terms), or when an
    iteration leaves a parameter or buffer of the network NaN/inf (names the first such tensor and the iteration)."""


def _plain(x: Any) -> Any:
    """MetaTensor -> plain tensor (mixing ops and losses need no metadata; it only costs time)."""
    return x.as_tensor() if isinstance(x, MetaTensor) else x


class SemiSupervisedTrainer(SupervisedTrainer):
    """Semi-supervised trainer: ``SupervisedTrainer`` + an unlabelled stream + a pluggable ``method``.

    Args:
        device, max_epochs, train_data_loader, network, optimizer: as ``SupervisedTrainer`` (the labelled loader).
        method: callable ``method(engine, labeled, unlabeled) -> dict`` (see ``medsemiseg.methods``) returning
            ``"loss"`` (with grad), ``"pred"`` (logits of the labelled batch) and its terms; its ``handlers``
            attribute (a list of objects with ``attach(engine)``) is attached here.
        unlabeled_data_loader: iterable of dicts with ``"image"`` (the weak view); ``None`` for methods that use
            labelled data only. Cycled independently of ``train_data_loader``.
        loss_function: optional; a method without its own ``sup_loss`` uses it for the supervised term.
        epoch_length: iterations per epoch (default ``len(train_data_loader)``); may exceed both loaders' lengths.
            ``max_epochs`` and ``epoch_length`` must be integers >= 1 (else a ``ValueError`` naming the argument).
        amp: autocast + GradScaler on CUDA; on a CPU device it is ignored with a warning, unless ``amp_dtype`` is
            bfloat16 (CPU autocast supports bfloat16).
        amp_dtype: the autocast dtype, ``float16`` (with a ``GradScaler``) or ``bfloat16`` (without one: its
            exponent range is float32's, so no loss scaling is needed); a ``dtype`` in ``amp_kwargs`` wins.
        All other arguments are passed to ``SupervisedTrainer`` unchanged (``inferer`` and ``compile`` are not
        used by methods, which call the network themselves).
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: Iterable | DataLoader,
        network: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        method: Callable,
        unlabeled_data_loader: Iterable | DataLoader | None = None,
        loss_function: Callable | None = None,
        epoch_length: int | None = None,
        non_blocking: bool = False,
        prepare_batch: Callable = default_prepare_batch,
        postprocessing: Callable | None = None,
        key_train_metric: dict | None = None,
        additional_metrics: dict | None = None,
        metric_cmp_fn: Callable | None = None,
        train_handlers: Sequence | None = None,
        amp: bool = False,
        event_names: list | None = None,
        event_to_attr: dict | None = None,
        decollate: bool = True,
        optim_set_to_none: bool = False,
        to_kwargs: dict | None = None,
        amp_kwargs: dict | None = None,
        accumulation_steps: int = 1,
        amp_dtype: Any = None,
        **kwargs: Any,
    ) -> None:
        from .speed import amp_dtype as _amp_dtype

        amp_kwargs = dict(amp_kwargs or {})
        if amp_dtype is not None:  # else autocast's own default: float16 on CUDA
            amp_kwargs.setdefault("dtype", _amp_dtype(amp_dtype))
        if method is None or not callable(method):
            raise TypeError(
                "SemiSupervisedTrainer(method=...) must be a callable method(engine, labeled, unlabeled) -> dict, "
                "e.g. medsemiseg.methods.create_method('supmix_sufd', network, num_classes)."
            )
        for key, value in (("max_epochs", max_epochs), ("epoch_length", epoch_length)):
            if key == "epoch_length" and value is None:
                continue  # ignite's default: one pass over train_data_loader
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(
                    f"SemiSupervisedTrainer: {key}={value!r} must be a whole number >= 1; "
                    + (
                        "with 0 iterations per epoch nothing would be trained and no model written."
                        if key == "epoch_length"
                        else "with no epoch nothing would be trained and no model written."
                    )
                )
        requires_unlabeled = bool(getattr(method, "requires_unlabeled", False))
        if requires_unlabeled and unlabeled_data_loader is None:
            raise ValueError(
                f"SemiSupervisedTrainer: method {type(method).__name__} needs unlabelled images but "
                "unlabeled_data_loader is None; pass a loader over the datalist's 'unlabeled' items "
                "(or use the 'supervised' method)."
            )
        if unlabeled_data_loader is not None:
            try:
                n_unl = len(unlabeled_data_loader)  # type: ignore[arg-type]
            except TypeError:
                n_unl = None
            if n_unl == 0:
                raise ValueError(
                    "SemiSupervisedTrainer: unlabeled_data_loader is empty (0 batches): its dataset holds no image, "
                    "or drop_last=True with unlabeled_data_loader.batch_size larger than the number of unlabelled "
                    "images. Give its dataset the datalist's 'unlabeled' items, or lower "
                    "unlabeled_data_loader.batch_size."
                )
        _log_small_split(train_data_loader, "labelled", "train_data_loader")
        if unlabeled_data_loader is not None:
            _log_small_split(unlabeled_data_loader, "unlabelled", "unlabeled_data_loader")
        if metric_cmp_fn is not None:
            kwargs["metric_cmp_fn"] = metric_cmp_fn
        super().__init__(
            device=device,
            max_epochs=max_epochs,
            train_data_loader=train_data_loader,
            network=network,
            optimizer=optimizer,
            loss_function=loss_function,  # type: ignore[arg-type]
            epoch_length=epoch_length,
            non_blocking=non_blocking,
            prepare_batch=prepare_batch,
            postprocessing=postprocessing,
            key_train_metric=key_train_metric,
            additional_metrics=additional_metrics,
            train_handlers=train_handlers,
            amp=amp,
            event_names=event_names,
            event_to_attr=event_to_attr,
            decollate=decollate,
            optim_set_to_none=optim_set_to_none,
            to_kwargs=to_kwargs,
            amp_kwargs=amp_kwargs,
            accumulation_steps=accumulation_steps,
            **kwargs,
        )
        self.method = method
        self.unlabeled_data_loader = unlabeled_data_loader
        self._unlabeled_iter = None
        self._unlabeled_passes = 0
        # where each data stream stands, for resuming mid-pass (:meth:`stream_state_dict`): batches consumed from
        # the current pass's iterator and the RNG state its iterator was created under
        self._unlabeled_consumed = 0
        self._unlabeled_rng: dict | None = None
        self._labeled_consumed = 0
        self._labeled_rng: dict | None = None
        self._labeled_passes = 0
        self._pending_streams: dict = {}
        self.state.method_output = {}
        self._amp_warned = False
        #: bfloat16 autocast: no GradScaler (``run`` creates none)
        self.amp_bf16 = bool(amp) and amp_kwargs.get("dtype") == torch.bfloat16

        for handler in getattr(method, "handlers", None) or []:
            handler.attach(self)

    def run(self) -> None:  # type: ignore[override]
        """Train, as ``SupervisedTrainer.run``; with bfloat16 autocast no ``GradScaler`` is created
        (``engine.scaler`` is ``None``, and a checkpoint's scaler entry is empty)."""
        if not self.amp_bf16:
            super().run()
            return
        from monai.engines.workflow import Workflow

        self.scaler = None
        Workflow.run(self)

    # ------------------------------------------------------------------ stream positions (resume)
    def stream_state_dict(self) -> dict:
        """Where the labelled and unlabelled streams stand: passes started, batches consumed from the current pass
        and the RNG state (torch's, and the loader's own generators) that pass's iterator was created under, so a
        resumed run continues the same pass in the same order (:meth:`load_stream_state_dict`). Saved in each
        checkpoint by :class:`medsemiseg.random_state.RandomState`."""
        out: dict = {"unlabeled": {"passes": int(self._unlabeled_passes),
                                   "consumed": int(self._unlabeled_consumed) if self._unlabeled_iter is not None else -1}}
        if self._unlabeled_iter is not None and self._unlabeled_rng is not None:
            out["unlabeled"]["rng"] = self._unlabeled_rng
        out["labeled"] = {"passes": int(self._labeled_passes),
                          "consumed": int(self._labeled_consumed) if self._dataloader_iter is not None else -1}
        if self._dataloader_iter is not None and self._labeled_rng is not None:
            out["labeled"]["rng"] = self._labeled_rng
        return out

    def load_stream_state_dict(self, state: dict) -> None:
        """Continue the streams of :meth:`stream_state_dict` (applied when each stream's iterator is next needed,
        i.e. after every re-seeding of the run's start: call it at or after ``Events.STARTED``)."""
        unl = dict(state.get("unlabeled", {}))
        self._unlabeled_passes = int(unl.get("passes", 0))
        self._unlabeled_iter = None
        self._pending_streams = {k: dict(v) for k, v in state.items() if isinstance(v, dict) and "rng" in v
                                 and int(v.get("consumed", -1)) > 0}
        for which, loader in (("unlabeled", self.unlabeled_data_loader), ("labeled", self.data_loader)):
            try:
                if which in self._pending_streams and self._pending_streams[which]["consumed"] >= len(loader):
                    del self._pending_streams[which]  # that pass was used up: the next one starts afresh, as it would
            except TypeError:
                pass
        self._labeled_passes = int(state.get("labeled", {}).get("passes", 0))
        if "unlabeled" in self._pending_streams:
            self._unlabeled_passes -= 1  # that pass's iterator is re-created (and counted) when next needed
        if "labeled" in self._pending_streams:
            self._labeled_passes -= 1
        self._dataloader_iter = None  # ignite re-creates it (through _setup_dataloader_iter) when the epoch starts

    def _resumed_iter(self, which: str, loader: Any) -> Any:
        from medsemiseg.random_state import resumed_iter

        pending = self._pending_streams.pop(which, None)
        if pending is None:
            return None
        consumed = int(pending["consumed"])  # < len(loader): load_stream_state_dict dropped used-up passes
        it = resumed_iter(loader, pending["rng"], consumed)
        if it is None:
            logger.warning(f"resume: the {which} loader cannot be continued mid-pass (no batch sampler); its pass restarts.")
            return None
        setattr(self, f"_{which}_rng", pending["rng"])
        setattr(self, f"_{which}_consumed", consumed)
        return it

    def _setup_dataloader_iter(self) -> None:
        """ignite's (re)creation of the labelled iterator, recording the RNG state its pass is drawn under; on
        resume, the interrupted pass is continued at the batch it had reached."""
        from medsemiseg.random_state import loader_rng_snapshot

        loader = self.state.dataloader
        if loader is not None and self._pending_streams.get("labeled") is not None:
            it = self._resumed_iter("labeled", loader)
            if it is not None:
                self._dataloader_iter = it
                self._labeled_passes += 1
                return
        sampler = getattr(loader, "sampler", None)
        if isinstance(sampler, DistributedSampler):
            # every pass reshuffled, by its number (not by the epoch: ignite starts a pass mid-epoch when epoch_length
            # differs from len(loader), and a resumed run starts its first one at an epoch's start)
            sampler.set_epoch(self._labeled_passes)
        self._labeled_consumed = 0
        self._labeled_rng = loader_rng_snapshot(loader) if loader is not None else None
        super()._setup_dataloader_iter()
        self._labeled_passes += 1

    # ------------------------------------------------------------------ unlabelled stream
    def _next_unlabeled_batch(self) -> Any:
        """Next unlabelled batch; the iterator is recreated (reshuffled) whenever it is exhausted."""
        from medsemiseg.random_state import loader_rng_snapshot

        loader = self.unlabeled_data_loader
        for attempt in range(2):
            if self._unlabeled_iter is None:
                sampler = getattr(loader, "sampler", None)
                if isinstance(sampler, DistributedSampler):
                    sampler.set_epoch(self._unlabeled_passes)
                resumed = self._resumed_iter("unlabeled", loader) if "unlabeled" in self._pending_streams else None
                if resumed is not None:
                    self._unlabeled_iter = resumed
                else:
                    self._unlabeled_rng = loader_rng_snapshot(loader)
                    self._unlabeled_consumed = 0
                    self._unlabeled_iter = iter(loader)  # type: ignore[arg-type]
                self._unlabeled_passes += 1
            try:
                batch = next(self._unlabeled_iter)
                self._unlabeled_consumed += 1
                return batch
            except StopIteration:
                self._unlabeled_iter = None
        raise ValueError(
            "SemiSupervisedTrainer: unlabeled_data_loader yielded no batch in a whole pass (an empty dataset, or "
            "drop_last=True with fewer unlabelled images than unlabeled_data_loader.batch_size); lower "
            "unlabeled_data_loader.batch_size or give its dataset more images."
        )

    def _prepare_unlabeled(self, batch: Any) -> dict:
        if isinstance(batch, torch.Tensor):
            batch = {Keys.IMAGE: batch}
        if not isinstance(batch, dict) or Keys.IMAGE not in batch:
            raise ValueError(
                "SemiSupervisedTrainer: each unlabelled batch must be a dict with an 'image' key (the weak view), "
                f"got {type(batch).__name__}" + (f" with keys {sorted(batch)}" if isinstance(batch, dict) else "")
            )
        out = {}
        for k, v in batch.items():
            if isinstance(v, torch.Tensor):
                out[k] = _plain(v).to(device=self.state.device, non_blocking=self.non_blocking, **self.to_kwargs)
        return out

    # ------------------------------------------------------------------ one iteration
    def _use_amp(self, engine: Any) -> bool:
        """Whether this iteration autocasts in float16 on CUDA through the GradScaler."""
        if not engine.amp or self.amp_bf16:
            return False
        device = engine.state.device
        if (device is None or torch.device(device).type != "cuda") or engine.scaler is None:
            if not self._amp_warned:
                warnings.warn("SemiSupervisedTrainer: amp=True needs a CUDA device in float16; running in float32 "
                              "(bfloat16 autocast runs on the CPU too: amp_dtype bfloat16).")
                self._amp_warned = True
            return False
        return True

    def _bf16_device(self, engine: Any) -> str | None:
        """The device type to autocast on in bfloat16 (no scaler): CUDA or the CPU; ``None`` without bf16 amp."""
        if not self.amp_bf16 or engine.state.device is None:
            return None
        kind = torch.device(engine.state.device).type
        return kind if kind in ("cuda", "cpu") else None

    def _check_finite(self, engine: Any, result: dict) -> None:
        loss = result[Keys.LOSS]
        if bool(torch.isfinite(loss.detach()).all()):
            return
        bad = []
        for k, v in result.items():
            if k in (Keys.LOSS, Keys.PRED):
                continue
            if isinstance(v, torch.Tensor) and v.numel() == 1 and not bool(torch.isfinite(v.detach()).all()):
                bad.append(f"{k}={float(v.detach()):.4g}")
            elif isinstance(v, float) and not math.isfinite(v):
                bad.append(f"{k}={v}")
        pred = result.get(Keys.PRED)
        if isinstance(pred, torch.Tensor) and not bool(torch.isfinite(pred.detach()).all()):
            bad.append("pred (network output) has NaN/inf")
        raise NonFiniteLossError(
            f"Non-finite training loss ({float(loss.detach())}) at iteration {engine.state.iteration} "
            f"(epoch {engine.state.epoch}) from method {type(self.method).__name__}; non-finite terms: "
            f"{', '.join(bad) if bad else 'none individually (their weighted sum overflowed)'}. "
            "No optimiser step was taken for this iteration. Check the learning rate (the optimizer's lr), the "
            "input intensities (are CT images windowed?) and amp."
        )

    def _check_finite_weights(self, engine: Any, loss: torch.Tensor) -> None:
        """Every floating-point parameter and buffer of the network is finite after this iteration's update.

        A finite loss does not guarantee finite weights: with a far too high learning rate the loss can stay at
        1e20 while BatchNorm's ``running_var`` (updated by the forward pass) or a weight overflows to inf. Checked
        before ``MODEL_COMPLETED``, so neither the iteration's handlers (discriminator step, EMA teacher) nor any
        later checkpoint / validation / best-model save sees a broken model.

        Cheap path, one device sync per iteration: one sum per tensor (in float32 at least), stacked and tested
        once. A NaN/inf anywhere makes its tensor's sum NaN/inf, so nothing non-finite is missed; only when that
        test fails are the tensors checked exactly (``isfinite``), which also rules out a sum that overflowed
        from finite values.
        """
        from .speed import unwrap

        network = unwrap(engine.network)  # a CompiledNetwork's tensors by the network's own names
        params = [(n, t) for n, t in network.named_parameters() if t.is_floating_point()]
        named = params + [(n, t) for n, t in network.named_buffers() if t.is_floating_point()]
        if not named:
            return
        with torch.no_grad():
            sums = torch.stack([t.sum(dtype=torch.float32) if t.element_size() < 4 else t.sum() for _, t in named])
            if bool(torch.isfinite(sums).all()):
                return
        bad = [i for i, (_, t) in enumerate(named) if not bool(torch.isfinite(t).all())]
        if not bad:
            return
        name = named[bad[0]][0]
        kind = "parameter" if bad[0] < len(params) else "buffer"
        more = f" (and {len(bad) - 1} more tensor(s))" if len(bad) > 1 else ""
        raise NonFiniteLossError(
            f"Non-finite network weights: {kind} {name!r}{more} holds NaN/inf after iteration "
            f"{engine.state.iteration} (epoch {engine.state.epoch}) of method {type(self.method).__name__}, although "
            f"the loss was finite ({float(loss.detach()):.4g}). Training stopped right after the optimiser step, "
            "before this iteration's discriminator step / EMA teacher update and before any checkpoint, so no "
            "checkpoint of this model was written (nor was it validated or saved as the best model). Lower the "
            "learning rate (the optimizer's lr); with amp=True, check amp_dtype (float16 relies on the GradScaler) "
            "or train with amp=False."
        )

    def _iteration(self, engine: Any, batchdata: dict[str, torch.Tensor]) -> dict:
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        self._labeled_consumed += 1
        batch = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking, **engine.to_kwargs)
        inputs, targets = batch[0], batch[1]
        if targets is None:
            raise ValueError(
                "SemiSupervisedTrainer: the labelled batch has no 'label'; train_data_loader must yield the "
                "datalist's 'labeled' items (image + label)."
            )
        labeled = {Keys.IMAGE: _plain(inputs), Keys.LABEL: _plain(targets)}
        unlabeled = None
        if self.unlabeled_data_loader is not None:
            unlabeled = self._prepare_unlabeled(self._next_unlabeled_batch())

        engine.state.output = {Keys.IMAGE: inputs, Keys.LABEL: targets}

        acc = engine.accumulation_steps
        if acc > 1:
            epoch_length = engine.state.epoch_length
            local_iter = (engine.state.iteration - 1) % epoch_length if epoch_length else engine.state.iteration - 1
            should_zero_grad = local_iter % acc == 0
            should_step = (local_iter + 1) % acc == 0 or (epoch_length is not None and local_iter + 1 == epoch_length)
        else:
            should_zero_grad = should_step = True

        engine.network.train()
        begin_step = getattr(engine.network, "begin_step", None)
        if callable(begin_step):
            begin_step()  # CompiledNetwork with CUDA graphs: the previous step's replay outputs are done with
        if should_zero_grad:
            engine.optimizer.zero_grad(set_to_none=engine.optim_set_to_none)

        use_amp = self._use_amp(engine)  # float16 on CUDA: the loss goes through the GradScaler
        autocast = "cuda" if use_amp else self._bf16_device(engine)
        if autocast is not None:
            with torch.autocast(autocast, **engine.amp_kwargs):
                result = self.method(engine, labeled, unlabeled)
        else:
            result = self.method(engine, labeled, unlabeled)
        if not isinstance(result, dict) or Keys.LOSS not in result or Keys.PRED not in result:
            raise TypeError(
                f"method {type(self.method).__name__} must return a dict with 'loss' and 'pred', got "
                f"{sorted(result) if isinstance(result, dict) else type(result).__name__}."
            )
        engine.state.output[Keys.PRED] = result[Keys.PRED]
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)

        self._check_finite(engine, result)
        loss = result[Keys.LOSS]
        engine.state.output[Keys.LOSS] = loss
        extras: dict[str, Any] = {}
        for k, v in result.items():
            if k in (Keys.LOSS, Keys.PRED):
                continue
            v = v.detach() if isinstance(v, torch.Tensor) else v
            extras[k] = v
            if not isinstance(v, torch.Tensor) or v.numel() == 1:
                engine.state.output[k] = v.reshape(()) if isinstance(v, torch.Tensor) else v
        engine.state.method_output = extras
        engine.fire_event(IterationEvents.LOSS_COMPLETED)

        scaled = loss / acc if acc > 1 else loss
        if use_amp:
            engine.scaler.scale(scaled).backward()
            engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
            if should_step:
                engine.scaler.step(engine.optimizer)
                engine.scaler.update()
        else:
            scaled.backward()
            engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
            if should_step:
                engine.optimizer.step()
        sync_buffers = getattr(engine.network, "sync_buffers", None)
        if callable(sync_buffers):
            sync_buffers()  # several processes (medsemiseg.distributed.DistributedNetwork): one set of BN statistics
        self._check_finite_weights(engine, loss)
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output


def _log_small_split(loader: Any, which: str, argument: str) -> None:
    """Log when a split holds fewer images than the loader's batch size (``<argument>.batch_size``).

    Without ``drop_last`` the loader then yields every batch smaller than asked for (all the images, once per batch),
    which changes the effective batch size (and, for the mixing methods, how many images are mixed). That is normal
    with a few labelled photographs (chase at 1/8: 3 images, batch size 4), so it is logged at INFO, not warned.
    """
    batch_size = getattr(loader, "batch_size", None)
    dataset = getattr(loader, "dataset", None)
    if not isinstance(batch_size, int) or dataset is None or getattr(loader, "drop_last", False):
        return
    try:
        n_images = len(dataset)
    except TypeError:
        return
    if 0 < n_images < batch_size:
        logger.info(
            "SemiSupervisedTrainer: the %s split has %d image(s), fewer than its batch size %d "
            "(%s.batch_size): every %s batch holds those %d.",
            which, n_images, batch_size, argument, which, n_images,
        )
