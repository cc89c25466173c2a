"""A failing `python -m monai.bundle run` ends with the project's own message (naming the file or key and the fix),
not MONAI's evaluation wrapper nor the library error under it; the traceback only with MEDSEMISEG_DEBUG=1."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from medsemiseg import cli_errors
from medsemiseg.bundle.settings import BundleConfigError
from medsemiseg.data.io import DataReadError

REPO = Path(__file__).resolve().parents[1]


def _chained(*excs: BaseException) -> BaseException:
    """``excs[0]`` raised from ``excs[1]`` raised from ... (the last one is the root cause)."""
    inner = None
    for e in reversed(excs):
        try:
            if inner is None:
                raise e
            raise e from inner
        except BaseException as caught:  # noqa: BLE001
            inner = caught
    return inner


def test_last_line_is_the_outermost_project_message_not_the_library_root_cause():
    ours = BundleConfigError("datalist /d/x.json is not readable JSON (...): fix it or prepare the data again.")
    exc = _chained(RuntimeError("Failed to evaluate ConfigExpression: ..."), ours,
                   json.JSONDecodeError("Expecting property name", "{", 1))
    assert cli_errors.project_error(exc) is ours
    assert cli_errors.last_line(exc) == f"error: {ours}"
    # two project messages: the outer one (it has the context of the inner one)
    outer = DataReadError("/d/a.png", "is empty (0 bytes)")
    exc = _chained(RuntimeError("applying transform"), outer, BundleConfigError("inner"), OSError("eof"))
    assert cli_errors.last_line(exc) == "error: /d/a.png: is empty (0 bytes)"


def test_without_a_project_message_the_root_cause_ends_on_one_line():
    exc = _chained(RuntimeError("Failed to evaluate ConfigExpression: ..."),
                   ValueError("unknown method 'foo';\nvalid names: supervised, ..."))
    assert cli_errors.project_error(exc) is None
    assert cli_errors.last_line(exc) == "error: ValueError: unknown method 'foo'; valid names: supervised, ..."
    long = cli_errors.last_line(RuntimeError("x" * 5000))
    assert len(long) < 700 and long.endswith(" ...")
    assert cli_errors.last_line(EOFError()) == "error: EOFError: (no message)"


def test_report_says_where_and_how_to_get_the_traceback():
    try:
        raise BundleConfigError("--seed 'abc': must be a whole number >= 0, e.g. --seed 0.")
    except BundleConfigError as e:
        hint, last = cli_errors.report(e, "training")
    assert hint.startswith("training failed in tests/test_cli_errors.py:")
    assert "(test_report_says_where_and_how_to_get_the_traceback)" in hint and "MEDSEMISEG_DEBUG=1" in hint
    assert last == "error: --seed 'abc': must be a whole number >= 0, e.g. --seed 0."


def test_debug_switch_spellings(monkeypatch):
    for value, on in (("1", True), ("true", True), ("yes", True), ("0", False), ("", False), ("off", False)):
        monkeypatch.setenv(cli_errors.DEBUG_ENV, value)
        assert cli_errors.debug_enabled() is on


def test_installed_only_under_the_monai_bundle_cli():
    assert cli_errors.running_monai_bundle_cli(["/x/site-packages/monai/bundle/__main__.py", "run"])
    assert not cli_errors.running_monai_bundle_cli(["/usr/bin/pytest"])
    assert not getattr(sys.excepthook, cli_errors._MARK, False)  # importing the package here changed nothing
    assert not getattr(logging.getLogRecordFactory(), cli_errors._MARK, False)


def _bundle_cli(*args: str, debug: bool = False, out: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    env.pop(cli_errors.DEBUG_ENV, None)
    if debug:
        env[cli_errors.DEBUG_ENV] = "1"
    return subprocess.run(
        [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", "bundles/covid/train.json",
         "--output_dir", str(out), *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )


@pytest.mark.integration
def test_bundle_cli_failure_is_two_lines_and_the_traceback_comes_with_the_debug_switch(tmp_path):
    proc = _bundle_cli("--method", "foo", out=tmp_path)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr + proc.stdout
    hint, last = proc.stderr.strip().splitlines()[-2:]
    assert hint.startswith("training failed in medsemiseg/methods/registry.py:"), proc.stderr[-2000:]
    assert last.startswith("error: ValueError: unknown method 'foo'; valid names:"), proc.stderr[-2000:]

    proc = _bundle_cli("--method", "foo", debug=True, out=tmp_path)
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr  # the full traceback, as Python prints it
    assert proc.stderr.strip().splitlines()[-1] == last
