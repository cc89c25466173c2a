"""Peak memory of listing an inference folder and loading every slice, as the bundles' ``inferring`` does.

    python scripts/inference_memory.py --volumes 6 --size 512 --slices 100

Writes ``--volumes`` random CT volumes (``size x size x slices``, float32 NIfTI) into a temporary folder, then, in a
fresh process, runs ``medsemiseg.bundle.inputs.inference_items`` on the folder and passes every item through the bundles'
loader (``LoadSliced``) in the data loader's order, and prints that process's peak resident memory (``ru_maxrss``)
next to the size of one volume and of all of them. No network runs: this isolates what the data path holds.
Inference that kept every slice of every input in its item list needed about all volumes' size; with
:class:`medsemiseg.data.slices.LazySlice` it needs about two volumes (the one kept from the listing and the current one).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

_MEASURE = r"""
import json, resource, sys, time
from medsemiseg.bundle.inputs import inference_items
from medsemiseg.data.slices import LoadSliced
start = time.perf_counter()
items = inference_items(sys.argv[1], "covid", sys.argv[2])
listed = time.perf_counter() - start
load = LoadSliced("image")
for it in items:
    load(dict(it))
print(json.dumps({"items": len(items), "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "list_s": listed, "total_s": time.perf_counter() - start}))
"""

_BASELINE = r"""
import json, resource
import medsemiseg.bundle.inputs, medsemiseg.data.io, monai, nibabel, torch  # what the measured process imports
print(json.dumps({"peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--volumes", type=int, default=6)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--slices", type=int, default=100)
    args = ap.parse_args(argv)
    if min(args.volumes, args.size, args.slices) < 1:
        ap.error("--volumes, --size and --slices must be at least 1")

    import nibabel as nib
    import numpy as np

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "studies"
        folder.mkdir()
        rng = np.random.default_rng(0)
        for i in range(args.volumes):
            vol = rng.normal(-500, 400, size=(args.size, args.size, args.slices)).astype(np.float32)
            nib.save(nib.Nifti1Image(vol, np.diag([0.7, 0.7, 2.5, 1.0])), str(folder / f"study{i}.nii"))
        del vol
        run = [sys.executable, "-c"]
        base = json.loads(subprocess.run(run + [_BASELINE], check=True, capture_output=True, text=True).stdout)
        out = json.loads(subprocess.run(run + [_MEASURE, str(folder), tmp], check=True, capture_output=True,
                                        text=True).stdout.strip().splitlines()[-1])
    one = args.size * args.size * args.slices * 4 / 2**20
    print(f"{args.volumes} volumes of {args.size}x{args.size}x{args.slices} float32: {one:.0f} MiB each, "
          f"{one * args.volumes:.0f} MiB in all; {out['items']} slices")
    print(f"peak memory of listing + loading every slice: {out['peak_mib']:.0f} MiB "
          f"({out['peak_mib'] - base['peak_mib']:.0f} MiB above the {base['peak_mib']:.0f} MiB of the imports alone "
          f"= {(out['peak_mib'] - base['peak_mib']) / one:.1f} volumes); listing {out['list_s']:.1f} s, "
          f"all {out['total_s']:.1f} s")


if __name__ == "__main__":
    main()
