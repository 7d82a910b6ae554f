"""One study, many workers: worker processes on this machine (processes), Ray actors on a cluster
(ray_actors), and the coordinator that watches them from the study and closes it (coordinator)."""

from pipeline.core.exports import exports

__getattr__, __dir__, __all__ = exports(__name__, {
    "processes": ["default_worker_count", "place_workers", "run_workers"],
    "ray_actors": ["run_on_ray"],
})
