"""What a trained network costs to run: size, FLOPs and one-thread CPU speed, measured on a copy
that leaves the network and the process as they were."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pipeline.core.hparams import make_config
from pipeline.train.cost import measure_cost
from pipeline.train.model import build_model, parameter_count


def test_a_linear_reader_costs_its_known_flops_and_parameters():
    net = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 10))
    cost = measure_cost(net)
    assert cost.params == 28 * 28 * 10 + 10
    assert cost.flops_per_image == 2 * 28 * 28 * 10  # one multiply and one add per weight
    assert cost.latency_ms > 0 and cost.images_per_second > 0


@pytest.fixture
def two_threads():
    """torch on two threads for the test; the process's own count again after it (the count is
    the whole process's, and every later test of this process would run on two)."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_a_wider_network_costs_more_and_the_measurement_changes_nothing(two_threads):
    small, wide = (build_model(make_config({"width": w}).model, seed=0).train()
                   for w in (8, 32))
    before = {k: v.clone() for k, v in small.state_dict().items()}
    small_cost, wide_cost = measure_cost(small), measure_cost(wide)
    assert small_cost.params == parameter_count(small) < wide_cost.params
    assert small_cost.flops_per_image < wide_cost.flops_per_image
    assert small.training  # still in training mode, on its device, with its weights
    assert all(torch.equal(before[k], v) for k, v in small.state_dict().items())
    assert torch.get_num_threads() == 2  # one thread for the measurement only
    assert list(small_cost.metrics()) == ["cost_params", "cost_flops_per_image",
                                          "cost_latency_ms", "cost_images_per_second"]
    assert small_cost.attribute()["params"] == small_cost.params
