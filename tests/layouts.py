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


def ssl4mis_volume(patient: int, frame: int, shape=(4, 24, 20)) -> tuple[np.ndarray, np.ndarray]:
    """One ACDC-like volume in SSL4MIS's array order ``(Z, Y, X)``: a float image normalised to 0-1 and a label map
    (1: a ring, 2: the disc inside it, 3: a box beside them), different for each patient and frame."""
    rng = np.random.default_rng(100 * patient + frame)
    z, h, w = shape
    yy, xx = np.mgrid[:h, :w]
    label = np.zeros(shape, np.uint8)
    for k in range(z):
        cy, cx, r = h / 2 + rng.integers(-2, 3), w / 2 + rng.integers(-2, 3), 4 + k % 2
        d = np.hypot(yy - cy, xx - cx)
        label[k][d < r + 2] = 1
        label[k][d < r] = 2
        label[k][2:5, 1:4 + k % 3] = 3
    image = np.choose(label, [0.1, 0.5, 0.8, 0.3]) + rng.normal(0, 0.05, shape)
    return np.clip(image, 0, 1).astype(np.float32), label


def make_ssl4mis(root: Path, train=(1, 2, 3, 4, 5), val=(6,), test=(7, 8), shape=(4, 24, 20),
                 mirror: bool = False) -> Path:
    """SSL4MIS's ACDC layout, small: ``data/slices/patientNNN_frame01_slice_K.h5`` (2D training slices with ``image``
    / ``label`` arrays), ``data/patientNNN_frame01.h5`` (3D volumes of every patient, ``(Z, Y, X)``), and the lists
    ``train_slices.list`` (training slices), ``train.list`` (training volumes), ``val.list`` and ``test.list``
    (volumes). ``mirror``: the layout public mirrors ship instead, the training slices directly in ``data/`` and only
    the validation and test volumes. Returns ``root``."""
    import h5py

    slices = root / "data" if mirror else root / "data" / "slices"
    slices.mkdir(parents=True)
    lists: dict[str, list[str]] = {"train_slices": [], "train": [], "val": [], "test": []}
    for patient in (*train, *val, *test):
        case = f"patient{patient:03d}_frame01"
        image, label = ssl4mis_volume(patient, 1, shape)
        role = "train" if patient in train else "val" if patient in val else "test"
        if not (mirror and role == "train"):
            with h5py.File(root / "data" / f"{case}.h5", "w") as f:
                f["image"], f["label"] = image, label
        lists[role].append(case)
        if role == "train":
            for k in range(shape[0]):
                with h5py.File(slices / f"{case}_slice_{k}.h5", "w") as f:
                    f["image"], f["label"] = image[k], label[k]
                lists["train_slices"].append(f"{case}_slice_{k}")
    for name, entries in lists.items():
        (root / f"{name}.list").write_text("".join(f"{e}\n" for e in entries))
    return root
