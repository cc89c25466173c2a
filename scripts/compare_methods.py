#!/usr/bin/env python
"""Train every semi-supervised method on the same small synthetic COVID-like set and compare them.

For each method (``supervised``, ``classmix``, ``fixmatch``, ``unimatch``, ``supmix``, ``sufd``, ``supmix_sufd``) this
script builds the same UNet from the same seed, trains it with :class:`medsemiseg.engines.SemiSupervisedTrainer`
for ``--iterations`` iterations with the same labelled / unlabelled batch sizes, data, optimiser (SGD, momentum
0.9, weight decay 1e-4, polynomial decay per iteration through MONAI's ``LrScheduleHandler``, as UniMatch's medical
recipe) and seed, then evaluates per-class IoU (:func:`medsemiseg.metrics.compute_segmentation_report`, per-image
mean, background included in mIoU) on a held-out set of phantom slices. It prints one table: method, IoU per class,
mIoU, seconds per training iteration and that time relative to ``supervised``.

Data: CT phantoms from :func:`medsemiseg.data.synthetic.ct_phantom_volume` (MedSeg-like independent slices, HU),
windowed to [0, 1] with ``CTWindowd`` (lung window) and weakly augmented (flips, 90-degree rotations) with the
package's ``weak_transforms``; labelled, unlabelled and test slices come from different generator streams ("tr", "rp", "val").

Run (CPU, ~10-15 min on two shared cores with the defaults)::

    .venv/bin/python scripts/compare_methods.py

GPU with AMP::

    python scripts/compare_methods.py --device cuda --amp --iterations 2000 --size 128

This is a smoke-scale comparison (one run, a few hundred iterations, tiny images): it shows that every method
trains and what it costs, not which method is best on real data (see ``medsemiseg.benchmark`` for that).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from monai.data import DataLoader, Dataset  # noqa: E402
from monai.handlers import LrScheduleHandler  # noqa: E402
from monai.transforms import Compose  # noqa: E402
from monai.utils import set_determinism  # noqa: E402

from medsemiseg.data.synthetic import COVID_CLASSES, ct_phantom_volume  # noqa: E402
from medsemiseg.engines import SemiSupervisedTrainer  # noqa: E402
from medsemiseg.methods import create_method, method_names  # noqa: E402
from medsemiseg.metrics import compute_segmentation_report  # noqa: E402
from medsemiseg.networks import UNet  # noqa: E402
from medsemiseg.transforms.intensity import CTWindowd  # noqa: E402
from medsemiseg.transforms.views import StrongAugment, weak_transforms  # noqa: E402

SHORT = {"background": "bg", "ground-glass": "GGO", "consolidation": "cons", "pleural effusion": "effus"}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--methods", default=",".join(method_names()), help="comma-separated method names")
    p.add_argument("--iterations", type=int, default=400, help="training iterations per method")
    p.add_argument("--size", type=int, default=64, help="slice size in pixels (phantoms are size x size)")
    p.add_argument("--n-labeled", type=int, default=8, help="labelled training slices")
    p.add_argument("--n-unlabeled", type=int, default=56, help="unlabelled training slices")
    p.add_argument("--n-test", type=int, default=32, help="held-out labelled slices for the IoU")
    p.add_argument("--batch-labeled", type=int, default=4)
    p.add_argument("--batch-unlabeled", type=int, default=4)
    p.add_argument("--features", default="8,16,32,64,128,8", help="UNet channels (six numbers)")
    p.add_argument("--lr", type=float, default=0.03, help="SGD learning rate (poly decay, power 0.9)")
    p.add_argument("--supmix-classes", default="1", help="SupMix 'fixed' classes (1 = ground-glass)")
    p.add_argument("--rampup-iters", type=int, default=0, help="sigmoid ramp-up of the unsupervised weight (mean-teacher methods)")
    p.add_argument("--adv-weight", type=float, default=0.001, help="SUFD adversarial weight")
    p.add_argument("--d-lr", type=float, default=1e-4, help="SUFD discriminator learning rate")
    p.add_argument("--method-options", type=json.loads, default={},
                   help='JSON {method: {option: value}} added to a method\'s options, e.g. '
                        '\'{"unimatch": {"joint_forward": true}}\'')
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--amp", action="store_true", help="mixed precision (CUDA only)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest on a shared 2-core machine)")
    return p.parse_args(argv)


def _slices(n: int, size: int, seed: int, stream: str, with_labels: bool) -> list[dict]:
    hu, label, _ = ct_phantom_volume(n, size, seed=seed, stream=stream)
    items = []
    for k in range(n):
        item = {"image": hu[None, :, :, k].astype(np.float32)}
        if with_labels:
            item["label"] = label[None, :, :, k].astype(np.float32)
        items.append(item)
    return items


def build_data(args: argparse.Namespace):
    """Labelled / unlabelled training loaders (weak view) and windowed test tensors."""
    size = args.size
    lab = _slices(args.n_labeled, size, args.seed, "tr", True)
    unl = _slices(args.n_unlabeled, size, args.seed, "rp", False)
    test = _slices(args.n_test, size, args.seed, "val", True)
    weak = Compose([CTWindowd(keys="image"), *weak_transforms(keys=("image", "label"), spatial_size=(size, size))])
    window = CTWindowd(keys="image")
    test_x = torch.stack([torch.as_tensor(window(t)["image"]) for t in test]).float()
    test_y = torch.stack([torch.as_tensor(t["label"]) for t in test]).long()
    return lab, unl, weak, test_x, test_y


def train_one(name: str, args: argparse.Namespace, data) -> dict:
    lab, unl, weak, test_x, test_y = data
    device = torch.device(args.device)
    set_determinism(seed=args.seed)
    features = tuple(int(f) for f in args.features.split(","))
    num_classes = len(COVID_CLASSES)
    net = UNet(in_channels=1, out_channels=num_classes, features=features).to(device)
    options: dict = {}
    if name != "supervised":
        options["strong_augment"] = StrongAugment(seed=args.seed)
    if name in ("classmix", "supmix", "sufd", "supmix_sufd"):
        options["rampup_iters"] = args.rampup_iters
    if "supmix" in name:
        options.update(supmix_mode="fixed", supmix_classes=[int(c) for c in args.supmix_classes.split(",")])
    if "sufd" in name:
        options.update(adv_weight=args.adv_weight, d_lr=args.d_lr)
    options.update(args.method_options.get(name, {}))
    method = create_method(name, net, num_classes, **options)
    opt = torch.optim.SGD(net.parameters(), lr=args.lr, momentum=0.9, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.PolynomialLR(opt, total_iters=args.iterations, power=0.9)
    g = torch.Generator().manual_seed(args.seed)
    lab_loader = DataLoader(Dataset(lab, weak), batch_size=args.batch_labeled, shuffle=True, drop_last=True, generator=g)
    unl_loader = None
    if method.requires_unlabeled:
        unl_loader = DataLoader(
            Dataset(unl, weak), batch_size=args.batch_unlabeled, shuffle=True, drop_last=True, generator=g
        )
    trainer = SemiSupervisedTrainer(
        device=device, max_epochs=1, train_data_loader=lab_loader, network=net, optimizer=opt, method=method,
        unlabeled_data_loader=unl_loader, epoch_length=args.iterations, amp=args.amp,
        train_handlers=[LrScheduleHandler(sched, print_lr=False, epoch_level=False)],
    )
    if device.type == "cuda":
        torch.cuda.synchronize()
    wall0, cpu0 = time.perf_counter(), time.process_time()
    trainer.run()
    if device.type == "cuda":
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0

    net.eval()
    preds = []
    with torch.no_grad():
        for i in range(0, len(test_x), 8):
            preds.append(net(test_x[i : i + 8].to(device)).argmax(1, keepdim=True).cpu())
    report = compute_segmentation_report(torch.cat(preds), test_y, COVID_CLASSES)
    return {
        "method": name,
        "iou": [report["per_class"][c]["iou"] for c in COVID_CLASSES],
        "miou": report["mIoU"],
        "s_per_iter": wall / args.iterations,
        "cpu_s_per_iter": cpu / args.iterations,
    }


def format_table(rows: list[dict], device: str) -> str:
    base = next((r for r in rows if r["method"] == "supervised"), None)
    names = [SHORT.get(c, c) for c in COVID_CLASSES]
    head = ["method", *[f"IoU {n}" for n in names], "mIoU", "s/iter", "x sup"]
    if device == "cpu":
        head += ["cpu s/iter", "x sup (cpu)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    fmt = lambda v: "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f}"
    for r in rows:
        cells = [r["method"], *[fmt(v) for v in r["iou"]], fmt(r["miou"]), f"{r['s_per_iter']:.3f}"]
        cells.append(f"{r['s_per_iter'] / base['s_per_iter']:.2f}" if base else "n/a")
        if device == "cpu":
            cells.append(f"{r['cpu_s_per_iter']:.3f}")
            cells.append(f"{r['cpu_s_per_iter'] / base['cpu_s_per_iter']:.2f}" if base else "n/a")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    names = [n.strip() for n in args.methods.split(",") if n.strip()]
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("compare_methods: --device cuda but torch sees no CUDA device; use --device cpu.")
    if args.amp and not args.device.startswith("cuda"):
        print("compare_methods: --amp needs --device cuda; training in float32 on the CPU.", file=sys.stderr)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    data = build_data(args)
    rows = []
    for name in names:
        r = train_one(name, args, data)
        rows.append(r)
        print(
            f"[{time.perf_counter() - t0:6.0f}s] {name}: mIoU {100 * r['miou']:.1f}, {r['s_per_iter']:.3f} s/iter",
            file=sys.stderr,
            flush=True,
        )
    print(
        f"\n{args.iterations} iterations, {args.size}x{args.size} phantoms, {args.n_labeled} labelled / "
        f"{args.n_unlabeled} unlabelled / {args.n_test} test slices, batch {args.batch_labeled}+{args.batch_unlabeled}, "
        f"UNet {args.features}, device {args.device}{' amp' if args.amp else ''}, seed {args.seed}; IoU in %, "
        "per-image mean, mIoU over all 4 classes\n"
    )
    print(format_table(rows, torch.device(args.device).type))
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
