import pytest
import torch


@pytest.fixture(autouse=True, scope='package')
def one_torch_thread():
    """The metrics run many small ops; on a shared 2-core machine OpenMP workers that spin on busy cores make them
    tens of times slower. One thread keeps these tests quick; the numbers do not depend on it."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def fresh_metric_warnings():
    """The metrics warn once per message and process; each test starts with none shown yet."""
    from mmfusion.metrics.common import reset_warnings
    reset_warnings()
    yield
    reset_warnings()
