"""Why a method wins or loses: pseudo-label accuracy and discriminator accuracy over training.

``python -m medsemiseg.benchmark.analysis CONFIG.yaml [--fraction 1/8] [--seed 0]`` reads the epoch checkpoints a
grid cell kept (``models/checkpoint_epoch=K.pt``; the quick configs keep every epoch of the 1/8, seed-0 cells with a
``cell_overrides`` rule) and, for each epoch, rebuilds the cell's network, method, EMA teacher and discriminator from
the bundle config with the cell's own overrides (MONAI ``ConfigParser``, nothing re-implemented), then measures on
the cell's **unlabelled** training images whose ground truth the split hid from training:

- ``pl_acc`` / ``pl_miou``: pixel accuracy and pooled mIoU of the pseudo-labels the method trains on — the EMA
  teacher's argmax in eval mode (ClassMix, SupMix, SUFD variants; train mode with ``pseudo_label_source:
  teacher_train_bn``) or the student's own in train mode, BatchNorm on batch statistics as inside the training step
  (FixMatch, UniMatch, SupMix inside UniMatch, a ``student`` source; ``supervised`` in eval mode, for reference), on
  the un-augmented images in batches of 8;
- ``conf_ratio`` / ``conf_acc``: the share of pixels whose confidence reaches the method's threshold (the pixels the
  unsupervised loss uses) and the accuracy on them;
- ``pl_iou/<class>``: pseudo-label IoU per class (the minority classes are where SupMix is meant to help);
- ``d_acc`` (SUFD variants): the discriminator's *balanced* accuracy at telling the student's labelled-image
  features (logit > 0) from its unlabelled-image features — the mean of its accuracy on the labelled and on the
  unlabelled patches, so chance is 0.5 although the cell has far fewer labelled images (4 vs 25 on the CT phantoms;
  a plain accuracy would score 25/29 = 0.86 by calling everything "unlabelled"); ``d_auc``: the probability that a
  labelled patch gets a higher logit than an unlabelled one (0.5: D cannot rank them, whatever its threshold);
  ``d_p_labelled_on_l`` / ``_on_u``: its mean probability of "labelled" on each set. ``d_auc`` near 0.5 means the
  feature gap SUFD closes is closed (or D learned nothing).

The unlabelled images' labels exist for the built-in synthetic data sets (their split hides the labels of the
training pool) and for a prepared real data set when its ``pool.json`` lists labels for the unlabelled items; images
without labels are skipped. Writes ``analysis_<fraction>_seed<k>.csv`` and ``.png`` next to the results (a cell
that kept only its last checkpoints gives rows for those epochs only); rows of methods not analysed in this run are
kept from the earlier CSV, so ``--methods NEW`` adds a method beside the others.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import re
import sys
from pathlib import Path
from typing import Any, Sequence

from .config import BenchmarkConfig, Cell, ConfigError, enumerate_cells, fraction_slug, load_config
from .results import write_csv

__all__ = ["epoch_checkpoints", "hidden_labels", "ranking_auc", "analyse_cell", "analyse_grid", "kept_rows",
           "plot_analysis", "main"]


def epoch_checkpoints(cell_dir: Path) -> list[tuple[int, Path]]:
    """``[(epoch, path)]`` of ``models/checkpoint_epoch=K.pt`` files, by epoch."""
    out = []
    for p in (Path(cell_dir) / "models").glob("checkpoint_epoch=*.pt"):
        m = re.search(r"checkpoint_epoch=(\d+)\.pt$", p.name)
        if m:
            out.append((int(m.group(1)), p))
    return sorted(out)


def hidden_labels(datalist_path: str | Path) -> list[dict[str, str]]:
    """The cell's unlabelled items that have a ground truth somewhere: ``pool.json`` next to the datalist (written by
    ``medsemiseg.prepare`` and the built-in data sets) lists the whole training pool with labels."""
    dl_path = Path(datalist_path)
    dl = json.loads(dl_path.read_text())
    pool_path = dl_path.parent / "pool.json"
    if not pool_path.is_file():
        return []
    pool = json.loads(pool_path.read_text())
    labels = {}
    for key, items in pool.items():
        if isinstance(items, list):
            for it in items:
                if isinstance(it, dict) and "label" in it and "image" in it:
                    labels[str((pool_path.parent / it["image"]).resolve())] = str((pool_path.parent / it["label"]).resolve())
    out = []
    for it in dl.get("unlabeled", []):
        img = str((dl_path.parent / it["image"]).resolve())
        if img in labels:
            out.append({"image": img, "label": labels[img]})
    return out


def _parser(cfg: BenchmarkConfig, cell: Cell):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(cfg.bundle_file(f)) for f in cfg.train_config])
    parser["bundle_root"] = str(cfg.bundle.resolve())
    for k, v in cfg.cell_overrides(cell).items():
        parser[k] = v
    parser["device"] = "cpu"
    return parser


def analyse_cell(cfg: BenchmarkConfig, cell: Cell, max_items: int = 32) -> list[dict[str, Any]]:
    """One row per kept epoch checkpoint of ``cell`` (see the module doc for the columns)."""
    import torch

    logging.getLogger("monai.data.nvimgcodec_pydicom_plugin").setLevel(logging.ERROR)
    ckpts = epoch_checkpoints(cell.directory)
    if not ckpts:
        return []
    parser = _parser(cfg, cell)
    datalist = parser.get_parsed_content("datalist")
    items = hidden_labels(datalist)[:max_items]
    if not items:
        return []
    pre = parser.get_parsed_content("preprocessing")
    net = parser.get_parsed_content("network")
    method = parser.get_parsed_content("train#method")
    classes = list(parser.get_parsed_content("classes"))
    k = len(classes)
    from medsemiseg.data.datalist import load_split

    labelled = load_split(datalist, "labeled")[:max_items]
    data_u = [pre(dict(it)) for it in items]
    data_l = [pre(dict(it)) for it in labelled]
    x_u = torch.stack([torch.as_tensor(d["image"]) for d in data_u]).float()
    y_u = torch.stack([torch.as_tensor(d["label"]) for d in data_u]).long()[:, 0]
    x_l = torch.stack([torch.as_tensor(d["image"]) for d in data_l]).float()
    objs = method.checkpoint_objects()
    # the pseudo-label threshold is the base method's for a SUFD variant
    thr = float(getattr(getattr(method, "base", method), "conf_threshold", 0.95))
    teacher_obj = objs.get("teacher")
    disc_obj = objs.get("sufd")
    # where the mean-teacher family labels (pseudo_label_source): a train-mode teacher normalises with batch statistics
    teacher_train_bn = getattr(getattr(method, "base", method), "pseudo_label_source", None) == "teacher_train_bn"
    rows = []
    for epoch, path in ckpts:
        ck = torch.load(path, map_location="cpu", weights_only=False)
        net.load_state_dict(ck["model"])
        net.eval()
        source = "student"
        pl_net = net
        if teacher_obj is not None and "teacher" in ck:
            teacher_obj.load_state_dict(ck["teacher"])
            pl_net = teacher_obj.teacher
            source = "EMA teacher (train-mode BatchNorm)" if teacher_train_bn else "EMA teacher"
        # the mode training computes pseudo-labels in: the EMA teacher runs in eval mode (train mode with
        # pseudo_label_source="teacher_train_bn"), FixMatch / UniMatch / a "student" source take them from the student's
        # weak-view pass inside the training step (train mode: batch-statistics BatchNorm)
        pl_net.train((source == "student" and cell.method != "supervised") or teacher_train_bn)
        with torch.no_grad():
            prob = torch.softmax(torch.cat([pl_net(x_u[i:i + 8]) for i in range(0, len(x_u), 8)]).float(), 1)
        conf, pl = prob.max(1)
        row: dict[str, Any] = {"task": cell.task, "method": cell.method, "fraction": cell.fraction.label,
                               "seed": cell.seed, "epoch": epoch, "pseudo_label_source": source,
                               "n_unlabelled_with_gt": len(items)}
        correct = (pl == y_u)
        row["pl_acc"] = float(correct.float().mean())
        confident = conf >= thr
        row["conf_ratio"] = float(confident.float().mean())
        row["conf_acc"] = float(correct[confident].float().mean()) if bool(confident.any()) else float("nan")
        ious = []
        for c in range(k):
            inter = ((pl == c) & (y_u == c)).sum().item()
            union = ((pl == c) | (y_u == c)).sum().item()
            iou = inter / union if union else float("nan")
            row[f"pl_iou/{classes[c]}"] = iou
            ious.append(iou)
        valid = [v for v in ious if v == v]
        row["pl_miou"] = sum(valid) / len(valid) if valid else float("nan")
        if disc_obj is not None and "sufd" in ck:
            disc_obj.load_state_dict(ck["sufd"])
            d = disc_obj.discriminator
            d.eval()
            idx = int(getattr(method, "feature_index", -1))
            with torch.no_grad():
                f_l = net.encode(x_l)[idx]
                f_u = net.encode(x_u)[idx]
                lo_l, lo_u = d(f_l), d(f_u)
            row["d_acc"] = 0.5 * float((lo_l > 0).float().mean() + (lo_u <= 0).float().mean())
            row["d_auc"] = ranking_auc(lo_l, lo_u)
            row["d_p_labelled_on_l"] = float(torch.sigmoid(lo_l).mean())
            row["d_p_labelled_on_u"] = float(torch.sigmoid(lo_u).mean())
        rows.append(row)
    return rows


def ranking_auc(pos, neg) -> float:
    """P(a positive scores above a negative), ties counting one half (the Mann-Whitney AUC)."""
    import torch

    pos = torch.as_tensor(pos).flatten().double()
    neg = torch.as_tensor(neg).flatten().double()
    if not len(pos) or not len(neg):
        return float("nan")
    neg_sorted, _ = torch.sort(neg)
    below = torch.searchsorted(neg_sorted, pos, right=False)  # negatives strictly below each positive
    not_above = torch.searchsorted(neg_sorted, pos, right=True)  # ... below or tied
    return float((below + 0.5 * (not_above - below)).sum() / (len(pos) * len(neg)))


def analyse_grid(cfg: BenchmarkConfig, fraction: str, seed: int, methods: Sequence[str] | None = None,
                 log=print) -> list[dict[str, Any]]:
    rows = []
    for cell in enumerate_cells(cfg):
        if cell.fraction.label != fraction or cell.seed != seed or (methods and cell.method not in methods):
            continue
        r = analyse_cell(cfg, cell)
        log(f"[analysis] {cell.key}: {len(r)} epoch checkpoint(s)" + ("" if r else " (none kept, or no hidden labels)"))
        rows += r
    return rows


def kept_rows(csv_path: Path, replaced: set[str]) -> list[dict[str, Any]]:
    """The rows of an earlier ``analysis_*.csv`` whose method is not in ``replaced`` (numbers read back as floats),
    so analysing some methods again, or a new one, keeps the others' rows: their checkpoints may be gone (model files
    are not committed). Empty fields stay empty strings."""
    if not Path(csv_path).is_file():
        return []

    def value(v: str) -> Any:  # an empty field (no discriminator) stays empty, as the CSV writer left it
        try:
            return float(v) if v not in ("", None) else ""
        except ValueError:
            return v

    with open(csv_path, newline="") as fh:
        old = list(csv.DictReader(fh))
    out = []
    for r in old:
        if r.get("method") in replaced:
            continue
        row = {k: (value(v) if k not in ("task", "method", "fraction", "pseudo_label_source") else v)
               for k, v in r.items()}
        for k in ("seed", "epoch", "n_unlabelled_with_gt"):
            if isinstance(row.get(k), float) and row[k] == row[k]:
                row[k] = int(row[k])
        out.append(row)
    return out


def plot_analysis(rows: Sequence[dict[str, Any]], path: Path, title: str = "") -> Path:
    from . import plots

    curves: dict[str, dict[str, list]] = {}
    for r in rows:
        c = curves.setdefault(r["method"], {})
        for key, v in r.items():
            if key in ("pl_acc", "pl_miou", "conf_ratio", "conf_acc", "d_acc", "d_auc") or key.startswith("pl_iou/"):
                if isinstance(v, float) and v == v:
                    c.setdefault(key, []).append((r["epoch"], v))
    tags = ["pl_miou", "conf_ratio", "conf_acc"] + sorted({k for c in curves.values() for k in c if k.startswith("pl_iou/")})
    tags = [t for t in tags if t != "pl_iou/background"] + ["d_acc", "d_auc"]
    return plots.plot_learning_curves(curves, tags, path, title=title)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m medsemiseg.benchmark.analysis", description=__doc__.split("\n\n")[0])
    p.add_argument("config", help="benchmark YAML whose cells to analyse")
    p.add_argument("--fraction", default="1/8")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--methods", nargs="+")
    p.add_argument("--output-dir", help="the YAML's output_dir unless given")
    a = p.parse_args(argv)
    try:
        cfg = load_config(a.config, output_dir=a.output_dir)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    labels = [f.label for f in cfg.fractions]
    for name, given, have in (("--fraction", [a.fraction], labels), ("--seed", [a.seed], cfg.seeds),
                              ("--methods", a.methods or [], cfg.methods)):
        bad = [v for v in given if v not in have]
        if bad:
            print(f"error: {name} {' '.join(map(str, bad))} is not in the grid {cfg.source}; its values are "
                  f"{' '.join(map(str, have))}", file=sys.stderr)
            return 2
    rows = analyse_grid(cfg, a.fraction, a.seed, a.methods)
    if not rows:
        print("[analysis] nothing to analyse: no epoch checkpoints with hidden labels in these cells", file=sys.stderr)
        return 1
    slug = f"{fraction_slug(a.fraction)}_seed{a.seed}"
    out_csv = cfg.task_dir / f"analysis_{slug}.csv"
    rows = kept_rows(out_csv, {r["method"] for r in rows}) + rows
    write_csv(rows, out_csv)
    png = plot_analysis(rows, cfg.task_dir / f"analysis_{slug}.png",
                        title=f"{cfg.task}: pseudo-labels on hidden-label unlabelled images and D accuracy, "
                        f"{a.fraction} labelled, seed {a.seed}")
    print(f"[analysis] {out_csv}\n[analysis] {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
