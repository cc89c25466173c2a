"""The command line, ``python -m medsemiseg.prepare {chase,drive,covid,covid-semiseg,folder}``: arguments, the run,
and a failure reported as one line naming the file and the fix."""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..declared import INTENSITY_KINDS
from ..hdf5 import HDF5_AXES
from ..io import DataReadError
from .chase import prepare_chase
from .core import ORIENTATIONS, PrepareNote, PrepareWarning
from .covid import prepare_covid
from .folder import prepare_folder
from .lists import LIST_OPTIONS
from .pool import _unit


def _count(text: str) -> int | float:
    """``--val-fraction`` / ``--test-fraction``: a share in [0, 1) (a float) or a whole count (an int, written
    without a decimal point). ``1.0`` (``1e0``, ``1.``) is refused as ambiguous -- one item, or all of them? --
    naming both spellings (:func:`~medsemiseg.data.splits.resolve_count` refuses the float 1.0 likewise)."""
    if text.strip().lstrip("+").isdigit():
        return int(text)
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number (fraction in [0, 1) or a whole count)") from None
    if value == 1.0:
        raise argparse.ArgumentTypeError(
            f"{text!r} is ambiguous: give a share of the items below 1 (e.g. 0.1 for 10 %), or a whole count without "
            "a decimal point (e.g. 1 for one item)"
        )
    return value


