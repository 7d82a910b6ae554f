"""The documentation: a README that stays short and points at the site, a site that builds with
`mkdocs build --strict`, reference pages generated from the code, and every command, option and
search-space key the pages show still real."""

from __future__ import annotations

import dataclasses
import functools
import http.server
import re
import shlex
import subprocess
import sys
import threading
from pathlib import Path

import click
import pytest
import yaml
from helpers import chromium, keep_screenshot

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.rglob("*.md"))
FENCE = re.compile(r"^```([a-z]*)\n(.*?)^```", re.M | re.S)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The site, built as the docs say: `mkdocs build --strict` (a warning fails it)."""
    folder = tmp_path_factory.mktemp("site")
    built = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir",
                            str(folder)], cwd=ROOT, capture_output=True, text=True,
                           env={**_plain_env(), "NO_MKDOCS_2_WARNING": "1"})
    assert built.returncode == 0, built.stderr
    return folder


def _plain_env() -> dict:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_")}


def _page(site: Path, name: str) -> str:
    return (site / name / "index.html").read_text()


def test_the_readme_is_short_keeps_its_quickstart_and_links_every_page():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.encode()) <= 8 * 1024
    for marker in ("main-command", "test-command"):  # .ci/run and the tests read these
        assert f"<!-- {marker} -->\n```\n" in readme
    linked = set(re.findall(r"\]\((docs/[^)#]+\.md)\)", readme))
    pages = {str(p.relative_to(ROOT)) for p in PAGES if p.name != "index.md"}  # the README's twin
    assert linked == pages, f"not linked: {pages - linked}; missing: {linked - pages}"


def test_the_readme_picture_is_there_and_decodes():
    from PIL import Image

    readme = (ROOT / "README.md").read_text()
    pictures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", readme)
    assert pictures
    for picture in pictures:
        with Image.open(ROOT / picture) as image:
            image.load()
            assert min(image.size) >= 400


def test_the_site_builds_strictly_with_every_page_in_its_navigation(site):
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())

    def listed(nav) -> set[str]:
        found = set()
        for entry in nav:
            value = next(iter(entry.values()))
            found |= listed(value) if isinstance(value, list) else {value}
        return found

    assert listed(config["nav"]) == {str(p.relative_to(DOCS)) for p in PAGES
                                     if "hooks" not in p.parts}
    index = (site / "index.html").read_text()
    assert "<!-- generated:" not in "".join(p.read_text() for p in site.rglob("*.html"))
    # Nothing fetched from elsewhere: no web fonts, scripts or styles off the site.
    assert not re.findall(r'<(?:link|script)[^>]+(?:href|src)="https?://', index)


def _commands(group: click.Group = None, prefix: tuple = ()):
    from pipeline.cli import cli

    group = group or cli
    for name, command in group.commands.items():
        yield (*prefix, name), command
        if isinstance(command, click.Group):
            yield from _commands(command, (*prefix, name))


def test_the_command_reference_names_every_command_and_option(site):
    page = _page(site, "reference/cli")
    for path, command in _commands():
        assert f"pipeline {' '.join(path)}" in page, path
        for parameter in command.params:
            for flag in parameter.opts:
                if flag.startswith("--"):
                    assert flag in page, (path, flag)


def test_the_space_key_reference_lists_every_key_the_parser_takes(site):
    from pipeline.core.hparams import ALL_FIELDS
    from pipeline.study.space import PARAM_KEYS, PRUNERS, SAMPLER_DEFAULTS, SECTIONS

    page = _page(site, "reference/space-keys")
    for key, f in ALL_FIELDS.items():
        assert f"<code>{key}</code>" in page or f"<code>data.{key}</code>" in page, key
        bounds = f.metadata.get("bounds")
        if bounds is not None:
            assert str(bounds).replace("&", "&amp;").replace(">", "&gt;") in page, key
    for key in (*SECTIONS, *PARAM_KEYS, *(f"study.sampler.{k}" for k in SAMPLER_DEFAULTS)):
        assert f"<code>{key}</code>" in page, key
    for kind, (defaults, _) in PRUNERS.items():
        assert f"<code>{kind}</code>" in page
        for key in defaults:
            assert f"<code>{key}</code>" in page, (kind, key)


def test_the_environment_and_outcome_tables_come_from_the_code(site):
    from pipeline.core.env import LIBRARY_DEFAULTS, VARIABLES
    from pipeline.core.outcomes import TRIAL_OUTCOMES

    environment = _page(site, "reference/environment")
    for name in [v.name for v in VARIABLES] + [d.name for d in LIBRARY_DEFAULTS]:
        assert f"<code>{name}</code>" in environment, name
    outcomes = _page(site, "mlflow")
    for outcome in TRIAL_OUTCOMES:
        assert f"<code>{outcome.name}</code>" in outcomes, outcome.name


def _blocks(kinds: tuple[str, ...]) -> list[tuple[Path, str]]:
    found = []
    for page in [ROOT / "README.md", *PAGES]:
        for kind, body in FENCE.findall(page.read_text()):
            if kind in kinds:
                found.append((page, body))
    return found


def _shown_commands() -> list[tuple[Path, list[str]]]:
    """Every `pipeline ...` command line the README and the pages show in a code block or a code
    span, as words (the prompt, an environment's path, comments and pipes left out)."""
    lines = []
    for page in [ROOT / "README.md", *PAGES]:
        text = page.read_text()
        candidates = []
        for kind, body in FENCE.findall(text):
            if kind in ("", "bash", "sh"):  # where a block shows a prompt, its output is not run
                prompted = [line for line in body.splitlines() if line.startswith("$ ")]
                candidates += prompted or body.splitlines()
        candidates += re.findall(r"(?<!`)`((?:\.venv/bin/)?pipeline [^`]+)`", text)
        for line in candidates:
            for part in re.split(r"&&|\||;", line.split(" # ")[0].split("#!", 1)[0]):
                try:
                    words = shlex.split(part.strip().removeprefix("$ "))
                except ValueError:  # an apostrophe in a comment: words are enough
                    words = part.strip().removeprefix("$ ").split()
                if words and words[0] in ("pipeline", ".venv/bin/pipeline"):
                    lines.append((page, words[1:]))
    return lines


def test_every_command_the_docs_show_exists_with_its_options():
    from pipeline.cli import cli

    shown = _shown_commands()
    assert len(shown) > 40  # the pages show many; a parser that finds none proves nothing
    for page, words in shown:
        command, rest = cli, list(words)
        while isinstance(command, click.Group) and rest and not rest[0].startswith("-"):
            name = rest.pop(0)
            if name in ("COMMAND", "...") or name.isupper():
                break
            assert name in command.commands, f"{page.name}: pipeline {' '.join(words)}"
            command = command.commands[name]
        flags = {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)}
        flags |= {"--help", "-h", "--version"}
        for word in rest:
            flag = word.strip("[]").split("=", 1)[0]  # `[--port 5000]`: an optional option
            if flag.startswith("-") and not flag.startswith("---") and flag != "-":
                assert flag in flags, f"{page.name}: `pipeline {' '.join(words)}`: {flag}"


