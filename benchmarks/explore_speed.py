"""Milliseconds per decode + redraw of explore.html in headless Chromium (the page's own timer), for a run.

python benchmarks/explore_speed.py runs/position-digit-jmvae-z2-seed0
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "src")]

from train_speed import machine  # noqa: E402

from jmvae.browser import open_page  # noqa: E402
from jmvae.explore import write_explorer  # noqa: E402
from jmvae.train import load_run  # noqa: E402


def main() -> None:
    run = Path(sys.argv[1])
    _, data, model = load_run(run)
    page_path = Path(tempfile.mkdtemp()) / "explore.html"
    write_explorer(model, data, page_path, run.name)
    print(f"machine: {machine()}")
    with open_page(page_path) as page:
        page.evaluate("() => window.jmvaeExplorer.timeRedraw(20)")  # warm-up
        times = [page.evaluate("() => window.jmvaeExplorer.timeRedraw(100)") for _ in range(5)]
    print(
        f"{run.name}: {page_path.stat().st_size / 1e6:.1f} MB page; decode + redraw "
        f"{sorted(times)[2]:.1f} ms (median of 5 x 100; {min(times):.1f}-{max(times):.1f})"
    )


if __name__ == "__main__":
    main()
