"""Write each bundle's ``configs/train.json`` from the shared workflow template and the bundle's own task keys.

Both bundles run the same workflow (training, validation, evaluation, inference, the checks around them); they
differ only in their *task keys*, the top-level keys whose value in the template is :data:`TASK_KEY` (``task``,
``default_classes``, ``in_channels``, ``image_size``, ``patch_size``, ``intensity``, ``write_png``). So:

- the shared workflow is written once, in ``bundles/workflow.template.json``;
- each task key keeps its value in its bundle's own ``bundles/<task>/configs/train.json`` (edit it there);
- this script writes every bundle's ``train.json`` as the template with that bundle's task keys filled in, so each
  bundle folder stays complete and self-contained (MONAI Label loads one folder; ``evaluate.json`` and
  ``inference.json`` are links to ``train.json``).

    python scripts/build_bundles.py           # rewrite the bundles' train.json after editing the template
    python scripts/build_bundles.py --check   # exit 1 naming each train.json that is out of date

``tests/test_bundles.py`` fails while a bundle's ``train.json`` differs from what this script writes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BUNDLES = REPO / "bundles"
TEMPLATE = BUNDLES / "workflow.template.json"
#: the template's value of a task key
TASK_KEY = "<task key: each bundle's own value>"
#: a line this wide or narrower holds a short list or mapping of plain values on one line
WIDTH = 120


def bundle_configs() -> list[Path]:
    """Every bundle's ``configs/train.json`` (a bundle folder is one with ``configs/metadata.json``)."""
    folders = [p for p in BUNDLES.iterdir() if (p / "configs" / "metadata.json").is_file()]
    return sorted(p / "configs" / "train.json" for p in folders)


def task_keys(template: dict) -> list[str]:
    return [k for k, v in template.items() if v == TASK_KEY]


def render(template: dict, config: dict, where: str) -> str:
    """The text of a bundle's ``train.json``: ``template`` with the task keys taken from ``config``."""
    missing = [k for k in task_keys(template) if k not in config]
    if missing:
        raise SystemExit(f"{where} lacks the task key(s) {missing}: add them there (see {TEMPLATE.name}).")
    filled = {k: config[k] if v == TASK_KEY else v for k, v in template.items()}
    return _format(filled) + "\n"


def _is_plain(value: Any) -> bool:
    return not isinstance(value, (dict, list))


def _format(value: Any, indent: int = 0, lead: int = 0) -> str:
    """JSON with four-space indentation; a short list or mapping of plain values (no ``_target_`` component) that
    fits in :data:`WIDTH` columns after ``lead`` characters stays on one line."""
    if isinstance(value, (dict, list)) and value:
        items = list(value.values()) if isinstance(value, dict) else value
        component = isinstance(value, dict) and "_target_" in value
        if not component and all(_is_plain(x) for x in items):
            one = json.dumps(value, ensure_ascii=False)
            if lead + len(one) + 1 <= WIDTH:
                return one
    pad, inner = " " * indent, " " * (indent + 4)
    if isinstance(value, dict) and value:
        lines = []
        for k, x in value.items():
            key = f"{inner}{json.dumps(k, ensure_ascii=False)}: "
            lines.append(key + _format(x, indent + 4, len(key)))
        return "{\n" + ",\n".join(lines) + "\n" + pad + "}"
    if isinstance(value, list) and value:
        return "[\n" + ",\n".join(inner + _format(x, indent + 4, len(inner)) for x in value) + "\n" + pad + "]"
    return json.dumps(value, ensure_ascii=False)


def out_of_date() -> dict[Path, str]:
    """``{train.json: its text as the template gives it}`` for every bundle whose file differs from that."""
    template = json.loads(TEMPLATE.read_text())
    stale = {}
    for path in bundle_configs():
        text = path.read_text()
        wanted = render(template, json.loads(text), str(path.relative_to(REPO)))
        if text != wanted:
            stale[path] = wanted
    return stale


def shared_keys_changed(path: Path) -> list[str]:
    """The top-level keys in which a bundle's ``train.json`` differs from the template outside its task keys
    (an edit that belongs in the template)."""
    template = json.loads(TEMPLATE.read_text())
    config = json.loads(path.read_text())
    keys = list(dict.fromkeys([*template, *config]))
    return [k for k in keys if template.get(k) != TASK_KEY and template.get(k) != config.get(k)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a train.json is out of date")
    args = parser.parse_args(argv)
    stale = out_of_date()
    for path, text in stale.items():
        shown = path.relative_to(REPO)
        if args.check:
            changed = shared_keys_changed(path)
            print(f"{shown} is out of date" + (f" (differs from {TEMPLATE.name} in {changed})" if changed else
                                                " (formatting)"), file=sys.stderr)
        else:
            path.write_text(text)
            print(f"wrote {shown}")
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
