"""The label maps ``inferring`` writes, one per input, named after it."""

from __future__ import annotations

import gzip
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medsemiseg.atomic_io import atomic_write, atomic_write_bytes
from medsemiseg.data.slices import item_value

__all__ = ["PredictionWriter", "stored_shape"]

logger = logging.getLogger(__name__)


class PredictionWriter:
    """Write each predicted label map next to its input's name, as the evaluator produces it.

    Attach to the inference evaluator (``val_handlers``). For every item (after ``postprocessing``, so ``pred`` is
    a ``(1, X, Y)`` label map) it writes ``<output_dir>/<name><suffix>.nii.gz`` with the input's affine, and, when
    ``png`` is true and the input was 2D, ``<name><suffix>.png`` (upright: rows = Y; label ``k`` stored as
    ``k * png_scale``, so a binary vessel map is 0/255). The slices of a 3D input are collected and written as one
    ``(X, Y, Z)`` volume when the last one arrives. A prediction whose size differs from the input's (no inversion
    in ``postprocessing``) is resized back with nearest-neighbour interpolation. Each written file is logged with
    the input it comes from (``written`` lists the files, ``sources`` maps each to its input). Each file is written
    whole or not at all (:mod:`medsemiseg.atomic_io`): a full disk names the file and leaves no 0-byte label map. A volume whose
    slices were unevenly spaced (``slice_spacing_deviation`` of the items, in mm) is written with the mean slice
    step, which one NIfTI affine cannot avoid: that is logged as a warning.

    Args:
        output_dir: folder for the label maps (created).
        suffix: appended to the input name (``"_seg"``).
        png: also write PNGs for 2D inputs (fundus bundle).
        png_scale: grey value per class in PNGs; ``None``: ``255 // (num_classes - 1)``.
        num_classes: classes, for ``png_scale``.
        pred_key: key of the label map in the engine output.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        suffix: str = "_seg",
        png: bool = False,
        png_scale: int | None = None,
        num_classes: int = 2,
        pred_key: str = "pred",
    ) -> None:
        self.output_dir = Path(str(output_dir))
        self.suffix = suffix
        self.png = bool(png)
        self.png_scale = int(png_scale) if png_scale is not None else max(1, 255 // max(1, int(num_classes) - 1))
        self.pred_key = pred_key
        self._volumes: dict[str, dict] = {}
        self.written: list[str] = []
        self.sources: dict[str, str] = {}

    def attach(self, engine: Any) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.ITERATION_COMPLETED, self)
        engine.add_event_handler(Events.COMPLETED, self._check_complete)

    def __call__(self, engine: Any) -> None:
        batch, output = engine.state.batch, engine.state.output
        if isinstance(output, dict):  # not decollated
            raise RuntimeError("PredictionWriter needs the evaluator's default decollate=True.")
        for b, o in zip(batch, output):
            self._write_item({**b, **o})

    def _label_map(self, item: Mapping) -> np.ndarray:
        pred = item[self.pred_key]
        arr = pred.detach().cpu() if isinstance(pred, torch.Tensor) else torch.as_tensor(np.asarray(pred))
        if arr.ndim == 3 and arr.shape[0] > 1:  # not argmax-ed yet
            arr = arr.argmax(0, keepdim=True)
        if arr.ndim == 2:
            arr = arr[None]
        want = tuple(int(s) for s in np.asarray(item_value(item["spatial_shape"])).reshape(-1))
        if tuple(arr.shape[1:]) != want:
            arr = torch.nn.functional.interpolate(arr[None].float(), size=want, mode="nearest")[0]
        return arr[0].round().to(torch.int16).numpy()

    def _write_item(self, item: Mapping) -> None:
        name = str(item_value(item["name"]))
        k = int(item_value(item.get("slice", -1)))
        n = int(item_value(item.get("num_slices", 1)))
        affine = np.asarray(item_value(item["affine"]), dtype=np.float64).reshape(4, 4)
        source = item.get("source")
        source = None if source is None else str(item_value(source))
        label = self._label_map(item)
        if k < 0:
            self._save(name, label, affine, png=self.png, source=source)
            return
        deviation = float(item_value(item.get("slice_spacing_deviation", 0.0)))
        vol = self._volumes.setdefault(name, {"slices": {}, "n": n, "affine": affine, "source": source,
                                              "deviation": deviation})
        vol["slices"][k] = label
        if len(vol["slices"]) == vol["n"]:
            stack = np.stack([vol["slices"][i] for i in range(vol["n"])], axis=-1)
            self._save(name, stack, vol["affine"], png=False, source=vol["source"], deviation=vol["deviation"])
            del self._volumes[name]

    def _save(
        self, name: str, label: np.ndarray, affine: np.ndarray, png: bool, source: str | None = None,
        deviation: float = 0.0,
    ) -> None:
        import nibabel as nib

        self.output_dir.mkdir(parents=True, exist_ok=True)
        path = self.output_dir / f"{name}{self.suffix}.nii.gz"
        image = nib.Nifti1Image(label.reshape(stored_shape(source, label.shape)).astype(np.int16), affine)
        atomic_write_bytes(path, gzip.compress(image.to_bytes(), compresslevel=6, mtime=0))
        self.written.append(str(path))
        if source is not None:
            self.sources[str(path)] = source
        png_path = None
        if png:
            from PIL import Image

            png_path = self.output_dir / f"{name}{self.suffix}.png"
            img = np.clip(label.T.astype(np.int32) * self.png_scale, 0, 255).astype(np.uint8)  # rows = Y: upright
            atomic_write(png_path, lambda f: Image.fromarray(img).save(f, format="PNG"))
            self.written.append(str(png_path))
            if source is not None:
                self.sources[str(png_path)] = source
        logger.info(
            f"PredictionWriter: wrote {path}" + (f" (from {source})" if source is not None else "")
            + (f" and {png_path.name}" if png_path is not None else "")
        )
        step = float(np.linalg.norm(affine[:3, 2])) if label.ndim == 3 else 0.0
        if label.ndim == 3 and deviation > max(1e-2, 0.01 * step):  # 1 % of the step, at least 0.01 mm
            logger.warning(
                f"PredictionWriter: {path}: the input's slices are unevenly spaced (up to {deviation:.2f} mm off a "
                f"regular grid); one NIfTI volume cannot represent that, so the written affine uses the mean step "
                f"of {step:.3f} mm and slices between the first and the last may lie up to {deviation:.2f} mm from "
                "where they were taken (their true positions: read_image(<input>).meta['slice_positions'])."
            )

    def _check_complete(self, engine: Any) -> None:
        from medsemiseg.data.slices import LazySlice

        LazySlice.forget()  # the last input's volume, kept while its slices were read
        if self._volumes:
            missing = {k: v["n"] - len(v["slices"]) for k, v in self._volumes.items()}
            raise RuntimeError(f"PredictionWriter: volumes left incomplete (missing slices): {missing}.")


def stored_shape(source: str | os.PathLike | None, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape a label map of ``shape`` is written in for the input ``source``: the input's own when it is a NIfTI
    file holding the same pixels with singleton axes (one slice stored as X x Y x 1, as SimpleITK writes it), else
    ``shape``. A label map then matches its input voxel for voxel, as viewers and MONAI Label expect."""
    if source is None or not str(source).lower().endswith((".nii", ".nii.gz")):
        return tuple(shape)
    import nibabel as nib

    try:
        own = tuple(int(s) for s in nib.load(str(source)).shape)
    except Exception:  # noqa: BLE001 - the input was read already; the label map keeps the network's shape
        return tuple(shape)
    same = tuple(s for s in own if s != 1) == tuple(s for s in shape if s != 1)
    return own if same and own != tuple(shape) else tuple(shape)
