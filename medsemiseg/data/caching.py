"""MONAI's ``CacheDataset`` that says how far its caching has got, in the run's log.

The bundles cache their training and validation slices before the first iteration (``CacheDataset``, as the
model-zoo bundles do). On a real data set that is minutes of silence after "loading configuration" (about 50 s for
1700 CT slices on a laptop CPU): MONAI's own progress bar is a ``tqdm`` bar, which is noise in a log file and off
in the bundles. :class:`ProgressCacheDataset` logs ``"caching <label>: k/N"`` about every tenth of the way and how
long it took, through the standard ``logging`` tree (logger ``medsemiseg.progress``, like the evaluators'
:class:`~medsemiseg.handlers.ProgressLogger`).

It also fills the cache so that a failure ends cleanly: MONAI's fill (a ``multiprocessing`` ``ThreadPool``) raises
the first item's error while the other caching threads go on loading, and one of them still inside a torch call
when the interpreter exits aborts the process ("terminate called without an active exception", exit code 134)
after the error message was printed. Here the items not started yet are cancelled and the running ones finished
before the error is raised.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from monai.data import CacheDataset
from monai.utils import optional_import

tqdm, has_tqdm = optional_import("tqdm", name="tqdm")

__all__ = ["ProgressCacheDataset"]

logger = logging.getLogger("medsemiseg.progress")


class ProgressCacheDataset(CacheDataset):
    """``CacheDataset`` (all its arguments) plus ``label``: what is being cached, the start of each log line.

    Args:
        label: e.g. ``"labelled training slices"``; the lines read ``"caching labelled training slices: 170/1682"``.
        parts: about how many lines per fill: one every ``ceil(N / parts)`` items when ``N > parts``, none in
            between otherwise; a first line (``N`` to load) and a last one (done, with the time) always.
        args, kwargs: ``monai.data.CacheDataset``'s.
    """

    def __init__(self, *args: Any, label: str = "items", parts: int = 10, **kwargs: Any) -> None:
        if int(parts) < 1:
            raise ValueError(f"ProgressCacheDataset(parts={parts!r}): must be >= 1.")
        self.label = str(label)
        self.parts = int(parts)
        self._lock: threading.Lock | None = None  # while filling: CacheDataset fills from a thread pool
        self._done = 0
        self._total = 0
        self._every = 1
        super().__init__(*args, **kwargs)

    def _fill_cache(self, indices: Any = None) -> list:
        total = self.cache_num if indices is None else len(indices)
        if total <= 0:
            return super()._fill_cache(indices)
        # about `parts` lines in between; none for a set of `parts` items or fewer (it is done before they'd help)
        every = -(-int(total) // self.parts) if total > self.parts else int(total)
        self._done, self._total, self._every = 0, int(total), every
        start = time.perf_counter()
        logger.info(f"caching {self.label}: {total} to load and preprocess")
        self._lock = threading.Lock()
        try:
            out = self._fill_in_threads(list(range(self.cache_num)) if indices is None else list(indices))
        finally:
            self._lock = None  # a lock cannot be pickled, and data loader workers get a pickled copy
        logger.info(f"caching {self.label}: done, {total} in {time.perf_counter() - start:.1f} s")
        return out

    def _fill_in_threads(self, indices: list) -> list:
        """``CacheDataset._fill_cache``'s items, in order, loaded by ``num_workers`` threads; on the first failure
        the items not started are cancelled and the running ones awaited, then the failure is raised (see the
        module docstring: a caching thread left running into interpreter exit aborts the process)."""
        workers = self.num_workers or os.cpu_count() or 1
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="caching") as pool:
            futures = [pool.submit(self._load_cache_item, i) for i in indices]
            waiting = tqdm(futures, desc="Loading dataset") if self.progress and has_tqdm else futures
            try:
                return [f.result() for f in waiting]
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise

    def _load_cache_item(self, idx: int) -> Any:
        item = super()._load_cache_item(idx)
        lock = self._lock
        if lock is None:  # not filling the cache (MONAI's runtime_cache loads items on first use)
            return item
        # count and log under one lock: with several caching threads, a count taken outside it could be logged
        # after a higher one (``3/25`` after ``6/25``)
        with lock:
            self._done += 1
            k = self._done
            if k % self._every == 0 and k != self._total:
                logger.info(f"caching {self.label}: {k}/{self._total}")
        return item
