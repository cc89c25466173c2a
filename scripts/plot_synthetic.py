"""Make the figures of docs/synthetic.md: a few synthetic samples with their masks overlaid.

Usage (from the repository root)::

    python scripts/plot_synthetic.py                 # writes docs/figures/synthetic_{covid,chase}.png
    python scripts/plot_synthetic.py --out /tmp/figs --seed 3

The data are generated into a temporary folder with the default parameters of
``medsemiseg.data.synthetic`` and read back *from the written files* (nibabel / PIL), so the figures show
exactly what the loaders see. CT slices are shown upright as ``data[:, :, k].T`` (anterior at the top) in a lung
window; fundus images and masks are plain (H, W) pictures.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from medsemiseg.data.synthetic import COVID_CLASSES, generate_chase, generate_covid  # noqa: E402

CT_COLOURS = ["#00000000", "#33c3ff", "#ffd21f", "#ff3b3b"]  # background transparent, GGO, consolidation, effusion


def _pick_covid_slices(label: np.ndarray, n: int) -> list[int]:
    """Slices that between them show every class: effusion ones first, then the largest lesion loads."""
    eff = [k for k in range(label.shape[2]) if (label[..., k] == 3).any()]
    load = np.argsort(-(label > 0).sum(axis=(0, 1)), kind="stable")
    picks = eff[:2]
    picks += [int(k) for k in load if k not in picks][: n - len(picks)]
    return sorted(picks)


def plot_covid(out_png: Path, seed: int, n: int = 4) -> Path:
    import nibabel as nib

    with tempfile.TemporaryDirectory() as tmp:
        res = generate_covid(tmp, seed=seed, n_unlabeled_volumes=0, dicom_series=False)
        hu = np.asarray(nib.load(str(res["tr_im"])).dataobj, dtype=np.float32)
        label = np.asarray(nib.load(str(res["tr_mask"])).dataobj)
    ks = _pick_covid_slices(label, n)
    cmap = ListedColormap(CT_COLOURS)
    fig, axes = plt.subplots(2, len(ks), figsize=(3.2 * len(ks), 6.6))
    for j, k in enumerate(ks):
        img = np.clip(hu[:, :, k].T, -1250, 250)  # upright: rows = Y, anterior at the top
        for i in range(2):
            axes[i, j].imshow(img, cmap="gray", vmin=-1250, vmax=250, interpolation="nearest")
            axes[i, j].set_xticks([])
            axes[i, j].set_yticks([])
        axes[1, j].imshow(label[:, :, k].T, cmap=cmap, vmin=0, vmax=3, alpha=0.55, interpolation="nearest")
        axes[0, j].set_title(f"tr_im slice {k}", fontsize=10)
    axes[0, 0].set_ylabel("HU, window [-1250, 250]")
    axes[1, 0].set_ylabel("tr_mask overlaid")
    fig.legend(handles=[Patch(color=c, label=n) for c, n in zip(CT_COLOURS[1:], COVID_CLASSES[1:])],
               loc="lower center", ncol=3, frameon=False)
    fig.suptitle(f"Synthetic MedSeg-like CT (generate_covid defaults, seed={seed}); anterior at top, "
                 "posterior (table side) at bottom", fontsize=11)
    fig.tight_layout(rect=(0, 0.05, 1, 0.95))
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png


def plot_chase(out_png: Path, seed: int, n: int = 3) -> Path:
    from PIL import Image

    with tempfile.TemporaryDirectory() as tmp:
        res = generate_chase(tmp, seed=seed, n_images=max(2, n + n % 2))
        rows = []
        for img_p, m1_p, m2_p in list(zip(res["images"], res["masks_1stHO"], res["masks_2ndHO"]))[:n]:
            img = np.asarray(Image.open(img_p).convert("RGB"))
            m1 = np.asarray(Image.open(m1_p).convert("L")) >= 128
            m2 = np.asarray(Image.open(m2_p).convert("L")) >= 128
            rows.append((img_p.stem, img, m1, m2, Image.open(m1_p).mode))
    fig, axes = plt.subplots(len(rows), 3, figsize=(10.5, 3.5 * len(rows)))
    for i, (name, img, m1, m2, mode) in enumerate(rows):
        axes[i, 0].imshow(img)
        axes[i, 0].set_title(f"{name}.jpg", fontsize=10)
        over = img.copy()
        over[m1] = (0.4 * over[m1] + 0.6 * np.array([40, 255, 80])).astype(np.uint8)
        axes[i, 1].imshow(over)
        axes[i, 1].set_title(f"1stHO overlaid ({100 * m1.mean():.1f}% vessel, PNG mode {mode})", fontsize=9)
        diff = np.zeros(m1.shape + (3,), np.uint8)
        diff[m1 & m2] = 255
        diff[m1 & ~m2] = (255, 60, 60)
        diff[~m1 & m2] = (60, 140, 255)
        axes[i, 2].imshow(diff, interpolation="nearest")
        axes[i, 2].set_title("observers: both white, 1st only red, 2nd only blue", fontsize=9)
        for ax in axes[i]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(f"Synthetic CHASE_DB1-like fundus (generate_chase defaults, seed={seed})", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "figures")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for path in (plot_covid(args.out / "synthetic_covid.png", args.seed),
                 plot_chase(args.out / "synthetic_chase.png", args.seed)):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
