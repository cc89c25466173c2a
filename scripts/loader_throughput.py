"""How fast can the bundle's training loaders feed the trainer? Iterates the labelled and unlabelled loaders of a
bundle's train config exactly as ``SemiSupervisedTrainer`` does (one batch of each per step; a loader that runs out
is iterated again), with no network, and reports seconds per step and how many times each loader was restarted.

A GPU step of the paper grid takes 0.06 s (docs/notes/2026-11-26-cost-cpu-and-h100.md), so a loader slower than
that makes the GPU wait.
Run it on the machine that trains, with the grid's settings, e.g.:

    python scripts/loader_throughput.py --dataset-dir data/covid --image-size 256 --batch-size 8 \\
        --unlabeled-batch-size 8 --num-workers 4 --epoch-length 200 --steps 400

``--set KEY=VALUE`` overrides any other bundle key (VALUE read as JSON when it parses, else as text), e.g.
``--set train_sampling=pass`` for the loaders as they were before ``train_sampling`` existed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", default=str(ROOT / "bundles" / "covid"))
    p.add_argument("--dataset-dir", default=None, help="prepared data (default: the bundle's synthetic data)")
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--unlabeled-batch-size", type=int, default=8)
    p.add_argument("--num-workers", type=int, default=4)
    p.add_argument("--epoch-length", type=int, default=200)
    p.add_argument("--steps", type=int, default=400, help="steps timed (after --warmup)")
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any other bundle key")
    a = p.parse_args(argv)

    import torch
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(Path(a.bundle) / "configs" / "train.json"))
    parser["bundle_root"] = str(Path(a.bundle).resolve())
    overrides = {"image_size": [a.image_size, a.image_size], "batch_size": a.batch_size,
                 "unlabeled_batch_size": a.unlabeled_batch_size, "num_workers": a.num_workers,
                 "epoch_length": a.epoch_length, "method": "supmix_sufd", "device": "cpu"}
    if a.dataset_dir:
        overrides["dataset_dir"] = a.dataset_dir
    for item in a.set:
        key, sep, value = item.partition("=")
        if not sep:
            p.error(f"--set {item!r}: expected KEY=VALUE")
        overrides[key] = _value(value)
    parser.update(overrides)
    torch.manual_seed(0)
    streams = {"labelled": parser.get_parsed_content("train#dataloader"),
               "unlabelled": parser.get_parsed_content("train#unlabeled_dataloader")}
    iters = {k: None for k in streams}
    restarts = {k: 0 for k in streams}
    sizes = {k: [] for k in streams}

    def next_batch(name: str):
        for _ in range(2):
            if iters[name] is None:
                iters[name] = iter(streams[name])
                restarts[name] += 1
            try:
                return next(iters[name])
            except StopIteration:
                iters[name] = None
        raise RuntimeError(f"the {name} loader yields no batch")

    times = []
    for step in range(a.warmup + a.steps):
        if step == a.warmup:
            restarts = {k: 0 for k in streams}  # count the timed steps' loader starts only
        t0 = time.perf_counter()
        for name in streams:
            batch = next_batch(name)
            if step >= a.warmup:
                sizes[name].append(int(batch["image"].shape[0]))
        if step >= a.warmup:
            times.append(time.perf_counter() - t0)
    q = statistics.quantiles(times, n=10)
    sampling = parser.get("train_sampling", "(no train_sampling key)")
    print(f"train_sampling={sampling} num_workers={a.num_workers} batch {a.batch_size} + {a.unlabeled_batch_size} "
          f"at {a.image_size} px, {a.steps} steps after {a.warmup}:")
    print(f"  s/step mean {statistics.fmean(times):.4f}  median {statistics.median(times):.4f}  "
          f"p10 {q[0]:.4f}  p90 {q[-1]:.4f}")
    for name in streams:
        small = sum(s < (a.batch_size if name == "labelled" else a.unlabeled_batch_size) for s in sizes[name])
        print(f"  {name}: {len(streams[name].dataset)} items, {restarts[name]} loader starts in the timed steps, "
              f"{small} of {len(sizes[name])} batches smaller than the batch size")
    return 0


if __name__ == "__main__":
    sys.exit(main())
