import math

import pytest
import torch

from facegate.models.heads import CombinedMarginLoss, NonFiniteLossError, PartialFC

pytestmark = pytest.mark.unit


def test_arcface_target_logit_is_cos_theta_plus_m():
    head = CombinedMarginLoss(s=10.0, m2=0.5)
    cos = torch.tensor([[0.8, 0.1], [0.2, 0.3]])
    out = head(cos, torch.tensor([0, -1]))
    assert out[0, 0].item() == pytest.approx(10 * math.cos(math.acos(0.8) + 0.5), rel=1e-5)
    assert out[0, 1].item() == pytest.approx(1.0, rel=1e-5)  # non-target untouched (scaled)
    assert torch.allclose(out[1], torch.tensor([2.0, 3.0]))  # a row without target in this shard


def test_cosface_and_monotonic_beyond_pi():
    cosface = CombinedMarginLoss(s=1.0, m2=0.0, m3=0.4)
    assert cosface(torch.tensor([[0.5]]), torch.tensor([0])).item() == pytest.approx(0.1)
    arc = CombinedMarginLoss(s=1.0, m2=0.5)
    cos = torch.linspace(-1, 1, 401).view(-1, 1)
    target = arc(cos, torch.zeros(401, dtype=torch.long)).view(-1)
    assert torch.all(target[1:] >= target[:-1] - 1e-6)  # never rewards a larger angle


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_margin_loss_finite_and_differentiable_under_autocast(dtype):
    torch.manual_seed(0)
    head = PartialFC(16, 50, CombinedMarginLoss(64.0, 1.0, 0.5, 0.0))
    emb = torch.randn(32, 16, requires_grad=True)
    labels = torch.randint(0, 50, (32,))
    # Extreme cosines (exactly +-1) are where acos' derivative explodes.
    with torch.no_grad():
        head.weight[labels[:4]] = emb[:4].detach() * 3
        head.weight[labels[4:8]] = -emb[4:8].detach()
    with torch.autocast("cpu", dtype=dtype):
        loss = head(emb.to(dtype), labels)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(emb.grad).all()
    assert torch.isfinite(head.weight.grad).all()


def test_partial_fc_sampling_keeps_positives_and_trains_only_sampled_rows():
    torch.manual_seed(1)
    head = PartialFC(8, 1000, CombinedMarginLoss(), sample_rate=0.1)
    emb = torch.randn(16, 8)
    labels = torch.randint(0, 1000, (16,))
    index, remapped = head._sample(labels)
    assert index.numel() == 100
    assert torch.equal(index[remapped], labels)  # remapped labels point at the right centres
    head(emb, labels).backward()
    touched = head.weight.grad.abs().sum(1) > 0
    assert touched.sum().item() <= 100
    assert touched[labels].all()


def test_nan_loss_stops_with_a_clear_message():
    head = PartialFC(4, 3, CombinedMarginLoss())
    with pytest.raises(NonFiniteLossError, match="learning rate"):
        head(torch.tensor([[float("nan")] * 4]), torch.tensor([0]))


@pytest.mark.parametrize(("m1", "m2", "m3"), [(1.0, 0.5, 0.0), (2.0, 0.0, 0.0), (1.35, 0.25, 0.1), (1.0, 0.0, 0.4)])
def test_target_logit_continuous_and_decreasing_for_any_margin(m1, m2, m3):
    head = CombinedMarginLoss(s=1.0, m1=m1, m2=m2, m3=m3)
    cos = torch.cos(torch.linspace(0, math.pi, 2001)).view(-1, 1)
    target = head(cos, torch.zeros(2001, dtype=torch.long)).view(-1)
    steps = target[1:] - target[:-1]
    assert torch.all(steps <= 1e-6)
    assert steps.abs().max() < 0.01  # no jump
