"""Fixtures shared by the core, command-line and GUI tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def one_torch_thread():
    """Run torch on one CPU thread: a tiny network is fastest so, and a core stays free.

    On 2 cores the event loop (GUI tests) and other work keep the second one.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
