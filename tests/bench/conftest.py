import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Two OpenMP threads on 2 shared, oversubscribed cores make each small op wait on a barrier
    (tests ran 3x slower); these tests check correctness, so they run single-threaded."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
