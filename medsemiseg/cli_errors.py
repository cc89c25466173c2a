"""One clear last line for a failed command, and the traceback only when asked for (``MEDSEMISEG_DEBUG=1``).

A failure deep inside ``python -m monai.bundle run ...`` reaches the user wrapped several times: MONAI's runner wraps
every failing ``$`` expression in ``RuntimeError("Failed to evaluate ConfigExpression: ...")``, its transforms in
``RuntimeError("applying transform ...")``, and the project's own message -- "unknown method 'foo'; valid names
are ...", "<file>: is empty (0 bytes) ..." -- sits in the middle of that chain, 50 to 400 lines above the end. The
innermost exception is no better: it is often a library's ("Expecting property name", "unpack_from requires a
buffer of ...") that the project already explained one level up.

:func:`last_line` picks the message to end on: the *outermost project error* of the chain (an exception whose
class is defined in this package: :class:`~medsemiseg.bundle.settings.BundleConfigError`,
:class:`~medsemiseg.data.io.DataReadError`, :class:`~medsemiseg.engines.trainer.NonFiniteLossError`, ...), whose
message names the file or key and the fix; only when the chain holds none, its root cause.

:func:`install` replaces ``sys.excepthook`` so that a failure prints two lines -- where it was raised, and that
message -- instead of the traceback; with the environment variable ``MEDSEMISEG_DEBUG=1`` it prints the full
traceback as Python does, still followed by the same last line. While installed, errors *logged* with a traceback
(MONAI's ``StatsHandler`` logs ``Exception: ...`` with its traceback when an engine fails) keep their message
and lose the traceback unless ``MEDSEMISEG_DEBUG`` is set, so the failure is not printed twice at length.

A caller may show messages in its own terms: ``install(rewrite=...)`` passes the reported message, and the message
of every record logged by the package's loggers, through ``rewrite(message, origin)``, where ``origin`` is the
module that raised the exception (:func:`origin`) or the logger's name. The bundle CLI shows the engine's
arguments as its flags that way (:mod:`medsemiseg.bundle.flags`).

The bundle configs install it first thing in ``initialize`` (:func:`medsemiseg.bundle.cli.install_failure_report`),
which does so only when the process is MONAI's bundle CLI (``python -m monai.bundle``); importing the package changes
nothing.
``python -m medsemiseg.prepare`` reports its failures through :func:`report` in its own ``main``.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType

__all__ = [
    "DEBUG_ENV",
    "chain",
    "debug_enabled",
    "install",
    "is_project_error",
    "last_line",
    "origin",
    "project_error",
    "report",
    "root_cause",
    "running_monai_bundle_cli",
    "where",
]

#: the environment variable that brings the full traceback back
DEBUG_ENV = "MEDSEMISEG_DEBUG"

_MARK = "_medsemiseg_summary"
_PACKAGE = Path(__file__).resolve().parent
#: a library's message is cut here (MONAI's "cannot find a suitable reader" runs to 80+ lines); ours never are
_FOREIGN_LIMIT = 600

#: ``rewrite(message, origin) -> message``: a message in the caller's terms (see the module's docstring)
Rewrite = Callable[[str, str], str]


def debug_enabled() -> bool:
    """True when ``MEDSEMISEG_DEBUG`` is set to something other than ``0`` / ``false`` / ``no`` / ``off``."""
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no", "off")


def chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and the exceptions behind it, outermost first (explicit ``__cause__``, else implicit context)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)


def root_cause(exc: BaseException) -> BaseException:
    """The innermost exception of ``exc``'s chain."""
    *_, last = chain(exc)
    return last


def is_project_error(exc: BaseException) -> bool:
    """True for an exception whose class this package defines (its message names the file or key and the fix)."""
    return any(str(getattr(k, "__module__", "")).split(".")[0] == "medsemiseg" for k in type(exc).__mro__)


def project_error(exc: BaseException) -> BaseException | None:
    """The outermost project error of ``exc``'s chain, or ``None`` when the chain holds none."""
    return next((e for e in chain(exc) if is_project_error(e)), None)


def origin(exc: BaseException) -> str:
    """The module (``__name__``) of the frame that raised ``exc``, the innermost of its traceback; ``""`` when the
    exception was never raised."""
    tb = exc.__traceback__
    if tb is None:
        return ""
    while tb.tb_next is not None:
        tb = tb.tb_next
    return str(tb.tb_frame.f_globals.get("__name__", ""))


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _shown(exc: BaseException, rewrite: Rewrite | None) -> str:
    """``exc``'s message on one line, through ``rewrite`` when given."""
    text = _one_line(str(exc))
    return rewrite(text, origin(exc)) if rewrite is not None and text else text


#: library failures whose message names neither the cause nor the fix: (pattern in any message of the chain, hint)
_HINTS = (
    (re.compile(r"DataLoader worker \(pid\(?s?\)? [\d, ]+\) (is killed by signal|exited unexpectedly)"),
     "a data-loading worker process was killed (most often by the system's out-of-memory killer: see `dmesg`); pass "
     "--num_workers 0 (or fewer workers, or a smaller --batch_size) and continue with --resume true"),
)