def _segment_map(text: str) -> dict[str, int]:
    """``'Lesion=1, Effusion=3'`` or ``'1=1,2=3'`` -> ``{segment label or number: class}``."""
    out: dict[str, int] = {}
    for part in filter(None, (t.strip() for t in text.split(","))):
        key, sep, value = part.rpartition("=")
        if not sep or not key.strip() or not value.strip().isdigit():
            raise argparse.ArgumentTypeError(f"{part!r}: expected <segment label or number>=<class index>")
        out[key.strip()] = int(value)
    if not out:
        raise argparse.ArgumentTypeError("empty segment map")
    return out


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--out", required=True, help="output folder (slices + datalist.json)")
    common.add_argument("--labeled-fraction", default=None,
                        help="1/8, 1/4, 1/2, a decimal, a count N, or full (default 1/8: the paper's simulated "
                             "scarcity; the other masks of the training pool are used as unlabelled; folder with "
                             "--labeled-list: full; with --group-by it counts groups)")
    common.add_argument("--seed", type=int, default=0, help="seed of the labelled subset (default 0)")
    common.add_argument("--val-seed", type=int, default=0, help="seed of the validation/test hold-out (default 0)")
    common.add_argument("--overwrite", action="store_true", help="replace an existing different preparation in --out")
    common.add_argument("--no-progress", action="store_true", help="no progress bars")

    parser = argparse.ArgumentParser(
        prog="python -m medsemiseg.prepare",
        description="Prepare 2D slices and a MONAI datalist JSON for semi-supervised training (see docs/data.md).",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    c = sub.add_parser("chase", parents=[common], help="CHASE_DB1 retinal vessel folder")
    c.add_argument("src_dir", help="folder with Image_01L.jpg ... and Image_01L_1stHO.png ...")
    c.add_argument("--protocol", choices=["20/8", "8/20"], default="20/8",
                   help="train/test by sorted name: 20/8 (default, first 20 train, last 8 test) or the older 8/20 "
                        "(those last 8 train, the first 20 test)")
    c.add_argument("--observer", choices=["1stHO", "2ndHO"], default="1stHO", help="annotator (default 1stHO)")
    c.add_argument("--val-fraction", type=_count, default=0.0,
                   help="share/count of training images held out for validation; 0 (default) = validate on test")
    c.add_argument("--unlabeled", nargs="*", default=[], help="extra unlabelled fundus pictures (files or folders)")

    v = sub.add_parser("covid", parents=[common], help="MedSeg COVID-19 CT (NIfTI stack or DICOM series + mask)")
    v.add_argument("--image", "--src", dest="image", required=True,
                   help="tr_im.nii.gz, a DICOM series folder, or Kaggle's images_medseg.npy")
    v.add_argument("--mask", required=True,
                   help="tr_mask.nii.gz (0 bg, 1 ground-glass, 2 consolidation, 3 effusion), a DICOM SEG, "
                        "or Kaggle's one-hot masks_medseg.npy")
    v.add_argument("--unlabeled", nargs="*", default=[],
                   help="more volumes / series / folders or .zip files of them, or Kaggle .npy stacks; no masks")
    v.add_argument("--val-fraction", type=_count, default=0.1, help="validation share of the non-test slices (0.1)")
    v.add_argument("--test-fraction", type=_count, default=0.2, help="test share of the labelled slices (0.2)")
    v.add_argument("--orientation", choices=ORIENTATIONS, default="as-stored",
                   help="operation on the upright picture if your copy is stored differently (default as-stored)")
    v.add_argument("--segment-map", type=_segment_map, default=None,
                   help="DICOM SEG mask: segment label or number -> class, e.g. 'GGO=1,Consolidation=2'")
    v.add_argument("--rp-image", default=None,
                   help="MedSeg set 2 (Radiopaedia) image volumes: rp_im.zip or its folder; with --rp-mask they are "
                        "labelled (paired by file name, one hold-out group per volume), alone unlabelled")
    v.add_argument("--rp-mask", default=None, help="MedSeg set 2 masks: rp_msk.zip or its folder (labels 0..3)")
    v.add_argument("--rp-orientation", choices=ORIENTATIONS, default=None,
                   help="operation on the upright Radiopaedia pictures, images and masks alike "
                        "(default: --orientation)")

    d = sub.add_parser("drive", parents=[common], help="DRIVE retinal vessels in its public layout")
    d.add_argument("src_dir", help="DRIVE folder holding training/{images,1st_manual,mask} and "
                                   "test/{images,1st_manual,2nd_manual,mask}")
    d.add_argument("--val-fraction", type=_count, default=0.2,
                   help="share/count of the 20 training photographs held out for validation (0.2: 4); "
                        "0 = validate on the test split")

    s = sub.add_parser("covid-semiseg", parents=[common],
                       help="COVID-SemiSeg (Inf-Net): MedSeg CT slices as 8-bit images + 1600 unlabelled slices")
    s.add_argument("src_dir", help="COVID-SemiSeg's Dataset folder holding TrainingSet/ and TestingSet/")
    s.add_argument("--val-fraction", type=_count, default=0.2,
                   help="share/count of the 50 labelled training slices held out for validation (0.2: 10)")
    s.add_argument("--no-extra-unlabeled", dest="extra_unlabeled", action="store_false",
                   help="leave out the 1600 extra unlabelled slices (other collections, another display window); "
                        "the pool's slices beyond the labelled fraction stay unlabelled")

    f = sub.add_parser("folder", parents=[common], help="any folder of DICOM / NIfTI / pictures with optional masks")
    f.add_argument("src_dir", help="folder of images; masks in labels/ or as <name>_mask.*; unlabeled/ for extras")
    f.add_argument("--task", default="folder", help="task name stored in the datalist meta")
    f.add_argument("--num-classes", type=int, default=None,
                   help="declared classes (default: largest label + 1, if the masks hold 0..K-1, K <= 16)")
    f.add_argument("--class-names", default=None, help="comma-separated class names, background first")
    f.add_argument("--mask-threshold", type=float, default=None,
                   help="binarise masks: value >= T -> 1 (128 for JPEG / anti-aliased 0/255 masks)")
    f.add_argument("--segment-map", type=_segment_map, default=None,
                   help="DICOM SEG masks: segment label or number -> class, e.g. 'Tumour=1,Oedema=2' "
                        "(unlisted segments are left out)")
    f.add_argument("--val-fraction", type=_count, default=None,
                   help="validation share of the non-test items (0.1; 0 with --labeled-list)")
    f.add_argument("--test-fraction", type=_count, default=None, help="test share of the labelled items (0)")
    for role, option in LIST_OPTIONS.items():
        f.add_argument(option, default=None, metavar="FILE",
                       help=f"file of names, one per line: exactly these inputs are {role} "
                            "(SSL4MIS' *.list, UniMatch's *.txt; docs/data.md)")
    f.add_argument("--group-by", default=None, metavar="REGEX",
                   help="the group (patient) of an input: this regex's first group or match in its file name, e.g. "
                        "'patient\\d+'; random splits and the labelled pick move whole groups, no group in two splits")
    f.add_argument("--volume-by", default=None, metavar="REGEX",
                   help="the volume a 2D test slice belongs to for per-volume scores, named like --group-by "
                        "(default: its --group-by group), e.g. 'patient\\d+_frame\\d+'")
    f.add_argument("--intensity", default="auto", choices=["auto", *INTENSITY_KINDS],
                   help="the kind of values the images hold, declared for the bundles: hu, uint8 (0-255), percentile "
                        "(any other scale); auto (default) decides from the labelled images' values")
    f.add_argument("--hdf5-image-key", default="image", help="HDF5 inputs: the image array's key (default image)")
    f.add_argument("--hdf5-label-key", default="label",
                   help="HDF5 inputs: the label array's key (default label); a file holding it is labelled")
    f.add_argument("--hdf5-axes", default="zyx", choices=HDF5_AXES,
                   help="HDF5 arrays' axis order: zyx (default; numpy picture order (rows, columns), volumes (Z, Y, "
                        "X): SSL4MIS' ACDC) or xyz (nibabel order)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry; returns the exit status: 0 ok; 2 bad input or an OS error (read-only or full disk, ``--out``
    under a file, no permission); 1 an unexpected failure. A failure's last line on stderr is ``error: ...``
    naming the file or option and the fix, printed after the run's warnings; the traceback only with
    ``MEDSEMISEG_DEBUG=1`` (:mod:`medsemiseg.cli_errors`)."""
    args = _parser().parse_args(argv)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", PrepareWarning)
        code, path = _run_cli(args)
    for w in caught:  # ours as one plain line each; anything else as Python shows it
        if issubclass(w.category, PrepareWarning):
            kind = "note" if issubclass(w.category, PrepareNote) else "warning"
            print(f"{kind}: {w.message}", file=sys.stderr)
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    if code:
        _report_failure(path, args)  # on failure, _run_cli returns the exception in place of the path
        return code
    datalist = json.loads(Path(path).read_text())
    meta, c = datalist["meta"], datalist["meta"]["counts"]
    unit = _unit([it for k in ("labeled", "unlabeled", "validation", "test") for it in datalist[k]])
    one = unit[:-1] if " " not in unit else unit  # "1 labeled image"
    of = f"the {c['train']} training {unit} with masks"
    if "train_groups" in c:  # the fraction counts groups (patients)
        of = (f"the {c['train_groups']} training groups by --group-by '{meta['group_by']}' = {c['labeled_groups']} "
              f"groups of {of}")
    print(  # the unit spelt out: "5 labeled" of a CT folder is 5 slices, not 5 volumes
        f"{meta['task']}: {c['labeled']} labeled {one if c['labeled'] == 1 else unit} + {c['unlabeled']} unlabeled "
        f"{one if c['unlabeled'] == 1 else unit} (fraction {meta['labeled_fraction']} of {of}, seed {meta['seed']}), "
        f"{c['validation']} validation, {c['test']} test {unit} -> {path}"
    )
    return 0


def _run_cli(args: argparse.Namespace) -> tuple[int, Any]:
    """Run the subcommand: ``(0, datalist path)``, or ``(exit status, the exception)`` when it failed."""
    common = dict(
        labeled_fraction=args.labeled_fraction if args.command == "folder" else args.labeled_fraction or "1/8",
        seed=args.seed, val_seed=args.val_seed, overwrite=args.overwrite, progress=not args.no_progress,
    )
    try:
        if args.command == "chase":
            path = prepare_chase(args.src_dir, args.out, protocol=args.protocol, observer=args.observer,
                                 unlabeled=args.unlabeled, val_fraction=args.val_fraction, **common)
        elif args.command == "covid":
            path = prepare_covid(args.image, args.mask, args.out, unlabeled=args.unlabeled,
                                 val_fraction=args.val_fraction, test_fraction=args.test_fraction,
                                 orientation=args.orientation, segment_map=args.segment_map,
                                 rp_image=args.rp_image, rp_mask=args.rp_mask, rp_orientation=args.rp_orientation,
                                 **common)
        elif args.command in ("drive", "covid-semiseg"):
            from .public import prepare_covid_semiseg, prepare_drive

            if args.command == "drive":
                path = prepare_drive(args.src_dir, args.out, val_fraction=args.val_fraction, **common)
            else:
                path = prepare_covid_semiseg(args.src_dir, args.out, val_fraction=args.val_fraction,
                                             extra_unlabeled=args.extra_unlabeled, **common)
        else:
            names = [s.strip() for s in args.class_names.split(",")] if args.class_names else None
            path = prepare_folder(args.src_dir, args.out, task=args.task, num_classes=args.num_classes,
                                  class_names=names, mask_threshold=args.mask_threshold,
                                  segment_map=args.segment_map,
                                  val_fraction=args.val_fraction, test_fraction=args.test_fraction,
                                  labeled_list=args.labeled_list, unlabeled_list=args.unlabeled_list,
                                  val_list=args.val_list, test_list=args.test_list, group_by=args.group_by,
                                  volume_by=args.volume_by,
                                  intensity=args.intensity, hdf5_image_key=args.hdf5_image_key,
                                  hdf5_label_key=args.hdf5_label_key, hdf5_axes=args.hdf5_axes, **common)
    except Exception as e:  # noqa: BLE001 - main reports it after the run's warnings (_report_failure)
        return (2 if isinstance(e, (DataReadError, ValueError, OSError)) else 1), e
    return 0, path


def _os_error_text(e: OSError, out: str) -> str:
    """An ``OSError`` as one sentence naming the path and the fix (a full disk's write names no file: ``--out``)."""
    import errno

    path = e.filename if e.filename is not None else f"--out {out}"
    if e.filename2 is not None:
        path = f"{path} -> {e.filename2}"
    fixes = {
        errno.EROFS: "the file system is read-only; choose an --out on a writable disk",
        errno.ENOSPC: "the disk is full; free some space or choose an --out on another disk",
        errno.EDQUOT: "the disk quota is used up; free some space or choose an --out on another disk",
        errno.ENOTDIR: "a part of this path is a file, not a folder; choose another --out",
        errno.EISDIR: "this is a folder where a file is expected; check the path",
        errno.EACCES: "permission denied; choose a path you may read / write, or fix its permissions",
        errno.EPERM: "operation not permitted; choose a path you may read / write, or fix its permissions",
        errno.ENOENT: "no such file or folder; check the path",
        errno.EEXIST: "it exists already; remove it or choose another --out",
    }
    return f"{path}: {fixes.get(e.errno, e.strerror or str(e))} ({e.strerror or type(e).__name__})."


def _report_failure(e: BaseException, args: argparse.Namespace) -> None:
    """The last lines of a failed run on stderr: the traceback only with ``MEDSEMISEG_DEBUG=1``; then our
    message (``error: ...``), an OS error as :func:`_os_error_text`, an unexpected failure as
    :func:`medsemiseg.cli_errors.report` (where it was raised, then its outermost project message or root cause)."""
    import traceback

    from medsemiseg import cli_errors

    if cli_errors.debug_enabled():
        traceback.print_exception(e)
    if isinstance(e, OSError) and e.errno is not None:
        lines = [f"error: {_os_error_text(e, args.out)}"]
    elif isinstance(e, (DataReadError, ValueError)):
        lines = [f"error: {e}"]
    else:
        lines = cli_errors.report(e, f"prepare {args.command}")
    print("\n".join(lines), file=sys.stderr)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
