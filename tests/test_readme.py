"""The README's claims hold: its Python example runs as written and does what it says, its test command is the
one CI runs, every `jmvae` command in it (and in the docs' shell blocks) parses with the real flags, and every
file it names or links exists."""

import re
import shlex
from pathlib import Path

import pytest

from jmvae.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").rglob("*.md"))]


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def bash_blocks(path: Path) -> list[str]:
    return re.findall(r"```bash\n(.*?)\n```", path.read_text(), flags=re.S)


def jmvae_commands(path: Path) -> list[list[str]]:
    """Every `jmvae ...` command of the page's bash blocks, as argv (after `&&`, without comments)."""
    out = []
    for block in bash_blocks(path):
        for line in block.replace("\\\n", " ").splitlines():
            for part in re.split(r"&&|;", line):
                words = shlex.split(part, comments=True)
                if words and words[0] == "jmvae":
                    out.append(words[1:])
    return out


@pytest.mark.slow
def test_readme_python_example(tmp_path, monkeypatch, capsys):
    (block,) = python_blocks()
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(block, str(README), "exec"), namespace)
    out = capsys.readouterr().out
    assert "q(z|position=right): mean" in out
    assert (tmp_path / "runs" / "api-demo" / "model.pt").exists()
    assert namespace["images"].shape == (8, 28, 56)
    # The generated digits sit in the right half, as asked.
    share = float(out.rsplit("share of ink in the right half:", 1)[1])
    assert share > 0.8, share


def test_readme_commands_are_what_ci_runs():
    ci = (ROOT / ".ci" / "run").read_text()
    train_cmd, test_cmd = (b.strip() for b in bash_blocks(README)[:2])
    assert test_cmd in ci
    assert train_cmd.endswith("pip install torch==2.13.0 -e . && jmvae train")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_jmvae_command_parses_with_real_flags(page):
    """A renamed or removed flag, a wrong choice or a missing argument in a documented command fails here."""
    parser = build_parser()
    for argv in jmvae_commands(page):
        parser.parse_args(argv)  # UserError (one line naming the flag) on anything it does not know


def test_the_readme_shows_the_own_data_commands():
    commands = jmvae_commands(README)
    assert ["train"] in commands
    assert any(c[:2] == ["train", "--data"] for c in commands)
    assert any(c[0] == "generate" and "--given" in c for c in commands)
    text = README.read_text()
    assert (
        "python examples/make_shapes.py shapes" in text and (ROOT / "examples" / "make_shapes.py").is_file()
    )
    assert (
        "docs/own-data-generated.png" in text and "docs/results-own-data.md" in text
    )  # what it draws, measured
    assert len(text.splitlines()) <= 220


def test_every_file_the_readme_names_exists():
    text = README.read_text()
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    named = re.findall(r"`((?:docs|tests|examples|benchmarks|src)/[\w./-]+)`", text)
    missing = [p for p in links + named if not p.startswith("http") and not (ROOT / p).exists()]
    assert not missing, missing


def test_the_api_reference_documents_every_public_name():
    """Every name `jmvae` exports and every model class has its entry in docs/reference/api.md (mkdocs
    build --strict, in CI, fails if an entry does not resolve)."""
    import jmvae
    from jmvae.models import MODELS

    api = (ROOT / "docs" / "reference" / "api.md").read_text()
    documented = {line.split("::: ")[1].strip() for line in api.splitlines() if line.startswith("::: ")}
    for name in jmvae.__all__:
        obj = getattr(jmvae, name)
        path = f"{obj.__module__}.{obj.__qualname__}" if hasattr(obj, "__qualname__") else None
        assert path in documented or f"jmvae.models.{name}" in documented, name
    for cls in MODELS.values():
        assert f"{cls.__module__}.{cls.__qualname__}" in documented, cls