def test_every_search_space_the_docs_show_is_accepted_and_every_dotted_key_is_real():
    from pipeline.study.space import SECTIONS, parse_space

    spaces = 0
    for page, body in _blocks(("yaml",)):
        document = yaml.safe_load(body)
        if isinstance(document, dict) and set(document) <= set(SECTIONS) and "params" in document:
            parse_space(document, Path(f"{page.name}.yaml"))  # raises on a key that is gone
            spaces += 1
    assert spaces >= 1
    known = _dotted_keys()
    for page in [ROOT / "README.md", *PAGES]:
        for key in re.findall(r"`((?:study|data)\.[a-z_.]+)`", page.read_text()):
            assert key in known, f"{page.name}: `{key}` is no key of a space"


def _dotted_keys() -> set[str]:
    from pipeline.core.settings import DataSettings
    from pipeline.study.space import PRUNERS, SAMPLER_DEFAULTS

    keys = {"study.metric", "study.sampler", "study.pruner", "study.pruner.reports_per_epoch",
            "study.pruner.report_val_size"}
    keys |= {f"study.sampler.{k}" for k in SAMPLER_DEFAULTS}
    keys |= {f"study.pruner.{k}" for defaults, _ in PRUNERS.values() for k in defaults}
    keys |= {"study.pruner.type"} | {f"data.{f.name}" for f in dataclasses.fields(DataSettings)}
    return keys


