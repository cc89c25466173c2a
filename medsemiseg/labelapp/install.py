"""Install or update a bundle in the MONAI Label app: ``python -m medsemiseg.labelapp install bundles/covid``.

The app serves ``<app>/model/<name>/``. The command copies into it what serving and training need -- the bundle's
``configs/`` (links resolved to files, so the copy stands alone), its ``LICENSE`` and ``docs/``, and the trained
``models/model.pt`` with its run record ``models/run.json`` -- and nothing else: no ``cache/`` (the synthetic data
set), ``logs/``, ``eval/``, ``outputs/``, training checkpoints or dated copies of earlier models. The copy is
assembled next to its destination and then swapped in, so a second install replaces the first whole (a plain
``cp -r`` into an existing folder nests it: ``model/covid/covid``) and a failed one leaves the old copy served.
A running server picks up the new ``model.pt`` on the next request; new configs need a restart.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path
from typing import Sequence

__all__ = ["InstallError", "install_bundle", "main"]

#: the app folder the command installs into when ``--app`` is not given (relative to the working directory)
DEFAULT_APP = Path("bundles") / "monailabel_app"
MODEL_FILE = "model.pt"
RUN_FILE = "run.json"


class InstallError(ValueError):
    """The bundle cannot be installed; the message names the file or option and the fix."""


def _check_bundle(bundle: Path) -> None:
    for needed in ("configs/inference.json", "configs/train.json", "configs/metadata.json"):
        if not (bundle / needed).is_file():
            raise InstallError(
                f"{bundle}: not a bundle folder ({needed} missing); give a bundle such as bundles/covid or "
                "bundles/chase."
            )


def _check_model(model: Path) -> None:
    from medsemiseg.checkpoint_io import CheckpointReadError, read_checkpoint

    try:
        read_checkpoint(model)
    except CheckpointReadError as e:
        raise InstallError(f"{e}; train the bundle again or pass another --model.") from None


def _fsync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def install_bundle(
    bundle: str | os.PathLike,
    app: str | os.PathLike = DEFAULT_APP,
    name: str | None = None,
    model: str | os.PathLike | None = None,
    untrained: bool = False,
) -> Path:
    """Copy ``bundle`` into ``<app>/model/<name>`` (module docstring), replacing an earlier copy; returns its path.

    Args:
        bundle: the bundle folder (``bundles/covid``).
        app: the MONAI Label app folder (holding ``main.py``).
        name: the model's name in the app (``--conf models <name>``, ``/infer/<name>``); default the folder's name.
        model: the weights to serve; default ``<bundle>/models/model.pt``. Its ``run.json`` comes from its folder.
        untrained: install without weights (the app then answers ``/infer/<name>`` with 409 until
            ``POST /train/<name>`` has trained it from the datastore).
    """
    src = Path(bundle).expanduser().resolve()
    app_dir = Path(app).expanduser().resolve()
    _check_bundle(src)
    if not (app_dir / "main.py").is_file():
        raise InstallError(f"--app {app}: no MONAI Label app there (main.py missing); give the app folder, e.g. --app "
                           f"{DEFAULT_APP}.")
    name = name or src.name
    if not name.replace("_", "").replace("-", "").isalnum():
        raise InstallError(f"--name {name!r}: use letters, digits, '_' or '-' (it is the model's name in the URLs).")
    dest = app_dir / "model" / name
    if dest.resolve() == src:
        raise InstallError(f"{src} is already the app's copy; give the bundle's own folder, e.g. bundles/{name}.")
    weights = Path(model).expanduser() if model is not None else src / "models" / MODEL_FILE
    if model is not None and untrained:
        raise InstallError("--model and --untrained contradict each other; give one of them.")
    if untrained:
        weights = None
    elif not weights.is_file():
        raise InstallError(
            f"{weights}: no trained model; train the bundle first (python -m monai.bundle run training --config_file "
            f"{src / 'train.json'}), pass --model <file>, or --untrained to serve it only for training from the "
            "datastore."
        )
    else:
        _check_model(weights)

    stage = dest.parent / f".{name}.installing"
    old = dest.parent / f".{name}.replaced"
    for leftover in (stage, old):  # of an install that was interrupted
        if leftover.exists():
            shutil.rmtree(leftover)
    try:
        shutil.copytree(src / "configs", stage / "configs", symlinks=False)
        for extra in ("LICENSE", "docs"):
            if (src / extra).is_dir():
                shutil.copytree(src / extra, stage / extra, symlinks=False)
            elif (src / extra).is_file():
                shutil.copy2(src / extra, stage / extra)
        (stage / "models").mkdir()
        if weights is not None:
            shutil.copy2(weights, stage / "models" / MODEL_FILE)
            _fsync(stage / "models" / MODEL_FILE)
            if (weights.parent / RUN_FILE).is_file():
                shutil.copy2(weights.parent / RUN_FILE, stage / "models" / RUN_FILE)
        if dest.is_symlink() or dest.is_file():
            dest.unlink()
        elif dest.exists():
            dest.rename(old)
        stage.rename(dest)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        if old.exists() and not dest.exists():
            old.rename(dest)  # the earlier copy stays served
        raise
    shutil.rmtree(old, ignore_errors=True)
    return dest


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m medsemiseg.labelapp",
        description="Install or update a bundle in the MONAI Label app (docs/bundles.md, 'MONAI Label').",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    i = sub.add_parser("install", help="copy a bundle into <app>/model/<name>, replacing an earlier copy")
    i.add_argument("bundle", help="bundle folder, e.g. bundles/covid")
    i.add_argument("--app", default=str(DEFAULT_APP), help=f"MONAI Label app folder (default {DEFAULT_APP})")
    i.add_argument("--name", default=None, help="model name in the app (default: the bundle folder's name)")
    i.add_argument("--model", default=None, help="weights to serve (default: <bundle>/models/model.pt)")
    i.add_argument("--untrained", action="store_true",
                   help="install without weights, to train it from the datastore first (POST /train/<name>)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry: 0 installed, 2 refused (the last line names the file or option and the fix)."""
    args = _parser().parse_args(argv)
    try:
        dest = install_bundle(args.bundle, args.app, args.name, args.model, args.untrained)
    except (InstallError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    served = dest / "models" / MODEL_FILE
    print(f"installed {args.bundle} as '{dest.name}' in {dest} ("
          + (f"serving {served}" if served.is_file() else "untrained: POST /train/" + dest.name + " trains it")
          + f"); start the app with --conf models {dest.name}")
    return 0
