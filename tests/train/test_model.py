"""The CNN builder over the whole space it can be asked for."""

from __future__ import annotations

import itertools

import pytest
import torch

from pipeline.core.errors import ArchitectureError
from pipeline.core.settings import ModelSpec, spatial_sizes
from pipeline.train.model import build_model, describe, parameter_count


def _grid():
    for depth, kernel, padding, convs, pool, bn, fc_layers in itertools.product(
        (1, 2, 3, 4), (3, 5, 7), ("same", "valid"), (1, 2), ("max", "avg"), (True, False),
        (0, 1, 2),
    ):
        yield dict(depth=depth, width=4, kernel_size=kernel, padding=padding,
                   convs_per_block=convs, pool=pool, batch_norm=bn, fc_width=16,
                   fc_layers=fc_layers, dropout=0.1, conv_dropout=0.1)


def test_every_point_of_the_grid_builds_or_is_refused_with_a_reason():
    built = refused = 0
    x = torch.rand(2, 1, 28, 28)
    for params in _grid():
        try:
            spec = ModelSpec(**params)
        except ArchitectureError as e:
            assert "shrinks to nothing" in str(e) and "use" in str(e)
            assert params["padding"] == "valid"  # 'same' never fails for depth <= 4
            refused += 1
            continue
        model = build_model(spec).eval()
        out = model(x)
        assert out.shape == (2, 10)
        assert parameter_count(model) > 0
        built += 1
    assert built > 300 and refused > 0


@pytest.mark.parametrize("params, parameters", [
    # Report B: conv 1→16 k5 p2 · conv 16→32 k5 p2 · fc 1568→10.
    (dict(depth=2, width=16, kernel_size=5, batch_norm=False, fc_layers=0),
     (16 * 25 + 16) + (32 * 16 * 25 + 32) + (1568 * 10 + 10)),
    # LeNet-5-like (report G, with widths 6/12): conv k5 p2, conv k5 valid is our 'valid' twice.
    (dict(depth=2, width=6, kernel_size=5, padding="valid", batch_norm=False, fc_width=120,
          fc_layers=2),
     (6 * 25 + 6) + (12 * 6 * 25 + 12) + (12 * 4 * 4 * 120 + 120) + (120 * 60 + 60)
     + (60 * 10 + 10)),
    # VGG-style (report E): [conv64 BN]x2 pool [conv128 BN]x2 pool fc 6272→256→128→10.
    (dict(depth=2, width=64, convs_per_block=2, batch_norm=True, fc_width=256, fc_layers=2,
          dropout=0.5),
     (64 * 9 + 128) + (64 * 64 * 9 + 128) + (128 * 64 * 9 + 256) + (128 * 128 * 9 + 256)
     + (6272 * 256 + 256) + (256 * 128 + 128) + (128 * 10 + 10)),
    # Residual (report F): conv 1→16 k5 valid · res(16) · conv 16→32 k5 valid · res(32) · fc
    # 512→10; each residual block is two 3x3 convs with biases (no batch norm).
    (dict(depth=2, width=16, kernel_size=5, padding="valid", batch_norm=False, residual=True,
          fc_layers=0),
     (16 * 25 + 16) + 2 * (16 * 16 * 9 + 16) + (32 * 16 * 25 + 32) + 2 * (32 * 32 * 9 + 32)
     + (512 * 10 + 10)),
    # MLP (report H): 784→300 BN→100 BN→10; batch norm replaces the dense layers' biases.
    (dict(depth=0, fc_width=300, fc_layers=2, fc_shrink=3, fc_batch_norm=True),
     (784 * 300 + 2 * 300) + (300 * 100 + 2 * 100) + (100 * 10 + 10)),
])
def test_seed_report_models_are_points_of_the_space(params, parameters):
    model = build_model(ModelSpec(**params))
    assert parameter_count(model) == parameters
    assert model(torch.rand(3, 1, 28, 28)).shape == (3, 10)


