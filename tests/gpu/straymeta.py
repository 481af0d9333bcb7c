"""Diagnostic pytest plugin: every test runs with ``torch.device("meta")`` as the default device.

    PYTHONPATH=tests/gpu pytest -p straymeta tests/test_x.py

A tensor a test (or the harness) makes without ``device=`` lands on meta and fails the first
operation that mixes it with the problem's CPU tensors: the mistakes a ``--device cuda``
run would hit, found without a GPU. Expect false alarms from tests that build their own
problem entirely from such tensors (it is then all on meta, and ``.item()``/``.numpy()``
fail; on CUDA it would all be on the CPU and pass), so read each failure; not part of the
default suite. docs/gpu.md says what it found.
"""

import pytest
import torch


@pytest.fixture(autouse=True)
def _stray_tensors_on_meta():
    with torch.device("meta"):
        yield
