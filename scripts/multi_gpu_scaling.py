"""Seconds per training iteration of a bundle under ``torchrun`` on 1 and on N processes, and the scaling efficiency.

    python scripts/multi_gpu_scaling.py --processes 8                 # 1 and 8 GPUs, the covid bundle
    python scripts/multi_gpu_scaling.py --processes 2 --device cpu --iters 3 --image-size 64 --batch-size 2

Each run is the multi-GPU command of ``docs/howto/several-gpus.md``
(``torchrun --standalone --nproc_per_node=n -m monai.bundle run training``
with ``configs/train.json`` and ``configs/multi_gpu_train.json``) on the bundle's synthetic data, with the same
per-process batch (``--batch-size`` labelled + as many unlabelled images), ``--iters`` iterations per epoch and three
epochs, validation and checkpoints left to the end. The time of epoch 2 (ignite's "Epoch[2] Complete. Time taken",
logged by rank 0: warmed up, no validation, no checkpoint) over ``--iters`` is the seconds per iteration.

One iteration on n processes trains on n times the images, so the scaling efficiency is
``seconds per iteration on 1 / seconds per iteration on N``: 1.0 when N processes train N times the images in the
time one takes for its share (weak scaling; images per second grow N times). Written to ``--json`` and printed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EPOCH_TIME = re.compile(r"Epoch\[2\] Complete\. Time taken: (\d+):(\d+):([\d.]+)")


def seconds_per_iteration(processes: int, args: argparse.Namespace, out: Path) -> dict:
    """One timed run on ``processes`` processes: its seconds per iteration and images per second."""
    configs = f"['bundles/{args.task}/configs/train.json','bundles/{args.task}/configs/multi_gpu_train.json']"
    size = f"[{args.image_size},{args.image_size}]"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
           "-m", "monai.bundle", "run", "training", "--config_file", configs,
           "--image_size", size, "--batch_size", str(args.batch_size), "--unlabeled_batch_size", str(args.batch_size),
           "--epoch_length", str(args.iters), "--max_epochs", "3", "--val_interval", "1000",
           "--train#checkpointer#save_interval", "1000", "--amp", str(args.amp).lower(),
           "--output_dir", str(out / f"n{processes}"), "--cache_dir", str(out / "cache")]
    if args.device:
        cmd += ["--device", args.device]
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=dict(os.environ, PYTHONWARNINGS="ignore"))
    log = proc.stdout + proc.stderr
    found = EPOCH_TIME.search(log)
    if proc.returncode != 0 or found is None:
        sys.exit(f"multi_gpu_scaling: the run on {processes} process(es) failed (exit {proc.returncode}):\n"
                 + log[-3000:])
    hours, minutes, seconds = found.groups()
    per_iter = (int(hours) * 3600 + int(minutes) * 60 + float(seconds)) / args.iters
    images = 2 * args.batch_size * processes  # labelled + unlabelled images per iteration, all processes
    return {"processes": processes, "s_per_iter": per_iter, "images_per_s": images / per_iter,
            "wall_s": time.perf_counter() - started}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, required=True, help="N: the processes (GPUs) of the second run")
    parser.add_argument("--task", default="covid", choices=["covid", "chase"])
    parser.add_argument("--iters", type=int, default=50, help="iterations per epoch (the timed epoch is the 2nd)")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8, help="labelled and unlabelled images per process")
    parser.add_argument("--amp", action="store_true")
    parser.add_argument("--device", default=None, help="e.g. cpu (default: one GPU per process when CUDA is there)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.processes < 2:
        parser.error("--processes must be 2 or more (the first run is the 1-process one)")
    with tempfile.TemporaryDirectory() as tmp:
        runs = [seconds_per_iteration(n, args, Path(tmp)) for n in (1, args.processes)]
    one, many = runs
    result = {"task": args.task, "image_size": args.image_size, "batch_size_per_process": args.batch_size,
              "amp": args.amp, "iters": args.iters, "runs": runs, "efficiency": one["s_per_iter"] / many["s_per_iter"]}
    for r in runs:
        print(f"{r['processes']} process(es): {r['s_per_iter']:.3f} s per iteration, {r['images_per_s']:.1f} images/s")
    print(f"scaling efficiency on {args.processes}: {result['efficiency']:.2f} "
          f"({many['images_per_s'] / one['images_per_s']:.2f}x the images per second of one)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