@pytest.mark.parametrize("params, message", [
    (dict(depth=5), "shrinks to nothing"),
    (dict(depth=3, kernel_size=7, padding="valid"), "use padding 'same'"),
    (dict(kernel_size=4), "must be odd"),
    (dict(pool="median"), "pool must be one of max, avg"),
    (dict(dropout=1.0), r"dropout must be in \[0, 1\)"),
    (dict(width=0), "width must be a whole number from 1 to 1,048,576, got 0"),
    (dict(fc_width=2, fc_layers=3), "cannot be shrunk by 2 into 3 hidden layers; use "
                                    "fc_width >= 4"),
    (dict(depth=0, residual=True), "residual blocks follow conv blocks"),
    (dict(fc_shrink=0), "fc_shrink must be a whole number from 1 to 16"),
    # A typo's billion layers is refused at once, not built (nor 2**(10**20) computed).
    (dict(fc_layers=10**20), "fc_layers must be a whole number from 0 to 16"),
    (dict(convs_per_block=10**9), "convs_per_block must be a whole number from 1 to 16"),
])
def test_impossible_combinations_are_refused_at_build_time(params, message):
    with pytest.raises(ArchitectureError, match=message):
        ModelSpec(**params)


def test_the_widest_head_that_can_be_halved_is_accepted():
    assert ModelSpec(fc_width=4, fc_layers=3).fc_layers == 3  # 4 -> 2 -> 1


def test_spatial_trace_and_description():
    spec = ModelSpec(depth=4)
    assert spatial_sizes(spec) == [28, 14, 7, 3, 1]
    assert describe(ModelSpec(depth=2, width=16, fc_layers=0)) == (
        "conv16k3 → maxpool → conv32k3 → maxpool → 10")
    assert describe(ModelSpec(depth=1, width=8, residual=True, fc_width=32)) == (
        "conv8k3 → maxpool → res8 → fc32 → 10")
    assert describe(ModelSpec(depth=0, fc_width=300, fc_layers=2, fc_shrink=3,
                              fc_batch_norm=True)) == "fc300bn → fc100bn → 10"


def test_seeded_builds_are_identical_and_leave_global_state_alone():
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    a = build_model(ModelSpec(), seed=7)
    b = build_model(ModelSpec(), seed=7)
    assert torch.equal(torch.random.get_rng_state(), before)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)


class _Fixed(torch.nn.Module):
    """A stand-in member that answers the same logits for every image."""

    def __init__(self, logits: list[float]) -> None:
        super().__init__()
        self.logits = torch.tensor([logits])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(len(x), -1)


def test_an_ensembles_softmax_is_the_mean_of_its_members_probabilities_and_stays_finite():
    from pipeline.train.model import Ensemble

    sure_of_0 = [200.0] + [-200.0] * 9  # every other class underflows to probability 0
    sure_of_1 = [-200.0, 200.0] + [-200.0] * 8
    x = torch.zeros(3, 1, 28, 28)
    scores = Ensemble([_Fixed(sure_of_0), _Fixed(sure_of_1)])(x)
    assert torch.isfinite(scores).all()
    expected = (torch.softmax(torch.tensor(sure_of_0), 0)
                + torch.softmax(torch.tensor(sure_of_1), 0)) / 2
    assert torch.allclose(torch.softmax(scores, dim=1), expected.expand(3, -1))


def test_an_architecture_names_one_network_or_every_member_and_builds_it_again():
    from pipeline.train.model import Ensemble, architecture_of, build_from_architecture

    one, two = ModelSpec(depth=1, width=4), ModelSpec(depth=2, width=8)
    assert build_from_architecture(architecture_of([one])).state_dict().keys() == \
        build_model(one).state_dict().keys()
    ensemble = build_from_architecture(architecture_of([one, two]))
    assert isinstance(ensemble, Ensemble) and len(ensemble.members) == 2
    assert parameter_count(ensemble) == parameter_count(build_model(one)) + parameter_count(
        build_model(two))
