"""Small copies of public data set layouts (DRIVE, COVID-SemiSeg) that tests build in a temporary folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image



def palette_png(indices: np.ndarray, colours: dict[int, tuple[int, int, int]]) -> Image.Image:
    img = Image.fromarray(indices.astype(np.uint8), mode="P")
    pal = [0] * 768
    for i, rgb in colours.items():
        pal[3 * i: 3 * i + 3] = rgb
    img.putpalette(pal)
    return img


def make_drive(root: Path, n_train: int = 5, n_test: int = 3, size=(40, 36)) -> Path:
    """DRIVE's layout with tiny photographs: TIF images, 0/255 GIF manuals and FOV masks, palette second manuals."""
    rng = np.random.default_rng(0)
    w, h = size
    yy, xx = np.mgrid[:h, :w]
    fov = ((xx - w / 2) ** 2 + (yy - h / 2) ** 2 < (min(w, h) / 2.2) ** 2)
    for split, first, n in (("training", 21, n_train), ("test", 1, n_test)):
        for d in ("images", "1st_manual", "mask") + (("2nd_manual",) if split == "test" else ()):
            (root / split / d).mkdir(parents=True, exist_ok=True)
        for k in range(first, first + n):
            img = rng.integers(30, 220, size=(h, w, 3), dtype=np.uint8)
            img[~fov] = 0
            Image.fromarray(img).save(root / split / "images" / f"{k:02d}_{split}.tif")
            vessel = (rng.random((h, w)) < 0.15) & fov
            Image.fromarray((vessel * 255).astype(np.uint8)).save(root / split / "1st_manual" / f"{k:02d}_manual1.gif")
            Image.fromarray((fov * 255).astype(np.uint8)).save(root / split / "mask" / f"{k:02d}_{split}_mask.gif")
            if split == "test":
                second = vessel ^ ((rng.random((h, w)) < 0.02) & fov)
                palette_png(second.astype(np.uint8), {0: (0, 0, 0), 1: (255, 255, 255)}).save(
                    root / split / "2nd_manual" / f"{k:02d}_manual2.gif")
    return root


def make_covid_semiseg(root: Path, n_train: int = 10, n_test: int = 4, n_unlabeled: int = 6) -> Path:
    """Inf-Net's layout: grey JPG slices of varying size, palette PNG masks 0/1/2, an unlabelled Imgs folder."""
    rng = np.random.default_rng(1)
    train = root / "TrainingSet" / "MultiClassInfection-Train"
    test = root / "TestingSet" / "MultiClassInfection-Test"
    unl = root / "TrainingSet" / "LungInfection-Train" / "Pseudo-label" / "Imgs"
    for folder, n in ((train, n_train), (test, n_test)):
        (folder / "Imgs").mkdir(parents=True)
        (folder / "GT").mkdir(parents=True)
        for k in range(n):
            h, w = 30 + k, 34 + 2 * k
            Image.fromarray(rng.integers(0, 256, size=(h, w), dtype=np.uint8)).save(folder / "Imgs" / f"{k}.jpg")
            mask = rng.integers(0, 3, size=(h, w))
            palette_png(mask, {0: (0, 0, 0), 1: (128, 0, 0), 2: (0, 128, 0)}).save(folder / "GT" / f"{k}.png")
    unl.mkdir(parents=True)
    for k in range(n_unlabeled):
        Image.fromarray(rng.integers(0, 256, size=(32, 40), dtype=np.uint8)).save(unl / f"Data-1_case_{k}.jpg")
    return root
