"""The trainer: it learns, it is reproducible on CPU, it stops on divergence."""

from __future__ import annotations

import os

import pytest
import torch

from pipeline.core.errors import DeviceError, UsageError
from pipeline.core.settings import ModelSpec, TrainSettings
from pipeline.core.timings import Stopwatch
from pipeline.train.model import build_model
from pipeline.train.plan import choose_device, plan_execution
from pipeline.train.trainer import Hooks, NonFiniteLossError, Reporting, evaluate, fit

SMALL = ModelSpec(depth=2, width=8, fc_width=32)
# The trainer's tests run on the CPU; on a GPU machine PIPELINE_TEST_DEVICE=cuda runs them there.
DEVICE = os.environ.get("PIPELINE_TEST_DEVICE", "cpu")


def _settings(**overrides) -> TrainSettings:
    base = dict(epochs=2, batch_size=64, lr=5e-3, device=DEVICE, seed=0)
    return TrainSettings(**{**base, **overrides})


def test_it_learns_a_small_problem_and_reports_every_epoch(small_data):
    seen = []
    model = build_model(SMALL, seed=0)
    result = fit(model, small_data, _settings(rotation=10), Hooks(on_epoch_end=seen.append))
    assert [s.epoch for s in seen] == [1, 2]
    assert seen[1].train_loss < seen[0].train_loss
    assert result.final.val_accuracy > 0.85  # 2,000 images, 2 epochs
    assert all(s.images_per_second > 0 and s.seconds > 0 for s in seen)
    assert result.val_predictions.shape == (len(small_data.val),)
    # The returned predictions are the final model's.
    _, accuracy, predictions = evaluate(model, small_data.val, device=result.device,
                                        precision=result.precision,
                                        channels_last=result.channels_last)
    assert torch.equal(predictions, result.val_predictions)
    assert accuracy == pytest.approx(result.final.val_accuracy)


def test_reports_come_at_even_fractions_of_each_epoch_and_a_report_can_stop_training(
        small_data):
    reports, seen = [], []
    watch = Stopwatch()

    def stop_in_the_second_epoch(report):
        reports.append(report)
        if report.step == 6:
            raise StopIteration  # as a pruner's TrialPruned would

    with pytest.raises(StopIteration):
        fit(build_model(SMALL, seed=0), small_data, _settings(),
            Hooks(on_epoch_end=seen.append, on_report=stop_in_the_second_epoch),
            reporting=Reporting(per_epoch=4), watch=watch)
    assert [r.step for r in reports] == [1, 2, 3, 4, 5, 6]
    assert [r.epochs for r in reports] == [0.25, 0.5, 0.75, 1.0, 1.25, 1.5]
    # The epoch's own report is its end-of-epoch validation.
    assert reports[3].val_accuracy == seen[0].val_accuracy and len(seen) == 1
    assert reports[0].val_accuracy < reports[5].val_accuracy
    # A trial stopped part-way still has its training and validation time.
    assert watch.seconds["train"] > 0 and watch.seconds["evaluate"] > 0


def test_reports_inside_an_epoch_can_measure_a_sample_of_the_validation_images(small_data):
    """report_val_size: the reports inside an epoch rank trials on the first k validation
    images; every epoch's end (and so the trial's value) still measures all of them."""
    k = 7  # accuracies measured on 7 images are multiples of 1/7
    reports, seen = [], []
    fit(build_model(SMALL, seed=0), small_data, _settings(epochs=2),
        Hooks(on_epoch_end=seen.append, on_report=reports.append),
        reporting=Reporting(per_epoch=4, inside_val_size=k))
    inside = [r for r in reports if not r.epochs.is_integer()]
    ends = [r for r in reports if r.epochs.is_integer()]
    assert len(inside) == 6 and len(ends) == 2
    for r in inside:
        assert abs(r.val_accuracy * k - round(r.val_accuracy * k)) < 1e-6
    n = len(small_data.val.labels)
    assert [r.val_accuracy for r in ends] == [s.val_accuracy for s in seen]
    assert any(abs(r.val_accuracy * k - round(r.val_accuracy * k)) > 1e-6 for r in ends), (
        f"epoch ends should measure all {n} images")


@pytest.mark.parametrize("optimizer, schedule", [
    ("sgd", "onecycle"), ("adam", "cosine"), ("adamw", "constant"), ("rmsprop", "cosine")])
def test_every_optimizer_and_schedule_trains(small_data, optimizer, schedule):
    lr = {"sgd": 0.05, "rmsprop": 1e-3}.get(optimizer, 3e-3)
    result = fit(build_model(SMALL, seed=1), small_data,
                 _settings(epochs=1, optimizer=optimizer, schedule=schedule, lr=lr))
    assert result.final.val_accuracy > 0.5


def test_same_seed_same_history_on_cpu(small_data):
    def run(seed):
        # The CPU's kernels are deterministic; cuDNN's backward passes are not.
        history = fit(build_model(SMALL, seed=seed), small_data,
                      _settings(rotation=15, seed=seed, device="cpu")).history
        # Everything but the wall-clock figures must repeat exactly.
        return [(s.train_loss, s.train_accuracy, s.val_loss, s.val_accuracy, s.lr)
                for s in history]

    first = run(3)
    assert run(3) == first
    assert run(4) != first


def test_a_diverging_run_raises_non_finite_loss(small_data):
    # No batch norm and an absurd learning rate: the loss overflows within the first epoch.
    spec = ModelSpec(depth=1, width=4, batch_norm=False, fc_layers=0)
    with pytest.raises(NonFiniteLossError, match="non-finite in epoch 1"):
        fit(build_model(spec, seed=0), small_data,
            _settings(optimizer="sgd", lr=1e6, momentum=0.0, schedule="constant"))


