"""Fixed split lists and patient groups for ``prepare folder``: the protocol medical SSL papers publish.

- A *split list* (``--labeled-list``, ``--unlabeled-list``, ``--val-list``, ``--test-list``) is a text file of
  names, one per line, as SSL4MIS (``train_slices.list``, ``val.list``, ``test.list``) and UniMatch
  (``labeled.txt``, ``unlabeled.txt``) ship them. The first word of a line names an input: a path relative to the
  folder prepared or to the list's own folder, else a file name whose extension may be left out
  (``patient001_frame01_slice_0`` is ``slices/patient001_frame01_slice_0.h5``). Empty lines and lines starting with
  ``#`` are skipped. A name matching no input, several inputs, or named by two lists is an error naming the list,
  the line and the fix.
- ``--group-by REGEX`` gives each input its *group* (its patient): the regex's first capture group, or its whole
  match, searched in the file name. Random hold-outs and the labelled pick then move whole groups, and a group in
  two of training, validation and test is refused (:func:`check_leakage`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..io import DataReadError, file_stem, is_supported_file, list_dicom_files
from .core import PrepareNote, _warn

__all__ = [
    "LIST_OPTIONS",
    "GroupRule",
    "check_leakage",
    "drop_held_out",
    "find_inputs",
    "natural_key",
    "resolve_lists",
    "split_fractions",
    "volumes_of_test",
]

#: the role of each list and the option that gives it
LIST_OPTIONS = {
    "labeled": "--labeled-list",
    "unlabeled": "--unlabeled-list",
    "validation": "--val-list",
    "test": "--test-list",
}
_MASK_DIRS = {"labels", "masks"}
_EXTENSIONS = (".nii.gz", ".nii", ".h5", ".hdf5", ".hdf", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".gif", ".bmp",
               ".dcm", ".dicom", ".ima")


def natural_key(text: str) -> list:
    """Sort key ordering embedded numbers by value: ``slice_2`` before ``slice_10``."""
    return [(0, int(t), "") if t.isdigit() else (1, 0, t.lower()) for t in re.split(r"(\d+)", text) if t]


def dangling_link(path: Path) -> bool:
    """True, with a warning naming it and its target, for a symbolic link whose target does not exist (a moved
    data set, an unmounted disk): the caller passes over it, but not silently."""
    if not (path.is_symlink() and not path.exists()):
        return False
    _warn(f"{path} is a symbolic link to {os.readlink(path)}, which does not exist: skipped. Fix or remove the link "
          "if that file belongs to the data set.")
    return True


def find_inputs(root: Path, is_mask_name) -> list[Path]:
    """Every input under ``root`` at any depth, in natural order: supported files whose name is not a mask's, and
    folders holding a DICOM series (as one input, not entered). Hidden entries and ``labels/`` / ``masks/`` folders
    (where masks are looked up by name) are passed over; a dangling symbolic link is passed over with a warning
    naming it."""
    found: list[Path] = []
    for q in sorted(root.iterdir(), key=lambda p: natural_key(p.name)):
        if q.name.startswith("."):
            continue
        if dangling_link(q):
            continue
        if q.is_dir():
            if q.name.lower() in _MASK_DIRS:
                continue
            if list_dicom_files(q):
                found.append(q)
            else:
                found.extend(find_inputs(q, is_mask_name))
        elif is_supported_file(q) and not is_mask_name(q):
            found.append(q)
    return found


def _entry_name(token: str) -> str:
    """The input name a list entry gives: its file name without directories and without a known extension."""
    name = token.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
    low = name.lower()
    for ext in _EXTENSIONS:
        if low.endswith(ext):
            return name[: -len(ext)]
    return name


def _read_list(path: Path, option: str) -> list[tuple[int, str]]:
    """``(line number, first word)`` of each entry of a split list."""
    try:
        text = path.read_text()
    except OSError as e:
        raise DataReadError(path, f"({option}) cannot be read ({e.strerror or e}); check the path.") from e
    entries = []
    for n, line in enumerate(text.splitlines(), 1):
        words = line.split()
        if words and not words[0].startswith("#"):
            entries.append((n, words[0]))
    if not entries:
        raise DataReadError(path, f"({option}) names no input: give one name per line (e.g. patient001_frame01).")
    return entries


def resolve_lists(lists: Mapping[str, str | os.PathLike | None], inputs: Sequence[Path], src: Path) -> dict[Path, str]:
    """``{input: role}`` for every input the given lists name (``lists``: role -> list file, ``None`` when not
    given); see the module docstring for the matching rule."""
    by_name: dict[str, list[Path]] = {}
    for p in inputs:
        by_name.setdefault(file_stem(p), []).append(p)
    resolved = {p.resolve(): p for p in inputs}
    roles: dict[Path, str] = {}
    where: dict[Path, str] = {}
    for role, file in lists.items():
        if file is None:
            continue
        path, option = Path(file), LIST_OPTIONS[role]
        missing: list[str] = []
        for n, token in _read_list(path, option):
            hit = next((resolved[c.resolve()] for c in (src / token, path.parent / token)
                        if c.exists() and c.resolve() in resolved), None)
            if hit is None:
                matches = by_name.get(_entry_name(token), [])
                if len(matches) > 1:
                    raise DataReadError(
                        path, f"({option}) line {n}: {token!r} matches several inputs "
                        f"({', '.join(map(str, matches))}); name it by its path relative to the folder, or rename one."
                    )
                if not matches:
                    missing.append(f"{token!r} (line {n})")
                    continue
                hit = matches[0]
            if hit in roles:
                raise DataReadError(
                    path, f"({option}) line {n}: {token!r} ({hit}) is named by {where[hit]} too; an input has one "
                    "role and is used once: remove it from one of the lines."
                )
            roles[hit], where[hit] = role, f"{path} line {n}"
        if missing:
            shown = ", ".join(missing[:5]) + (f", ... ({len(missing)} in all)" if len(missing) > 5 else "")
            raise DataReadError(
                path, f"({option}) names {len(missing)} input(s) found nowhere under {src}: {shown}. A name is a path "
                "relative to that folder or to the list, or a file name (its extension may be left out); check the "
                "folder given, or the list."
            )
    return roles


class GroupRule:
    """``--group-by REGEX``: the group of an input is the regex's first capture group (or whole match) in its name;
    without a regex, the input's own name (a volume's slices share it). ``--volume-by`` names volumes the same way
    (``option``)."""

    def __init__(self, pattern: str | None, option: str = "--group-by") -> None:
        self.pattern, self.option = pattern, option
        self.what = "group (patient)" if option == "--group-by" else "volume"
        try:
            self.regex = re.compile(pattern) if pattern else None
        except re.error as e:
            raise ValueError(
                f"{option} '{pattern}' is no regular expression ({e}); e.g. {option} 'patient\\d+'."
            ) from None

    def __call__(self, path: Path, required: bool = True) -> str:
        name = file_stem(path)
        if self.regex is None:
            return name
        m = self.regex.search(path.name)
        if m is None:
            if not required:
                return f"unlabeled:{name}"
            raise DataReadError(
                path, f"its name does not match {self.option} '{self.pattern}', so its {self.what} is unknown; "
                "choose a regex every labelled input's name matches (e.g. 'patient\\d+'), or rename the file."
            )
        return m.group(1) if self.regex.groups else m.group(0)


def check_leakage(splits: Mapping[str, Iterable[dict]], rule: GroupRule) -> None:
    """Refuse a group (patient) found in two of ``splits`` (``{"training": items, "validation": ..., "test": ...}``):
    a model scored on a patient it trained on; the error names the group, an input of each side and the fix."""
    owner: dict[str, tuple[str, str]] = {}
    for split, items in splits.items():
        for it in items:
            g = it["group"]
            if g in owner and owner[g][0] != split:
                other, source = owner[g]
                raise ValueError(
                    f"group {g!r} (--group-by '{rule.pattern}') is in the {other} split ({source}) and in the {split} "
                    f"split ({it.get('source', it['image'])}): one patient in two splits leaks what is scored into "
                    "training. Fix the split lists so that each patient is in one of them, or choose a --group-by that "
                    "names the patient."
                )
            owner.setdefault(g, (split, it.get("source", it["image"])))


def split_fractions(lists: Mapping[str, Any], labeled_fraction: Any, val_fraction: Any, test_fraction: Any) -> tuple:
    """The fractions a run uses: a labelled list is the labelled set as it stands (``full``, no random hold-out from
    it unless asked); a fixed validation / test list replaces its fraction, and giving both is an error."""
    fixed = lists.get("labeled") is not None
    for role, value, option in (("validation", val_fraction, "--val-fraction"), ("test", test_fraction,
                                                                                 "--test-fraction")):
        if lists.get(role) is not None and value is not None:
            raise ValueError(f"{LIST_OPTIONS[role]} fixes the {role} split and {option} {value} draws it at random: "
                             f"give one of them.")
    return (
        ("full" if fixed else "1/8") if labeled_fraction is None else labeled_fraction,
        (0.0 if fixed or lists.get("validation") is not None else 0.1) if val_fraction is None else val_fraction,
        0.0 if test_fraction is None else test_fraction,
    )


def volumes_of_test(test: list[dict], info: dict[str, dict], sizes: Mapping[str, tuple], rule: GroupRule,
                    where: str) -> dict[str, dict]:
    """Name each test item's volume for per-volume scoring: the 3D input it was cut from (``volume``, ``slice``
    set when written), else the name ``rule`` (``--volume-by``, by default ``--group-by``) gives its file, its
    slices in natural order of their file names. Returns ``meta.volumes``: ``{volume: {"slices", "spacing" (mm, or
    None), "source"}}`` of the test volumes."""
    if rule.regex is not None:
        by_name: dict[str, list[dict]] = {}
        for it in test:
            if "volume" not in it:
                by_name.setdefault(rule(Path(it["source"])), []).append(it)
        if rule.option == "--volume-by" and test and not by_name:
            _warn(f"{where}--volume-by '{rule.pattern}' names no volume: every test item is a slice of a 3D input "
                  "(NIfTI, DICOM series, HDF5 volume), which is its volume already; leave --volume-by out.")
        for g, items in by_name.items():
            if len({sizes[it["image"]] for it in items}) > 1:
                _warn(f"{where}the test slices of {g!r} (--volume-by '{rule.pattern}') differ in size, so they are no "
                      "volume; per-volume scores leave them out (a --volume-by naming one scan makes them one).")
                continue
            name = g if g not in info else f"{g}_slices"
            for k, it in enumerate(sorted(items, key=lambda it: natural_key(Path(it["source"]).name))):
                it.update(volume=name, slice=k)
            info[name] = {"slices": len(items), "spacing": None, "source": f"--volume-by {rule.pattern}"}
    used = {it["volume"] for it in test if "volume" in it}
    return {v: {**info[v], "slices": sum(it.get("volume") == v for it in test)} for v in sorted(used, key=natural_key)}


def drop_held_out(extra: list[dict], held: list[dict], where: str) -> list[dict]:
    """Unlabelled images of a patient held out for validation / test are left out of training (they would show the
    network the patient it is scored on); a note counts them."""
    groups = {it["group"] for it in held}
    kept = [it for it in extra if it["group"] not in groups]
    if len(kept) < len(extra):
        _warn(f"{where}{len(extra) - len(kept)} unlabelled item(s) belong to a group held out for validation or test "
              "and were left out of training.", PrepareNote)
    return kept
