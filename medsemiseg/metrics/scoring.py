"""Where an evaluation scored: the ``"scoring"`` section of ``eval/metrics.json``.

A score means little without the pixels it counted, the grid it counted them on and the annotation it compared
with: DRIVE is scored inside its field-of-view masks (the literature's protocol; the black surround would add a third
of easy background pixels), CHASE_DB1 has no masks, the prediction is scored at each image's own size or at the
network's input size, and CHASE_DB1 and DRIVE each have two annotators. :func:`scoring_record` states all three
from the bundle settings and the test split the evaluation reads.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medsemiseg.transforms.fov import fov_mode

__all__ = ["scoring_record"]

#: the annotation a data set's preparation takes as ground truth when its datalist does not name one
_REFERENCE = {
    "drive": "1st_manual (first observer; DRIVE's test/1st_manual)",
    "chase": "1stHO (first human observer)",
}


def _test_items(datalist: str | os.PathLike | None) -> tuple[dict, list[dict]]:
    try:
        data = json.loads(Path(str(datalist)).read_text())
    except (OSError, ValueError, TypeError):
        return {}, []
    meta = data.get("meta") if isinstance(data.get("meta"), dict) else {}
    items = [x for x in data.get("test", []) if isinstance(x, dict)]
    return meta, items


def scoring_record(datalist: str | os.PathLike | None, eval_fov: Any, eval_resolution: Any,
                   image_size: Sequence[int] | None = None) -> dict[str, Any]:
    """The ``"scoring"`` section of an evaluation report.

    Keys:

    - ``region``: ``"field of view"`` or ``"all pixels"``; ``fov``: the ``eval_fov`` mode, how many test items were
      scored inside their own FOV mask (``fov_masks``), inside one derived from the image (``fov_derived``, mode
      ``true``) and over every pixel (``all_pixels``), of ``test_items``;
    - ``resolution``: ``"original"`` (the prediction resized back to each test image's own size, its label as
      stored) or ``"network"`` (at ``image_size``, labels resized there by nearest neighbour), with ``image_size``;
    - ``reference``: the annotation scored against (the datalist's ``meta.observer``; for DRIVE and CHASE_DB1
      datalists without it, the annotator their preparation takes; else ``"label"``, the data set's one
      annotation), and ``second_observer_items``: how many test items also carry a second observer's mask (the
      report's ``second_observer`` section scores that observer against the reference the same way).
    """
    meta, items = _test_items(datalist)
    mode = fov_mode(eval_fov)
    with_mask = sum(1 for x in items if x.get("fov")) if mode != "false" else 0
    derived = len(items) - with_mask if mode == "true" else 0
    task = str(meta.get("task", "")).lower()
    reference = meta.get("observer") or _REFERENCE.get(task) or "label"
    resolution = str(eval_resolution).strip().lower()
    return {
        "region": "field of view" if with_mask or derived else "all pixels",
        "fov": {"mode": mode, "fov_masks": with_mask, "fov_derived": derived,
                "all_pixels": len(items) - with_mask - derived, "test_items": len(items)},
        "resolution": resolution,
        "image_size": None if image_size is None else [int(s) for s in image_size],
        "reference": str(reference),
        "second_observer_items": sum(1 for x in items if x.get("second_observer")),
    }
