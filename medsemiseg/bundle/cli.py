"""The bundle folder and the command line of ``python -m monai.bundle run``.

MONAI passes a bundle config neither the path it was read from nor the overrides it was given, so the bundles hand
``sys.argv`` to these functions (``"$medsemiseg.bundle.cli.find_bundle_root(@task, sys.argv)"``):

- :func:`find_bundle_root` -- the bundle folder, whether the config is named as ``bundles/covid/train.json`` from the
  repository root, as ``configs/train.json`` from inside the bundle, or read from Python;
- :func:`check_cli_overrides` -- refuses a ``--key`` the config does not have (MONAI would add it unused);
- :func:`install_failure_report` -- under the bundle CLI, a failure ends on one line naming the file or key and the
  fix (:mod:`medsemiseg.cli_errors`), the engine's arguments shown as the flags that set them (:mod:`.flags`); the
  bundles call it first in ``initialize``.
"""

from __future__ import annotations

import ast
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from medsemiseg import cli_errors

from . import flags
from .settings import BundleConfigError

__all__ = ["find_bundle_root", "check_cli_overrides", "install_failure_report"]

logger = logging.getLogger(__name__)


def install_failure_report(argv: Sequence[str]) -> None:
    """Under ``python -m monai.bundle`` (``argv[0]`` is MONAI's bundle ``__main__``), make a failure end on the
    two-line report of :func:`medsemiseg.cli_errors.install` instead of MONAI's chain of wrapped tracebacks, with
    the engine's messages naming the bundle's flags (:func:`.flags.rewrite`: ``--unlabeled_batch_size`` where the
    engine says ``unlabeled_data_loader.batch_size``); elsewhere (tests, notebooks, MONAI Label) change nothing."""
    if cli_errors.running_monai_bundle_cli(list(argv)):
        cli_errors.install(rewrite=flags.rewrite)



def _config_files_from_argv(argv: Sequence[str]) -> list[str]:
    """The ``--config_file`` value(s) of a ``python -m monai.bundle ...`` command line, in order."""
    values: list[str] = []
    for i, a in enumerate(argv):
        if a == "--config_file" and i + 1 < len(argv):
            values.append(argv[i + 1])
        elif a.startswith("--config_file="):
            values.append(a.split("=", 1)[1])
    files: list[str] = []
    for v in values:
        v = v.strip()
        if v.startswith("["):
            try:
                files += [str(x) for x in ast.literal_eval(v)]
                continue
            except (ValueError, SyntaxError):
                pass
        files += [x.strip() for x in v.split(",") if x.strip()]
    return files


def _is_bundle_dir(path: Path) -> bool:
    return (path / "configs" / "metadata.json").is_file()


def find_bundle_root(name: str | None, argv: Sequence[str]) -> str:
    """The bundle folder (the one holding ``configs/metadata.json``), as an absolute path.

    Looked up in this order:

    1. the folder of the first ``--config_file`` on the command line (its parent when that folder is
       ``configs``): ``bundles/covid/train.json`` and ``bundles/covid/configs/train.json`` both give
       ``bundles/covid``, wherever the command runs from;
    2. the current directory, when it is a bundle folder (model-zoo style: ``cd bundle && python -m monai.bundle
       run training --config_file configs/train.json``);
    3. ``bundles/<name>`` of the source checkout this package was installed from (``pip install -e .``).

    MONAI Label and scripts that parse a config themselves set ``bundle_root`` directly and never get here.

    Args:
        name: the bundle's folder name (``"covid"``, ``"chase"``), used by step 3.
        argv: the command line (the bundles pass ``sys.argv``).
    """
    for f in _config_files_from_argv(argv)[:1]:
        folder = Path(f).absolute().parent
        if folder.name == "configs":
            folder = folder.parent
        if _is_bundle_dir(folder):
            return str(folder)
    cwd = Path.cwd()
    if _is_bundle_dir(cwd) and (name is None or cwd.name == name):
        return str(cwd)
    if name:
        checkout = Path(__file__).resolve().parents[2] / "bundles" / str(name)
        if _is_bundle_dir(checkout):
            # a config read from Python (ConfigParser / create_workflow) of a *copied* bundle gets here too, and would
            # then load and write the checkout's models/: say so, with the key that points it at the copy
            logger.warning(
                f"bundle_root is not set and no --config_file names the bundle folder: using {checkout}. A copied "
                "bundle read from Python should set it, e.g. parser['bundle_root'] = 'path/to/bundle' or "
                "create_workflow(..., bundle_root='path/to/bundle')."
            )
            return str(checkout)
    raise BundleConfigError(
        f"cannot locate the {name or ''} bundle folder (the one with configs/metadata.json): pass it explicitly, "
        "e.g. --bundle_root path/to/bundles/" + (name or "<name>")
    )


