"""The README's Python example runs exactly as written, and does what it says."""
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


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
    text = README.read_text()
    ci = (README.parent / ".ci" / "run").read_text()
    test_cmd = re.findall(r"```bash\n(.*?)\n```", text, flags=re.S)[1].strip()
    assert test_cmd in ci
