"""The checkpointed random state's CUDA part, exercised without a GPU (torch.cuda calls replaced by recorders)."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
import torch

from medsemiseg.random_state import RandomState


def _cuda_record(monkeypatch, devices: int) -> list:
    calls: list = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: devices)
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device="cuda": calls.append((device, state.clone())))
    monkeypatch.setattr(torch.cuda, "set_rng_state_all",
                        lambda states: calls.extend(enumerate(s.clone() for s in states)))
    return calls


@pytest.mark.parametrize("saved_devices, devices", [(2, 1), (1, 2), (2, 2)])
def test_cuda_generators_are_restored_for_the_devices_both_runs_have(monkeypatch, caplog, saved_devices, devices):
    record = RandomState(SimpleNamespace())
    state = record.state_dict()  # CPU-only here: no "cuda" entry of its own
    saved = [torch.full((16,), i, dtype=torch.uint8) for i in range(saved_devices)]
    state["cuda"] = saved
    calls = _cuda_record(monkeypatch, devices)
    with caplog.at_level(logging.WARNING, logger="medsemiseg.random_state"):
        record.load_state_dict(state)
    n = min(saved_devices, devices)
    assert [int(d) for d, _ in calls] == list(range(n))
    assert all(torch.equal(s, saved[int(d)]) for d, s in calls)
    assert ("CUDA device(s)" in caplog.text) == (saved_devices != devices)


def test_cuda_random_state_on_a_machine_without_cuda_is_reported(monkeypatch, caplog):
    record = RandomState(SimpleNamespace())
    state = record.state_dict()
    state["cuda"] = [torch.zeros(16, dtype=torch.uint8)]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with caplog.at_level(logging.WARNING, logger="medsemiseg.random_state"):
        record.load_state_dict(state)
    assert "sees no CUDA device" in caplog.text