def test_epoch_callback_can_stop_training(small_data):
    class Stop(Exception):
        pass

    def stop_after_first(stats):
        raise Stop

    with pytest.raises(Stop):
        fit(build_model(SMALL, seed=0), small_data, _settings(epochs=5),
            Hooks(on_epoch_end=stop_after_first))


@pytest.mark.parametrize("overrides, message", [
    (dict(optimizer="lamb"), "unknown optimizer 'lamb'"),
    (dict(lr=0), "lr must be > 0"),
    (dict(epochs=0), "epochs must be a whole number"),
    (dict(rotation=-1), "rotation must be in"),
    (dict(schedule="step"), "unknown schedule"),
])
def test_bad_settings_are_usage_errors(overrides, message):
    with pytest.raises(UsageError, match=message):
        _settings(**overrides)


def test_device_choice():
    assert choose_device("cpu").type == "cpu"
    assert choose_device("auto").type in ("cpu", "cuda", "mps")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="CUDA is not available"):
            choose_device("cuda")
    with pytest.raises(DeviceError, match="unknown device"):
        choose_device("tpu9")


CUDA = torch.device("cuda")


@pytest.mark.parametrize("overrides, graph", [
    ({}, True),  # adamw, the default
    (dict(optimizer="adam"), True),
    (dict(optimizer="rmsprop"), True),
    (dict(optimizer="sgd"), False),  # SGD reads its learning rate on the host
    (dict(cuda_graph="off"), False),
    (dict(compile=True), False),  # torch.compile makes its own graphs
])
def test_the_cuda_plan_captures_the_step_when_the_optimizer_allows(overrides, graph):
    model = build_model(SMALL)
    plan = plan_execution(model, TrainSettings(**overrides), device=CUDA)
    assert plan.cuda_graph is graph
    assert plan.channels_last  # tensor cores want NHWC
    assert plan.params()["used_cuda_graph"] is graph


def test_the_cpu_plan_never_uses_a_cuda_graph_and_uses_nhwc_from_16_channels():
    cpu = torch.device("cpu")
    assert not plan_execution(build_model(SMALL), TrainSettings(), device=cpu).cuda_graph
    assert not plan_execution(build_model(SMALL), TrainSettings(), device=cpu).channels_last
    wide = build_model(ModelSpec(width=16))
    assert plan_execution(wide, TrainSettings(), device=cpu).channels_last
    assert plan_execution(wide, TrainSettings(precision="fp32"), device=cpu).precision == "fp32"


@pytest.mark.parametrize("overrides, message", [
    (dict(cuda_graph="on", optimizer="sgd"), "cuda_graph on needs optimizer adam, adamw"),
    (dict(cuda_graph="on", compile=True), "do not go together"),
    (dict(cuda_graph="yes"), "cuda_graph must be auto, on or off"),
])
def test_impossible_cuda_graph_settings_are_refused(overrides, message):
    with pytest.raises(UsageError, match=message):
        TrainSettings(**overrides)


@pytest.mark.skipif(DEVICE == "cpu", reason="graph and eager agree: needs CUDA")
@pytest.mark.parametrize("optimizer", ["adamw", "rmsprop"])
def test_a_captured_step_trains_like_the_eager_one(small_data, optimizer):
    """On CUDA: the replayed graph learns as the eager loop does (not bit for bit: cuDNN)."""
    results = {}
    for graph in ("off", "on"):
        results[graph] = fit(build_model(SMALL, seed=0), small_data,
                             _settings(optimizer=optimizer, lr=3e-3, rotation=10,
                                       cuda_graph=graph))
    assert results["on"].plan.cuda_graph and not results["off"].plan.cuda_graph
    assert results["on"].final.val_accuracy > 0.85
    assert abs(results["on"].final.val_accuracy - results["off"].final.val_accuracy) < 0.03
    # The schedule reached the graph: the learning rate at the end is the one-cycle's last.
    assert results["on"].final.lr == pytest.approx(results["off"].final.lr, rel=1e-4)


def test_with_a_weight_average_the_network_kept_is_the_average_that_was_measured(small_data):
    """ema_decay: validation measures the average of the weights, and the network left after
    training is that average, not the last step's weights."""
    last = build_model(SMALL, seed=0)
    fit(last, small_data, _settings())
    averaged = build_model(SMALL, seed=0)
    result = fit(averaged, small_data, _settings(ema_decay=0.99))
    assert result.final.val_accuracy > 0.85
    _, accuracy, predictions = evaluate(averaged, small_data.val, device=result.device,
                                        precision=result.precision,
                                        channels_last=result.channels_last)
    assert accuracy == result.final.val_accuracy
    assert torch.equal(predictions, result.val_predictions)
    # The same steps ran (same seed): only what is kept differs.
    differences = [(a - b).abs().max().item() for a, b in
                   zip(averaged.state_dict().values(), last.state_dict().values(), strict=True)
                   if a.is_floating_point()]
    assert max(differences) > 1e-3


def test_the_weight_average_warms_up_its_decay():
    """The first update copies the weights; the n-th moves the average by 1 - min(decay,
    (1 + n) / (10 + n)), so early, untrained weights fade quickly."""
    from pipeline.train.trainer import WeightAverage

    net = torch.nn.Linear(1, 1, bias=False)
    average = WeightAverage(net, decay=0.999)
    for value, expected in [(1.0, 1.0), (2.0, 1.0 + (2.0 - 1.0) * (1 - 2 / 11)),
                            (0.0, None)]:
        with torch.no_grad():
            net.weight.fill_(value)
        before = average.module.weight.item()
        average.update()
        if expected is None:  # the third update: rate 3 / 12
            expected = before + (0.0 - before) * (1 - 3 / 12)
        assert average.module.weight.item() == pytest.approx(expected)
