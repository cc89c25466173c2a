"""Write ``notebooks/walkthrough.ipynb`` from the cells below (keeps the notebook reviewable as plain Python).

    python scripts/build_walkthrough.py

The notebook is stored without outputs; ``tests/test_walkthrough.py`` runs its code cells with tiny settings.
"""
from __future__ import annotations

import json
from pathlib import Path

CELLS: list[tuple[str, str] | tuple[str, str, list[str]]] = [
    ("markdown", """# medsemiseg walk-through: a few labelled CT slices, many unlabelled ones

This notebook runs the whole path a user takes, on the built-in **synthetic** CT data set (phantoms, not patients),
in about two minutes on a 2-core CPU as it comes: it runs torch on one thread (`TORCH_THREADS = 1` below; measured on
a 2-core machine shared with other jobs: 60-83 s, against 16 minutes when torch picks its own thread count and its
threads spin-wait on the busy cores). On a free machine with more cores, raise it or set it to `None`:

1. the data: a MedSeg-layout NIfTI stack prepared into 2D slices and a datalist with 1/8 of the training slices labelled;
2. what **SupMix** does to a batch (labelled regions with their ground truth pasted onto an unlabelled image and its pseudo-label);
3. training the COVID-19 bundle with `supervised` and with the paper's `supmix_sufd` through MONAI's bundle runner
   (the same code path as `python -m monai.bundle run training --config_file bundles/covid/train.json`);
4. evaluation (per-class IoU / Dice, mIoU) and predictions drawn over the test slices.

Run it from the repository after `pip install -e .` (the README's set-up). Everything is written under `RUN_DIR`.
The settings below are deliberately tiny; the numbers they give say nothing about real CT. For real data, see
`docs/howto/own-data.md`; for the comparison on real images, `docs/results.md`."""),
    ("code", """# Parameters: raise MAX_EPOCHS / EPOCH_LENGTH / IMAGE_SIZE for a more meaningful run
TASK = "covid"                         # or "chase" (fundus vessels)
METHODS = ["supervised", "supmix_sufd"]
LABELED_FRACTION = "1/8"
MAX_EPOCHS = 6
EPOCH_LENGTH = 20
IMAGE_SIZE = [64, 64]
DEVICE = "cpu"                          # "cuda" on a GPU machine
TORCH_THREADS = 1                       # None: torch's own count (faster only on free cores; busy ones spin-wait)
RUN_DIR = "runs/walkthrough\"""", ["parameters"]),
    ("code", """import json
from pathlib import Path

import matplotlib.pyplot as plt
import monai.bundle
import numpy as np
import torch

import medsemiseg
from medsemiseg.data.datalist import load_split
from medsemiseg.data.builtin import ensure_synthetic_datalist
from medsemiseg.data.io import read_image, read_mask

# the repository root: this notebook lives in notebooks/
REPO = Path.cwd().parent if Path.cwd().name == "notebooks" else Path.cwd()
BUNDLE = REPO / "bundles" / TASK
RUN = (REPO / RUN_DIR).resolve()
CACHE = RUN / "cache"
if TORCH_THREADS:
    torch.set_num_threads(TORCH_THREADS)
print("bundle:", BUNDLE, "\\nrun folder:", RUN)"""),
    ("markdown", """## 1. The data

`ensure_synthetic_datalist` generates the synthetic set once (NIfTI stacks in the MedSeg COVID-19 layout), prepares
it with the same code as `python -m medsemiseg.prepare covid ...`, and writes the datalist for the labelled fraction
and seed: `labeled`, `unlabeled`, `validation` and `test` lists of `{"image": ..., "label": ...}`. The bundle does
exactly this on first use when no `dataset_dir` is given."""),
    ("code", """datalist_path = ensure_synthetic_datalist(TASK, CACHE, LABELED_FRACTION, seed=0)
# the JSON's paths are relative to its folder; load_split resolves them as MONAI's load_decathlon_datalist does
datalist = {split: load_split(datalist_path, split) for split in ("labeled", "unlabeled", "validation", "test")}
print(datalist_path)
for split in datalist:
    print(f"{split:>10}: {len(datalist[split])} slices")

channel_def = json.loads((BUNDLE / "configs" / "metadata.json").read_text())["network_data_format"]["outputs"]["pred"]["channel_def"]
classes = [channel_def[str(i)] for i in range(len(channel_def))]
print("classes:", classes)

def show(image, label=None, ax=None, title=""):
    \"\"\"A slice upright (stored (X, Y) as MONAI reads it, shown transposed) with the label map over it.\"\"\"
    img = np.asarray(image)[0].T
    ax.imshow(img, cmap="gray") if img.ndim == 2 else ax.imshow(np.asarray(image).transpose(2, 1, 0) / 255)
    if label is not None:
        lab = np.asarray(label)[0].T.astype(float)
        ax.imshow(np.ma.masked_equal(lab, 0), cmap="jet", vmin=0, vmax=len(classes) - 1, alpha=0.45, interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.axis("off")

fig, axes = plt.subplots(1, 3, figsize=(10, 3.5))
for ax, item in zip(axes, datalist["labeled"][:3]):
    show(read_image(item["image"]), read_mask(item["label"], num_classes=len(classes)), ax, Path(item["image"]).name)
plt.show()"""),
    ("markdown", """## 2. SupMix on one batch

SupMix takes the pixels of the chosen classes (here the paper's choice, class 1: ground-glass on COVID-19, vessel on
CHASE_DB1; the bundles' default `supmix_mode="fixed"`, `supmix_classes=[1]`) from a *labelled* slice, cut out by its
*ground truth*, and pastes them, with their ground-truth labels, onto an unlabelled slice and onto that slice's
pseudo-label; the pasted pixels get confidence 1. `medsemiseg.transforms.mixing` does it batched,
on the device. Here the "pseudo-label" is a stand-in (all background, confidence 0.5) so that the paste is easy to see."""),
    ("code", """from medsemiseg.transforms.mixing import select_supmix_classes, supmix_paste

# a labelled slice that shows class 1 (a slice without it would paste nothing), and an unlabelled one
lab_item = next((item for item in datalist["labeled"]
                 if (read_mask(item["label"], num_classes=len(classes)) == 1).any()), datalist["labeled"][0])
unl_item = datalist["unlabeled"][0]
x_l = read_image(lab_item["image"]).as_tensor()[None]
y_l = read_mask(lab_item["label"], num_classes=len(classes)).as_tensor()[None, 0].long()
x_u = read_image(unl_item["image"]).as_tensor()[None]
if x_u.shape != x_l.shape:  # slices of different sizes: bring the unlabelled one to the labelled one's grid
    x_u = torch.nn.functional.interpolate(x_u, size=x_l.shape[-2:], mode="bilinear")
pseudo = torch.zeros_like(y_l)
conf = torch.full(y_l.shape, 0.5)

# the bundles' default (supmix_mode="fixed", supmix_classes=[1]); mode="all" would paste every foreground class present
chosen = select_supmix_classes(y_l, len(classes), mode="fixed", classes=[1])
mixed_x, mixed_y, mixed_c, mask = supmix_paste(x_u, pseudo, conf, x_l, y_l, chosen)
print("pasted classes:", [classes[i] for i in torch.nonzero(chosen[0]).flatten().tolist()],
      f"| pasted pixels: {mask.float().mean():.1%}")
assert torch.equal(mixed_x[0][:, mask[0]], x_l[0][:, mask[0]])      # pasted pixels are the labelled image's
assert torch.equal(mixed_y[0][mask[0]], y_l[0][mask[0]])            # ... and carry its ground truth

fig, axes = plt.subplots(1, 4, figsize=(13, 3.5))
show(x_l[0], y_l, axes[0], "labelled slice + GT")
show(x_u[0], None, axes[1], "unlabelled slice")
show(mixed_x[0], mixed_y, axes[2], "SupMix image + target")
axes[3].imshow(mixed_c[0].T, cmap="viridis", vmin=0, vmax=1); axes[3].set_title("confidence", fontsize=9); axes[3].axis("off")
plt.show()"""),
    ("markdown", """## 3. Train with the bundle

`monai.bundle.run` is what `python -m monai.bundle run training --config_file bundles/covid/train.json --key value ...`
calls; every keyword below is one of the bundle's overridable keys (`docs/reference/bundle-keys.md`,
*Overridable keys*). The whole run is MONAI's `SupervisedTrainer` (our `SemiSupervisedTrainer` subclass) with stock
handlers: checkpoints, TensorBoard logs in `<output_dir>/logs`, validation every `val_interval` epochs, best model by
validation mIoU in `<output_dir>/models/model.pt`."""),
    ("code", """config_file = str(BUNDLE / "configs" / "train.json")
common = dict(
    logging_file=str(BUNDLE / "configs" / "logging.conf"),  # the bundle's logging: one line per iteration
    bundle_root=str(BUNDLE), cache_dir=str(CACHE), labeled_fraction=LABELED_FRACTION, seed=0, device=DEVICE,
    image_size=IMAGE_SIZE, max_epochs=MAX_EPOCHS, epoch_length=EPOCH_LENGTH, val_interval=max(1, MAX_EPOCHS // 3),
    network_kwargs={"features": [8, 16, 32, 64, 128, 8]},
)
runs = {}
for method in METHODS:
    out = RUN / method
    monai.bundle.run("training", config_file=config_file, output_dir=str(out), method=method, **common)
    monai.bundle.run("evaluating", config_file=config_file, output_dir=str(out), method=method, **common)
    runs[method] = out
    print(method, "->", out / "models" / "model.pt")"""),
    ("markdown", """## 4. Evaluation and predictions

`evaluating` wrote `eval/metrics.json` (and `.csv`) in each run folder: per-class IoU and Dice on the test split,
background included, and mIoU as their mean over classes (the report's `aggregation` field and `medsemiseg/metrics.py` say exactly how they are averaged; the `_pooled` values sum intersection and union over the whole test split first)."""),
    ("code", """header = f"{'method':<14}" + "".join(f"{n[:16]:>18}" for n in classes) + f"{'mIoU':>8}"
print(header)
for method, out in runs.items():
    m = json.loads((out / "eval" / "metrics.json").read_text())
    print(f"{method:<14}" + "".join(f"{100 * m['per_class'][n]['iou']:>18.1f}" for n in classes) + f"{100 * m['mIoU']:>8.1f}")"""),
    ("code", """# segment the test slices with each method's best model (written as <output_dir>/outputs/<name>_seg.nii.gz)
for method, out in runs.items():
    monai.bundle.run("inferring", config_file=config_file, output_dir=str(out), method=method, **common)

test_items = datalist["test"][:3]
fig, axes = plt.subplots(len(test_items), 1 + len(runs), figsize=(3.2 * (1 + len(runs)), 3.2 * len(test_items)), squeeze=False)
for row, item in zip(axes, test_items):
    image = read_image(item["image"])
    show(image, read_mask(item["label"], num_classes=len(classes)), row[0], "ground truth")
    stem = Path(item["image"]).name.split(".")[0]
    for ax, (method, out) in zip(row[1:], runs.items()):
        show(image, read_mask(out / "outputs" / f"{stem}_seg.nii.gz", num_classes=len(classes)), ax, method)
plt.tight_layout()
plt.show()"""),
    ("markdown", """## Next

- Real data: `python -m medsemiseg.prepare chase|covid|folder ...` then `--dataset_dir` (`docs/howto/own-data.md`).
- Every method, every labelled fraction, several seeds, tables and plots in the paper's form:
  `python -m medsemiseg.benchmark configs/benchmark_covid_quick.yaml` (`docs/benchmarks.md`); the real-data grids'
  results are in `docs/results.md`.
- Serve the trained bundle in MONAI Label: `docs/bundles.md`, *MONAI Label*."""),
]


def build() -> dict:
    cells = []
    for kind, source, *tags in CELLS:
        cell = {"cell_type": kind, "metadata": {"tags": tags[0]} if tags else {}, "source": source.splitlines(True)}
        if kind == "code":
            cell.update(execution_count=None, outputs=[])
        cells.append(cell)
    return {
        "cells": cells,
        "metadata": {
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python"},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }


if __name__ == "__main__":
    out = Path(__file__).resolve().parents[1] / "notebooks" / "walkthrough.ipynb"
    out.write_text(json.dumps(build(), indent=1) + "\n")
    print("wrote", out)
