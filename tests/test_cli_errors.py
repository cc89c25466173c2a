"""A failing `python -m monai.bundle run` ends with the root cause of the error, not MONAI's evaluation wrapper."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from medsemiseg import cli_errors

REPO = Path(__file__).resolve().parents[1]


def _wrapped() -> RuntimeError:
    try:
        try:
            raise ValueError("unknown method 'foo'; valid names: supervised, ...")
        except ValueError as e:
            raise RuntimeError("Failed to evaluate ConfigExpression: ...") from e
    except RuntimeError as outer:
        return outer


def test_summary_line_is_the_root_cause_of_the_chain():
    outer = _wrapped()
    assert isinstance(cli_errors.root_cause(outer), ValueError)
    assert cli_errors.summary_line(outer) == "error: ValueError: unknown method 'foo'; valid names: supervised, ..."
    assert cli_errors.summary_line(ValueError("alone")) is None  # Python's last line already says it


def test_installed_only_under_the_monai_bundle_cli():
    assert cli_errors.running_monai_bundle_cli(["/x/site-packages/monai/bundle/__main__.py", "run"])
    assert not cli_errors.running_monai_bundle_cli(["/usr/bin/pytest"])
    assert not getattr(sys.excepthook, cli_errors._MARK, False)  # importing the package here changed nothing


def test_bundle_cli_failure_ends_with_the_clear_message(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    proc = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", "bundles/covid/train.json",
         "--method", "foo", "--output_dir", str(tmp_path)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr  # the full traceback is kept
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ValueError: unknown method 'foo'; valid names:"), proc.stderr[-2000:]
