"""One request to every worker: the search's SearchRequest reaches a worker process of this machine
and a Ray actor as the same JSON text, and every field of it arrives, even one added later."""

from __future__ import annotations

import dataclasses
import textwrap

import pytest

from pipeline.scale import processes, ray_actors
from pipeline.scale.processes import Placement
from pipeline.scale.worker import request_for_node
from pipeline.search.request import SearchRequest
from pipeline.study.space import load_space

SPACE = textwrap.dedent("""\
    description: 2026-12-01
    study: {metric: val_loss, sampler: {seed: 7}}
    data: {val_size: 500, train_subset: 2000}
    fixed: {epochs: 2, depth: 1}
    presets:
      setup:
        plain: {optimizer: sgd, momentum: 0.0}
        adaptive: {optimizer: adamw}
    params:
      setup: {type: categorical, choices: [plain, adaptive]}
      width: {type: categorical, choices: [4, 8]}
      lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
""")


@pytest.fixture
def request_(tmp_path) -> SearchRequest:
    """A request with no field at its default."""
    (tmp_path / "odd.yaml").write_text(SPACE)
    return SearchRequest(
        space=load_space(tmp_path / "odd.yaml"), trials=7, study_name="s",
        storage_url="postgresql://u:pw@db/optuna", tracking_uri="http://mlflow:5000", seed=3,
        device="cuda:1", timeout=12.5, force=True, data_dir=tmp_path / "data",
        report_dir=tmp_path / "reports", report=False, heartbeat_interval=4, grace_period=9,
        workers=3, threads=2, quiet=True, outage_timeout=90.0,
        warm_start="yesterday", warm_start_top=5)


def test_no_field_of_the_example_is_at_its_default(request_):
    for field in dataclasses.fields(SearchRequest):
        if field.default is not dataclasses.MISSING:
            assert getattr(request_, field.name) != field.default, field.name


def test_every_field_comes_back_from_the_json_a_worker_gets(request_):
    back = SearchRequest.from_json(request_.to_json())
    assert back == request_
    assert back.space.fingerprint == request_.space.fingerprint
    # What JSON could not hold (YAML read the description as a date) comes back as it was.
    assert back.space.source == request_.space.source


def test_a_field_added_to_the_request_arrives_without_being_listed_anywhere(request_):
    extended = dataclasses.make_dataclass(
        "Extended", [("added", int, dataclasses.field(default=0))], bases=(SearchRequest,),
        frozen=True)
    sent = extended(**{f.name: getattr(request_, f.name)
                       for f in dataclasses.fields(request_)}, added=42)
    assert extended.from_json(sent.to_json()).added == 42


def test_worker_processes_and_ray_actors_get_the_same_request(request_, monkeypatch):
    places = [Placement("cpu", 1), Placement("cuda:0", 4)]
    texts = processes.worker_requests(request_, places)
    for text, place in zip(texts, places, strict=True):
        assert request_for_node(text) == dataclasses.replace(
            request_, device=place.device, threads=place.threads, quiet=True)

    class Actor:
        sent: list[str] = []

        class run:  # noqa: N801 - stands for Ray's actor method handle
            @staticmethod
            def remote(text):
                Actor.sent.append(text)

    ray_actors.RayWorkers(ray=None, actors=[Actor(), Actor()], req=request_)
    assert len(Actor.sent) == 2
    assert all(SearchRequest.from_json(t) == request_ for t in Actor.sent)


def test_a_node_that_names_the_stores_otherwise_uses_its_names(request_, monkeypatch):
    monkeypatch.setenv("PIPELINE_NODE_STORAGE", "postgresql://u:pw@postgres:5432/optuna")
    monkeypatch.setenv("PIPELINE_NODE_TRACKING_URI", "http://mlflow-inside:5000")
    got = request_for_node(request_.to_json())
    assert got.storage_url == "postgresql://u:pw@postgres:5432/optuna"
    assert got.tracking_uri == "http://mlflow-inside:5000"
    assert dataclasses.replace(got, storage_url=request_.storage_url,
                               tracking_uri=request_.tracking_uri) == request_