def _hint(exc: BaseException) -> str | None:
    for e in chain(exc):
        for pattern, hint in _HINTS:
            if pattern.search(str(e)):
                return hint
    return None


def last_line(exc: BaseException, rewrite: Rewrite | None = None) -> str:
    """``"error: <message>"`` of the outermost project error; else ``"error: <Type>: <message>"`` of the root cause
    (a library's message on one line, cut at a few hundred characters), followed by the fix for the library failures
    that name none (:data:`_HINTS`: a killed DataLoader worker). The message goes through ``rewrite`` when given."""
    ours = project_error(exc)
    if ours is not None:
        return f"error: {_shown(ours, rewrite) or type(ours).__name__}"
    cause = root_cause(exc)
    message = _shown(cause, rewrite) or "(no message)"
    if len(message) > _FOREIGN_LIMIT:
        message = message[:_FOREIGN_LIMIT] + " ..."
    hint = _hint(exc)
    return f"error: {type(cause).__name__}: {message}" + (f" -- {hint}." if hint else "")


def where(exc: BaseException) -> str | None:
    """``"medsemiseg/bundle/datalists.py:112 (resolve_datalist)"``: the frame that raised the exception :func:`last_line`
    reports (the innermost frame of its traceback), a path inside the package relative to its parent folder."""
    chosen = project_error(exc) or root_cause(exc)
    frames = traceback.extract_tb(chosen.__traceback__)
    if not frames:
        return None
    frame = frames[-1]
    path = Path(frame.filename)
    try:
        shown = str(path.resolve().relative_to(_PACKAGE.parent))
    except (ValueError, OSError):
        shown = path.name
    return f"{shown}:{frame.lineno} ({frame.name})"


def report(exc: BaseException, what: str = "the command", rewrite: Rewrite | None = None) -> list[str]:
    """The short form of a failure: a line saying where it was raised and how to see the traceback, then
    :func:`last_line` (its message through ``rewrite`` when given)."""
    at = where(exc)
    hint = f"{what} failed" + (f" in {at}" if at else "") + f"; {DEBUG_ENV}=1 prints the full traceback."
    return [hint, last_line(exc, rewrite)]


def running_monai_bundle_cli(argv: list[str] | None = None) -> bool:
    argv = sys.argv if argv is None else argv
    first = (argv[0] if argv else "").replace("\\", "/")
    return first.endswith("monai/bundle/__main__.py")


def _bundle_command(argv: list[str]) -> str:
    """``"training"`` for ``python -m monai.bundle run training ...`` (the run id), else ``"the bundle command"``."""
    args = [a for a in argv[1:] if not a.startswith("-")]
    if len(args) >= 2 and args[0] == "run":
        return args[1]
    return "the bundle command"


def _strip_logged_tracebacks(rewrite: Rewrite | None = None) -> None:
    """Records logged with an exception keep their message; their traceback is dropped (unless debugging). With
    ``rewrite``, the message of a record logged by one of the package's loggers goes through it.

    MONAI's ``StatsHandler`` logs every engine failure with ``logger.exception`` before re-raising it, which printed
    the whole traceback a first time, before the excepthook's report. A record factory is the one place that sees
    the records of every logger, including those created after this call.
    """
    previous = logging.getLogRecordFactory()
    if getattr(previous, _MARK, False):
        return

    def factory(*args, **kwargs) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        if rewrite is not None and record.name.startswith("medsemiseg."):
            try:
                text = record.getMessage()
            except Exception:  # noqa: BLE001 - a malformed record: logging reports it when it is emitted
                text = None
            if text is not None:
                shown = rewrite(text, record.name)
                if shown != text:
                    record.msg, record.args = shown, None
        if record.exc_info and not debug_enabled():
            record.exc_info = None
            record.exc_text = None
        return record

    setattr(factory, _MARK, True)
    logging.setLogRecordFactory(factory)


def install(rewrite: Rewrite | None = None) -> None:
    """Replace ``sys.excepthook`` (once): the short :func:`report` of a failure, or, with ``MEDSEMISEG_DEBUG=1``,
    Python's full traceback followed by :func:`last_line`; and drop tracebacks from logged errors
    (:func:`_strip_logged_tracebacks`). ``rewrite(message, origin)`` shows the reported message and the package's
    logged messages in the caller's terms. The process still exits with status 1."""
    previous = sys.excepthook
    if getattr(previous, _MARK, False):
        return

    def hook(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        if not isinstance(exc, Exception):  # KeyboardInterrupt and the like: as Python shows them
            previous(exc_type, exc, tb)
            return
        if debug_enabled():
            previous(exc_type, exc, tb)
            print(f"\n{last_line(exc, rewrite)}", file=sys.stderr)
            return
        print("\n".join(report(exc, _bundle_command(sys.argv), rewrite)), file=sys.stderr)

    setattr(hook, _MARK, True)
    sys.excepthook = hook
    _strip_logged_tracebacks(rewrite)
