"""Inference task for a medsemiseg MONAI bundle, on MONAI Label's ``BasicInferTask``.

Reads the bundle the way MONAI Label's ``monailabel.tasks.infer.bundle.BundleInferTask`` does -- the
``configs/inference.json`` config with ``bundle_root`` set to the bundle folder, its ``network_def``,
``preprocessing``, ``inferer`` and ``postprocessing``, and the class names and dimension from
``configs/metadata.json`` -- without importing ``monailabel.transform.post`` (which needs ``torchvision``). The
bundle's ``postprocessing`` inverts its resize (``Invertd``), so the label map already has the input's size and
MONAI Label's ``Restored`` step is not needed; only the channel axis is squeezed so the returned label map has the
input image's 2D shape -- or, for a NIfTI study stored as X x Y x 1, that shape.

The result is written by :meth:`BundleInferTask.writer`: a NIfTI label map through nibabel with the input's affine
(MONAI Label's default ITK writer drops the affine of 2D arrays: 1 mm pixels at the origin) and, unless the request
says otherwise, as ``uint8`` (a class index; float32 broke PNG/JPEG output with HTTP 500); a picture input gets a
lossless ``.png`` label map rather than a JPEG one, and a DICOM study (``.dcm``) a NIfTI label map with the slice's
position and spacing rather than a DICOM file without them. A bundle installed without weights answers 409 until
it has been trained (MONAI Label would serve the network's random initial weights).
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Callable, Dict, Sequence

from monai.bundle import ConfigParser
from monai.inferers import Inferer, SimpleInferer
from monai.transforms import Compose, SaveImaged, SqueezeDimd
from monailabel.interfaces.tasks.infer_v2 import InferType
from monailabel.tasks.infer.basic_infer import BasicInferTask
from monailabel.transform.writer import Writer
from monailabel.utils.others.generic import file_ext, strtobool

from medsemiseg.atomic_io import atomic_write_bytes
from medsemiseg.bundle.writer import stored_shape

logger = logging.getLogger(__name__)


def local_bundles(app_dir: str, conf: Dict[str, str]) -> Dict[str, str]:
    """``{name: <app_dir>/model/<name>}`` for every name in ``conf["models"]``; never downloads anything."""
    names = [m.strip() for m in str(conf.get("models", "")).split(",") if m.strip()]
    if not names:
        raise ValueError("no bundle to serve: start the server with --conf models <name>[,<name>...] (e.g. covid).")
    found: Dict[str, str] = {}
    for name in names:
        path = os.path.join(app_dir, "model", name)
        if not os.path.isfile(os.path.join(path, "configs", "inference.json")):
            raise FileNotFoundError(
                f"{path}: no bundle there (configs/inference.json missing). Install it first: "
                f"`python -m medsemiseg.labelapp install bundles/{name} --app {app_dir}`."
            )
        logger.info(f"+++ Adding Bundle from Local: {name} => {path}")
        found[name] = path
    return found


class BundleInferTask(BasicInferTask):
    """Segmentation inference with a local medsemiseg bundle (2D, label map resized back to the input)."""

    def __init__(self, path: str, conf: Dict[str, str], model_file: str = "model.pt", **kwargs: Any):
        self.bundle_path = path
        self.bundle_config = ConfigParser()
        self.bundle_config.read_config(os.path.join(path, "configs", "inference.json"))
        self.bundle_config.config.update({"bundle_root": path})  # type: ignore[union-attr]

        model_path = os.path.join(path, "models", model_file)
        if not os.path.isfile(model_path):  # installed --untrained: /infer answers 409 until /train has trained it
            logger.warning(f"{model_path}: no trained weights yet; POST /train/{os.path.basename(path)} trains them.")
        network = self.bundle_config.get_parsed_content("network_def", instantiate=True)

        with open(os.path.join(path, "configs", "metadata.json")) as fp:
            metadata = json.load(fp)
        self.key_image, image = next(iter(metadata["network_data_format"]["inputs"].items()))
        self.key_pred, pred = next(iter(metadata["network_data_format"]["outputs"].items()))
        labels = {v.lower(): int(k) for k, v in pred.get("channel_def", {}).items() if v.lower() != "background"}
        spatial_shape = image.get("spatial_shape") or []

        super().__init__(
            path=model_path,
            network=network,
            type=InferType.SEGMENTATION,
            labels=labels,
            dimension=len(spatial_shape) or 2,
            description=metadata.get("description", ""),
            preload=strtobool(conf.get("preload", "false")),
            load_strict=True,
            **kwargs,
        )
        self.version = metadata.get("version")

    def __call__(self, request, callbacks=None):
        """Run the inference; a failure reaches the client as HTTP 422 with its message (MONAI Label's default is a
        bare "500 Internal Server Error", the message only in the server log): an unreadable study, a 3D volume,
        a study with other channels than the bundle's network takes."""
        from fastapi import HTTPException

        if not os.path.isfile(self.path[0]):  # MONAI Label would serve the network's random initial weights
            name = os.path.basename(self.bundle_path)
            raise HTTPException(
                status_code=409,
                detail=f"model {name!r} has no trained weights yet ({self.path[0]}): save the labels of at least two "
                f"studies as final and POST /train/{name}, or install trained weights (python -m medsemiseg.labelapp "
                f"install bundles/{name} --model <model.pt>).",
            )
        try:
            return super().__call__(request, callbacks)
        except Exception as e:  # noqa: BLE001 - every failure of one request is reported to that request
            logger.exception("inference failed")
            raise HTTPException(status_code=422, detail=f"medsemiseg bundle inference failed: {type(e).__name__}: {e}") from e

    def info(self) -> Dict[str, Any]:
        i = super().info()
        i["version"] = self.version
        return i

    def _parsed(self, key: str) -> Any:
        return self.bundle_config.get_parsed_content(key, instantiate=True)

    def pre_transforms(self, data=None) -> Sequence[Callable]:
        c = self._parsed("preprocessing")
        return list(c.transforms) if isinstance(c, Compose) else list(c)

    def inferer(self, data=None) -> Inferer:
        return self._parsed("inferer") if self.bundle_config.get("inferer") else SimpleInferer()

    def post_transforms(self, data=None) -> Sequence[Callable]:
        c = self._parsed("postprocessing")
        post = list(c.transforms) if isinstance(c, Compose) else list(c)
        post = [t for t in post if not isinstance(t, SaveImaged)]  # MONAI Label writes the result itself
        # (1, X, Y) label map -> (X, Y), the layout of the 2D input MONAI Label hands back to the viewer
        return post + [SqueezeDimd(keys=self.key_pred, dim=0)]

    def writer(self, data: Dict[str, Any], extension=None, dtype=None):
        """Write the label map with the input's geometry, as a class-index type, losslessly (see module doc)."""
        if extension is not None:
            data["result_extension"] = extension
        if dtype is not None:
            data["result_dtype"] = dtype
        data.setdefault("result_dtype", "uint8")  # class indices; a request may still ask for another type
        path = str(data.get("image_path") or "")
        ext = data.get("result_extension") or file_ext(path)
        if not data.get("result_extension") and path.lower().endswith((".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")):
            data["result_extension"] = ext = ".png"
        if not data.get("result_extension") and path.lower().endswith(".dcm"):
            data["result_extension"] = ext = ".nii.gz"  # a label map with the slice's geometry, not a bare DICOM
        if self.labels is not None:
            data["labels"] = self.labels
        if str(ext).lower() in (".nii", ".nii.gz") and data.get("result_write_to_file", True):
            import gzip
            import tempfile

            import nibabel as nib
            import numpy as np

            pred = data[self.output_label_key]
            affine = np.asarray(pred.affine if hasattr(pred, "affine") else np.eye(4), dtype=np.float64)
            array = np.asarray(pred.detach().cpu() if hasattr(pred, "detach") else pred).astype(data["result_dtype"])
            array = array.reshape(stored_shape(path, array.shape))  # X x Y x 1 for such a study
            out = tempfile.NamedTemporaryFile(suffix=str(ext)).name
            nifti = nib.Nifti1Image(array, affine).to_bytes()
            atomic_write_bytes(out, gzip.compress(nifti, mtime=0) if str(ext).lower().endswith(".gz") else nifti)
            return out, data.get(self.output_json_key, {})
        return Writer(label=self.output_label_key, json=self.output_json_key)(data)
