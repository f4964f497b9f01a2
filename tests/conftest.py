"""Shared fixtures: every test runs with a temporary HOME and model cache, so nothing touches the real home."""

import pytest


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    home = tmp_path_factory.getbasetemp() / "home"
    home.mkdir(exist_ok=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("FLARETUNE_DATA_DIR", raising=False)
    monkeypatch.setenv("FLARETUNE_CACHE", str(tmp_path_factory.getbasetemp() / "flaretune-cache"))


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Two OpenMP threads on 2 shared, oversubscribed cores make each small op wait on a barrier
    (tests ran 3x slower); the tests check behaviour, not speed, so they run single-threaded."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
