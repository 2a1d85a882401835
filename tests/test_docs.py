"""The documentation: the site builds with no warning, the README's links resolve, and every
Python example in the README and the guides runs as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import torchcallbacks

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

# Pages whose ```python blocks are run, each page's blocks in order in one namespace.
RUN_EXAMPLES = [
    "README.md",
    "docs/index.md",
    "docs/getting_started.md",
    "docs/common_mistakes.md",
    "docs/performance.md",
    "docs/tracking.md",
    *sorted(str(p.relative_to(ROOT)) for p in (DOCS / "callbacks").glob("*.md")),
]


def test_site_builds_strict(tmp_path):
    site = tmp_path / "site"
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)]
    # The API reference documents this checkout, whatever copy of the package is installed.
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=240, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    for page in [
        "index.html",
        "getting_started/index.html",
        "callbacks/early_stopping/index.html",
        "callbacks/backup_and_restore/index.html",
        "checkpoints/index.html",
        "distributed/index.html",
        "performance/index.html",
        "bring_your_own_model/index.html",
        "migrating_from_keras/index.html",
        "migrating_from_lightning/index.html",
        "examples/index.html",
    ]:
        assert (site / page).is_file(), page
    api = (site / "api" / "callbacks" / "index.html").read_text()
    assert 'id="torchcallbacks.EarlyStopping"' in api  # rendered from the docstrings
    assert "has stopped improving" in api
    assert "<p>Example:</p>" in api and "::</p>" not in api  # docs/scripts/mkdocs_hooks.py
    assert (site / "assets" / "history_plot.png").stat().st_size > 10_000
    resume = (site / "examples" / "index.html").read_text()
    assert "SimulatedCrash" in resume  # the examples' sources are included in the site


def test_every_public_name_has_an_api_entry():
    reference = "\n".join(p.read_text() for p in (DOCS / "api").glob("*.md"))
    documented = set(re.findall(r"^::: torchcallbacks\.(\w+)$", reference, re.MULTILINE))
    missing = set(torchcallbacks.__all__) - documented - {"__version__"}
    assert not missing, f"add '::: torchcallbacks.NAME' lines to docs/api/ for {missing}"


def _links(markdown: str) -> list[str]:
    """Targets of inline Markdown links and images, outside code blocks and code spans."""
    text = re.sub(r"```.*?```", "", markdown, flags=re.DOTALL)
    text = re.sub(r"`[^`\n]*`", "", text)
    return re.findall(r"\]\(([^)\s]+)\)", text)


def _anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors (and MkDocs' explicit ``{#id}`` ones)."""
    text = re.sub(r"```.*?```", "", markdown, flags=re.DOTALL)
    anchors = set(re.findall(r"\{#([\w-]+)\}", text))
    for heading in re.findall(r"^#+\s+(.*?)\s*$", text, re.MULTILINE):
        heading = re.sub(r"\{#[\w-]+\}", "", heading).strip().lower()
        anchors.add(re.sub(r"[^\w\- ]", "", heading).replace(" ", "-"))
    return anchors


def test_readme_links_resolve():
    readme = (ROOT / "README.md").read_text()
    links = [t for t in _links(readme) if not re.match(r"[a-z]+:", t)]
    assert len(links) >= 10  # the landing page links into the docs
    for target in links:
        path, _, anchor = target.partition("#")
        file = (ROOT / path) if path else ROOT / "README.md"
        assert file.exists(), f"README.md links to {target}, which does not exist"
        if anchor and file.suffix == ".md":
            assert anchor in _anchors(file.read_text()), f"README.md: no heading for {target}"


def _commands(script: str) -> list[str]:
    """The lines of a shell script, with backslash-continued lines joined."""
    return re.sub(r"\\\n\s*", "", script).splitlines()


def test_ci_runs_the_readme_test_commands():
    """.ci/run runs the README's test command first, then the README's torchvision run, which
    collects every test file that holds tests marked vision or also_vision."""
    readme = (ROOT / "README.md").read_text()
    command = re.search(r"^pip install .*python -m pytest$", readme, re.MULTILINE).group(0)
    assert ".[all,dev,integrations,docs]" in command
    ci = _commands((ROOT / ".ci" / "run").read_text())
    tests = [number for number, line in enumerate(ci) if "python -m pytest" in line]
    assert ci[tests[0]] == command + " || exit"
    vision = re.search(r"^```bash\n(python3 -m venv .venv-vision.*?)^```", readme, re.M | re.S)
    for line in _commands(vision.group(1)):
        assert line in ci[tests[0] + 1 :] or line + " || exit" in ci[tests[0] + 1 :], line
    run = _commands(vision.group(1))[-1]
    assert 'python -m pytest -m "vision or also_vision" ' in run
    marked = {
        f"tests/{path.name}"
        for path in (ROOT / "tests").glob("test_*.py")
        if re.search(r"pytest\.mark\.(also_)?vision\b", path.read_text())
    }
    assert set(re.findall(r"tests/test_\w+\.py", run)) == marked


def _python_blocks(markdown: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", markdown, flags=re.DOTALL | re.MULTILINE)


def test_pages_with_examples_have_some():
    for page in RUN_EXAMPLES:
        assert _python_blocks((ROOT / page).read_text()), f"{page} has no Python example"


@pytest.mark.parametrize("page", RUN_EXAMPLES)
def test_page_examples_run(page, tmp_path, monkeypatch, capsys, one_thread):
    blocks = _python_blocks((ROOT / page).read_text())
    monkeypatch.chdir(tmp_path)  # examples write their files here
    namespace: dict = {"__name__": "__docs__"}
    for number, block in enumerate(blocks, 1):
        code = compile(block, f"{page}, Python block {number}", "exec")
        exec(code, namespace)  # noqa: S102 - the documented code, run as a user would
    _check_claims(page, "\n".join(blocks), capsys.readouterr().out, tmp_path)


def _check_claims(page: str, code: str, printed: str, folder: Path) -> None:
    """What the page's run examples (``code``) say they do, checked where they state a
    result. (A ```py block that needs a package the tests lack is run by its own test.)"""
    for expected in re.findall(r"^# Prints: (.*)$", code, re.MULTILINE):
        assert expected in printed, f"{page}: expected {expected!r} in the output:\n{printed}"
    for expected in re.findall(r"^# Writes: (\S+)$", code, re.MULTILINE):
        assert list(folder.glob(expected)), f"{page}: wrote no {expected}"
