"""A last line that says what went wrong, for errors raised inside ``python -m monai.bundle run ...``.

MONAI's bundle runner evaluates the config's ``$`` expressions and wraps every failure in ``RuntimeError("Failed to
evaluate ConfigExpression: ...")``; the traceback then ends with that wrapper, and our own message -- "unknown
method 'foo'; valid names are ...", "dataset_dir ... does not exist: give a prepared data set folder ..." -- sits
40 to 80 lines further up. :func:`install` keeps the full traceback exactly as Python prints it and adds one line
after it: the root cause of the chain (``__cause__`` / ``__context__``), so the fix is the last thing on screen.

It is installed only when the process is MONAI's bundle CLI (``python -m monai.bundle``), the moment a bundle
config first imports :mod:`medsemiseg.bundle_utils`; importing the package anywhere else changes nothing.
"""

from __future__ import annotations

import sys
from types import TracebackType

__all__ = ["root_cause", "summary_line", "install", "running_monai_bundle_cli"]

_MARK = "_medsemiseg_summary"


def root_cause(exc: BaseException) -> BaseException:
    """The innermost exception of ``exc``'s chain (explicit causes first, then implicit context)."""
    seen = {id(exc)}
    while True:
        nxt = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
        if nxt is None or id(nxt) in seen:
            return exc
        seen.add(id(nxt))
        exc = nxt


def summary_line(exc: BaseException) -> str | None:
    """``"error: <Type>: <message>"`` of the root cause, or ``None`` when the root cause is ``exc`` itself."""
    cause = root_cause(exc)
    if cause is exc:
        return None  # Python's own last line already is the root cause
    message = str(cause).strip() or "(no message)"
    return f"error: {type(cause).__name__}: {message}"


def running_monai_bundle_cli(argv: list[str] | None = None) -> bool:
    argv = sys.argv if argv is None else argv
    first = (argv[0] if argv else "").replace("\\", "/")
    return first.endswith("monai/bundle/__main__.py")


def install() -> None:
    """Wrap ``sys.excepthook`` (once): print as before, then the root-cause line."""
    previous = sys.excepthook
    if getattr(previous, _MARK, False):
        return

    def hook(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        previous(exc_type, exc, tb)
        line = summary_line(exc)
        if line:
            print(f"\n{line}", file=sys.stderr)

    setattr(hook, _MARK, True)
    sys.excepthook = hook
