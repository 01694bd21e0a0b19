"""Every device-dependent choice of the training loop, on simulated GPUs (issue 21): a T4 (compute capability
7.5), an A100 (8.0) and an H100 (9.0). On a T4 `torch.cuda.is_bf16_supported()` answers True by emulation, while
bf16 convolutions have no cuDNN engine below 8.0: the loop must use fp16 with loss scaling there."""
import pytest
import torch

from clead_lite import training as T

GPUS = {"T4": ((7, 5), torch.float16), "A100": ((8, 0), torch.bfloat16), "H100": ((9, 0), torch.bfloat16)}


@pytest.fixture(params=sorted(GPUS))
def gpu(request, monkeypatch):
    capability, dtype = GPUS[request.param]
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)    # the emulation answer
    return request.param, dtype


def test_autocast_dtype_follows_the_compute_capability(gpu):
    name, dtype = gpu
    assert T.amp_dtype(torch.device("cuda"), None) is dtype, name
    assert T.amp_dtype(torch.device("cuda"), True) is dtype, name
    assert T.amp_dtype(torch.device("cuda"), False) is None


def test_cpu_uses_no_autocast_unless_asked():
    assert T.amp_dtype(torch.device("cpu"), None) is None
    assert T.amp_dtype(torch.device("cpu"), True) is torch.bfloat16


def test_fp16_gets_a_loss_scaler_and_the_attack_runs_inside_the_same_autocast(gpu, monkeypatch):
    """What TrainStep builds from the dtype (run on the CPU with the dtype the GPU would get): a GradScaler exactly
    for fp16, and the training attack under the step's autocast."""
    name, dtype = gpu
    monkeypatch.setattr(T, "amp_dtype", lambda device, amp: dtype)
    seen = []
    real_pgd = T.pgd
    monkeypatch.setattr(T, "pgd", lambda *a, **k: seen.append(torch.is_autocast_enabled("cpu")) or real_pgd(*a, **k))
    from clead_lite.models import SmallCNN
    model = SmallCNN(width=4, feature_dim=8)
    cfg = T.TrainConfig(method="pgd_at", eps=0.1, attack_steps=1, amp=True).resolved()
    step = T.TrainStep(model, cfg, torch.device("cpu"), total_steps=1)
    assert step.scaler.is_enabled() == (dtype is torch.float16), name
    if dtype is torch.bfloat16:       # the CPU runs bf16 autocast; fp16 convolutions are not available there
        step.attack(torch.rand(2, 1, 28, 28), torch.tensor([0, 1]))
        assert seen == [True]
