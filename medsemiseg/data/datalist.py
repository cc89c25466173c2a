"""Reading a datalist JSON (``docs/architecture.md``, "Datalist JSON") and its splits.

Every reader of a datalist -- the bundles, the input-distribution record, the benchmark analysis, the walk-through --
goes through :func:`load_split`, so a truncated or hand-edited file is one :class:`DatalistError` naming the file, what
is wrong and the fix, never the bare ``JSONDecodeError`` or ``KeyError`` of the library underneath.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

__all__ = ["DatalistError", "read_datalist", "meta_and_sizes", "load_split"]


class DatalistError(ValueError):
    """A datalist cannot be used; the message names the file, what is wrong with it and the fix."""


def read_datalist(path: str | os.PathLike) -> dict:
    """The content of the datalist JSON at ``path``: a mapping of split names (and ``meta``) to lists."""
    path = Path(str(path))
    try:
        content = json.loads(path.read_text())
    except OSError as e:
        raise DatalistError(f"datalist {path} cannot be read ({e.strerror or e}); check the path.") from e
    except ValueError as e:
        raise DatalistError(
            f"datalist {path} is not valid JSON ({e}): a truncated or hand-edited file; fix it at that position "
            f"(python -m json.tool {path} shows it), or prepare the data set again (python -m medsemiseg.prepare)."
        ) from e
    if not isinstance(content, dict):
        raise DatalistError(f"datalist {path} must be a JSON object with 'labeled', 'unlabeled', ... lists.")
    return content


def meta_and_sizes(path: str | os.PathLike) -> tuple[dict, dict[str, int]]:
    """The datalist's ``meta`` mapping (empty when it has none) and the number of items in each split."""
    content = read_datalist(path)
    sizes = {k: len(v) for k, v in content.items() if isinstance(v, list)}
    meta = content.get("meta") if isinstance(content.get("meta"), dict) else {}
    return meta, sizes


def load_split(datalist: str | os.PathLike, key: str, allow_empty: bool = False) -> list[dict]:
    """Items of one split (``labeled``/``unlabeled``/``validation``/``test``) with absolute paths.

    Paths in the JSON are relative to its folder (MONAI ``load_decathlon_datalist`` resolves them). A missing or
    empty split raises an error naming the datalist and the split, unless ``allow_empty``.
    """
    from monai.data import load_decathlon_datalist

    path = Path(str(datalist))
    if not path.is_file():
        raise DatalistError(f"datalist {path} does not exist.")
    content = read_datalist(path)
    if key not in content or not content[key]:
        if allow_empty:
            return []
        have = {k: len(v) for k, v in content.items() if isinstance(v, list)}
        raise DatalistError(
            f"datalist {path} has no {key!r} items (splits present: {have}); re-prepare the data set with a "
            f"{key!r} split or point dataset_dir at another datalist."
        )
    try:
        return load_decathlon_datalist(str(path), is_segmentation=True, data_list_key=key, base_dir=str(path.parent))
    except (KeyError, TypeError, ValueError, AttributeError) as e:  # an item that is no {"image": ...} object
        raise DatalistError(
            f"datalist {path}: its {key!r} items cannot be read ({type(e).__name__}: {e}); each item must be an object "
            "with an 'image' path (and a 'label' path for labelled items), relative to the datalist's folder."
        ) from e