def test_every_bound_the_reference_shows_is_the_bound_the_settings_check():
    """The values column of the key reference comes from each key's bounds: a value at each
    closed end is accepted, one just past either end refused, as the settings check it."""
    from pipeline.core.errors import UsageError
    from pipeline.core.hparams import ALL_FIELDS, make_config

    checked = 0
    for key, f in ALL_FIELDS.items():
        bounds = f.metadata.get("bounds")
        if bounds is None or bounds.high_text:
            continue
        step = 1 if bounds.whole else 1e-9
        inside = [bounds.low + (step if bounds.low_open else 0)]
        outside = [bounds.low - (0 if bounds.low_open else step)]
        if bounds.high is not None:
            inside.append(bounds.high - (step if bounds.high_open else 0))
            outside.append(bounds.high + (0 if bounds.high_open else step))
        for value in inside:
            value = int(value) if bounds.whole else value
            if _valid_alone(key, value):
                make_config(_with(key, value))
        for value in outside:
            value = int(value) if bounds.whole else value
            with pytest.raises(UsageError, match=re.escape(key)):
                make_config(_with(key, value))
        checked += 1
    assert checked >= 15


def _with(key: str, value) -> dict:
    """A configuration valid but for ``key`` (one block: shallow enough for any kernel; no
    hidden dense layer when it has no units; dense layers that do not shrink when many)."""
    companions = {"fc_width": {"fc_layers": 0}, "fc_layers": {"fc_shrink": 1}}
    return {"depth": 1, key: value, **companions.get(key, {})}


def _valid_alone(key: str, value) -> bool:
    """Whether ``value`` can make a network on its own (an even kernel or a depth of 16 makes
    none, for reasons of their own)."""
    return not (key == "depth" and value > 4) and not (key == "kernel_size" and value > 27)


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def served_site(site):
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_Quiet, directory=str(site)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_the_built_site_reads_in_a_browser(served_site, browser_available, tmp_path):
    """The start page and the searching page in headless Chromium: navigation, the report's
    picture drawn, the pages' own headings; screenshots kept (PIPELINE_TEST_ARTIFACTS)."""
    browser = chromium()
    try:
        browser.get(served_site + "/")
        assert browser.title.startswith("pipeline")
        drawn = browser.execute_script(
            "return [...document.images].filter(i => i.complete && i.naturalWidth > 400)"
            ".map(i => i.getAttribute('src'))")
        assert "report_page.png" in drawn
        nav = browser.execute_script(
            "return [...document.querySelectorAll('nav.md-nav--primary a.md-nav__link')]"
            ".map(a => a.textContent.trim())")
        for title in ("Getting started", "Searching", "Faults and recovery", "Commands"):
            assert title in nav, nav
        keep_screenshot(browser, tmp_path / "docs_start_page.png")
        browser.get(served_site + "/searching/")
        heading = browser.execute_script("return document.querySelector('h1').textContent")
        assert heading.startswith("Searching")
        assert browser.execute_script("return document.querySelectorAll('table').length") >= 1
        keep_screenshot(browser, tmp_path / "docs_searching_page.png")
    finally:
        browser.quit()
