"""Shared pytest configuration.

``python -m pytest -q`` (the README's test command) runs the unit tests: ``pyproject.toml``'s ``addopts`` deselect
the tests marked ``@pytest.mark.integration`` (end-to-end bundle and CLI runs, seconds to minutes each), which
``python -m pytest -q -m integration`` runs and ``.ci/run`` runs after the unit tests (docs/testing.md). A ``-m``
given on the command line replaces the default one (``-m ""`` runs everything). Long-running tests carry
``@pytest.mark.slow`` and run only with ``--runslow``; GPU tests carry ``@pytest.mark.gpu`` and are skipped when no
CUDA device is present.
"""

from __future__ import annotations

import os

import pytest

# Two CPU cores on the reference machine: keep torch from oversubscribing them in every test process.
os.environ.setdefault("OMP_NUM_THREADS", "2")


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="also run tests marked slow")


def pytest_collection_modifyitems(config, items):
    run_slow = config.getoption("--runslow")
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except Exception:  # pragma: no cover - torch is a hard dependency, but never fail collection on it
        has_cuda = False
    skip_slow = pytest.mark.skip(reason="slow test: run with --runslow")
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "slow" in item.keywords and not run_slow:
            item.add_marker(skip_slow)
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(skip_gpu)


@pytest.fixture(autouse=True)
def _seed_everything():
    """Every test starts from the same RNG state, so a failure reproduces."""
    import numpy as np
    import torch

    torch.manual_seed(0)
    np.random.seed(0)
    yield


@pytest.fixture
def one_thread():
    """Tiny networks run fastest on one thread; on a shared 2-core machine two threads mostly spin-wait.

    Test modules of tiny networks opt in with ``pytestmark = pytest.mark.usefixtures("one_thread")``.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