#: ``python -m monai.bundle run`` arguments that are not config overrides (``monai.bundle.scripts.run``).
_RUN_ARGS = {"run_id", "init_id", "final_id", "meta_file", "config_file", "logging_file", "tracking", "args_file"}


def _override_keys(argv: Sequence[str]) -> list[str]:
    """The ``--key`` names of a ``python -m monai.bundle run ...`` command line (``--key value``/``--key=value``)."""
    keys = []
    for a in argv[1:]:
        if a.startswith("--") and len(a) > 2:
            keys.append(a[2:].split("=", 1)[0])
    return keys


_MISSING = object()


def _node(config: Any, path: Sequence[str]) -> Any:
    """The config entry at ``path`` (``["train", "handlers", "0"]``), or ``_MISSING``."""
    node = config
    for part in path:
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return _MISSING
    return node


def check_cli_overrides(argv: Sequence[str]) -> None:
    """Stop a ``python -m monai.bundle run`` whose command line sets a key the bundle config does not have.

    MONAI's runner applies every ``--key value`` as a config override, so ``--labelled_fraction 1/4`` or
    ``--max_epoch 1`` silently *adds* an unused key and the run goes on with the defaults (an hour of training on
    the wrong settings). The bundles call this from their ``initialize`` step: each override's path
    (``a#b#c``) must exist in the config files named on the command line; otherwise the error names the key and the
    closest real ones. Outside MONAI's bundle CLI (MONAI Label, the benchmark's own parsing) it does nothing.
    """
    import difflib

    from monai.bundle import ConfigParser

    argv = list(argv)
    if not cli_errors.running_monai_bundle_cli(argv):
        return
    files = _config_files_from_argv(argv)
    if not files:
        return
    try:
        config = ConfigParser.load_config_files(files)
    except Exception:  # noqa: BLE001 - MONAI reports unreadable config files itself
        return
    known = sorted(str(k) for k in config)
    for key in _override_keys(argv):
        if key in _RUN_ARGS or key.startswith("_meta_"):
            continue
        path = key.replace("::", "#").split("#")
        if _node(config, path) is not _MISSING:
            continue
        parent = _node(config, path[:-1]) if len(path) > 1 else _MISSING
        if isinstance(parent, Mapping) and "_target_" in parent:
            continue  # another argument of a component (train#checkpointer#n_saved): its constructor checks it
        if path[0] in config:  # a nested key: suggest among its siblings
            siblings = [str(k) for k in parent] if isinstance(parent, Mapping) else []
            close = difflib.get_close_matches(path[-1], siblings, n=3)
            hint = "; did you mean " + " or ".join("--" + "#".join(path[:-1] + [c]) for c in close) if close else ""
        else:
            close = difflib.get_close_matches(path[0], known, n=3)
            hint = "; did you mean " + " or ".join(f"--{c}" for c in close) if close else ""
        raise BundleConfigError(
            f"--{key}: the bundle config ({', '.join(files)}) has no key {key!r}, so MONAI would add it unused and "
            f"run with the default{hint}? The keys users set are listed in docs/reference/bundle-keys.md, "
            "'Overridable keys'."
        )

