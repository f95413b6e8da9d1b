"""The sleep replay rule: causal potentiation, Fisher-protected depression, bounds."""

from __future__ import annotations

import math

import pytest
import torch

from neurosim.learning.sleep import SleepConfig, fisher_protection, sleep_update


def test_sleep_rule_potentiates_causal_and_depresses_the_rest_less_where_important() -> None:
    cfg = SleepConfig(inc=0.01, dec=0.004, window=5e-3, fisher_protection=3.0)
    pre_index = torch.tensor([0, 1, 2, 0])
    post_index = torch.tensor([0, 0, 0, 1])
    w = torch.full((4,), 0.5, dtype=torch.float64)
    last_pre = torch.tensor([[0.098, 0.05, -math.inf]], dtype=torch.float64)  # pre 0 fired 2 ms ago
    post = torch.tensor([[True, False]])  # only post 0 fired
    protection = fisher_protection(torch.tensor([0.0, 0.0, 2.0, 0.0], dtype=torch.float64), cfg.fisher_protection)
    assert protection is not None
    new = sleep_update(w, last_pre, post, 0.1, pre_index, post_index, protection, cfg, (0.0, 1.0))
    assert new[0] == pytest.approx(0.51)  # causal: + inc
    assert new[1] == pytest.approx(0.496)  # pre fired 50 ms ago: - dec
    assert new[2] == pytest.approx(0.5 - 0.004 / 4)  # important synapse (F = max): dec / (1 + 3)
    assert new[3] == 0.5  # its post neuron did not fire
    clipped = sleep_update(w, last_pre, post, 0.1, pre_index, post_index, protection, cfg, (0.0, 0.505))
    assert float(clipped.max()) == pytest.approx(0.505)


def test_invalid_sleep_config_is_refused() -> None:
    with pytest.raises(ValueError, match="downscale"):
        SleepConfig(downscale=1.5)
