"""ProgressCacheDataset: MONAI's CacheDataset, same items, plus "caching <label>: k/N" lines in the log."""

from __future__ import annotations

import logging

import pytest
from monai.data import CacheDataset
from monai.transforms import Lambdad

from medsemiseg.data import ProgressCacheDataset


@pytest.mark.parametrize("workers", [1, 3])
def test_caching_logs_about_every_tenth_and_the_total_and_caches_what_monai_caches(caplog, workers):
    data = [{"x": i} for i in range(25)]
    double = Lambdad("x", lambda v: 2 * v)
    with caplog.at_level(logging.INFO, logger="medsemiseg.progress"):
        ds = ProgressCacheDataset(data, double, label="training slices", num_workers=workers, progress=False)
    lines = [r.getMessage() for r in caplog.records if r.name == "medsemiseg.progress"]
    assert lines[0] == "caching training slices: 25 to load and preprocess"
    assert lines[-1].startswith("caching training slices: done, 25 in ")
    steps = lines[1:-1]  # every ceil(25 / 10) = 3 items; the 25th is the "done" line
    assert steps == [f"caching training slices: {k}/25" for k in range(3, 25, 3)]
    assert [ds[i] for i in range(len(ds))] == [CacheDataset(data, double, progress=False)[i] for i in range(25)]



def test_caching_progress_lines_stay_in_order_with_threads(caplog):
    """With several caching threads a count must be logged before any higher one. A count taken under the lock
    but logged after it came out of order only under load at Python's 5 ms thread switch interval (2 of 5 runs
    of the test above on a loaded machine, 0 of 300 fills on a quiet one); switching every microsecond, it was
    out of order in 53 of 200 fills, so 20 fills find such a race with near certainty."""
    import sys

    data = [{"x": i} for i in range(25)]
    double = Lambdad("x", lambda v: 2 * v)
    expected = [f"caching slices: {k}/25" for k in range(3, 25, 3)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for _ in range(20):
            caplog.clear()
            with caplog.at_level(logging.INFO, logger="medsemiseg.progress"):
                ProgressCacheDataset(data, double, label="slices", num_workers=3, progress=False)
            lines = [r.getMessage() for r in caplog.records if r.name == "medsemiseg.progress"]
            assert lines[1:-1] == expected
    finally:
        sys.setswitchinterval(interval)

def test_caching_a_handful_logs_only_the_first_and_the_last_line(caplog):
    with caplog.at_level(logging.INFO, logger="medsemiseg.progress"):
        ProgressCacheDataset([{"x": i} for i in range(10)], label="validation set", progress=False)
    lines = [r.getMessage() for r in caplog.records if r.name == "medsemiseg.progress"]
    assert len(lines) == 2 and lines[0] == "caching validation set: 10 to load and preprocess", lines


def test_caching_nothing_logs_nothing(caplog):
    with caplog.at_level(logging.INFO, logger="medsemiseg.progress"):
        ds = ProgressCacheDataset([], label="unlabelled slices", progress=False)
    assert len(ds) == 0 and not [r for r in caplog.records if r.name == "medsemiseg.progress"]
    with pytest.raises(ValueError, match="parts"):
        ProgressCacheDataset([{"x": 1}], parts=0)


def test_a_filled_cache_pickles_for_worker_processes():
    import pickle

    ds = ProgressCacheDataset([{"x": i} for i in range(4)], progress=False)
    again = pickle.loads(pickle.dumps(ds))
    assert [again[i] for i in range(4)] == [ds[i] for i in range(4)]


_FAILING_FILL = """
import torch
from monai.transforms import Lambda
from medsemiseg.data import ProgressCacheDataset

def load(item):
    if item["x"] == 0:
        raise FileNotFoundError("item 0: no such file")
    t = torch.ones(256, 256)
    for _ in range(2000):  # torch calls, which release the GIL, for a while
        t = torch.as_tensor(t.numpy()) + 1
    return item

ProgressCacheDataset([{"x": i} for i in range(8)], Lambda(load), num_workers=2, progress=False)
"""


@pytest.mark.integration
def test_a_failed_fill_exits_with_its_error_not_an_abort():
    """A fill whose first item fails must end the process as a Python error (exit 1), not SIGABRT: MONAI's
    thread pool left the other caching threads loading, and one inside a torch call while the interpreter
    exited aborted it ("terminate called without an active exception", exit 134; 5 of 5 runs of this script
    before the fix)."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    proc = subprocess.run([sys.executable, "-c", _FAILING_FILL], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-2000:])
    assert "terminate called" not in proc.stderr
    assert proc.stderr.rstrip().splitlines()[-1].startswith("RuntimeError: applying transform")
    assert "FileNotFoundError: item 0: no such file" in proc.stderr
