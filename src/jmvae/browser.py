"""A real browser for the explorer's screenshot and tests: Playwright driving the system's Chromium.

Playwright's own browser download is often not reachable, so the system browser is launched by its path
(`$JMVAE_CHROMIUM`, else `chromium` or `chromium-browser` on PATH).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

from .errors import UserError


def chromium_path() -> str:
    path = os.environ.get("JMVAE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        raise UserError(
            "no Chromium found (allowed: `apt-get install chromium`, or $JMVAE_CHROMIUM naming the browser)"
        )
    return path


@contextlib.contextmanager
def open_page(page_path: Path, width: int = 1280, height: int = 800, errors: list | None = None):
    """The page at `page_path` opened from file:// in headless Chromium; console errors go to `errors`."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise UserError(
            "playwright is not installed (allowed: `pip install playwright`; the system Chromium is used)"
        ) from None
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            if errors is not None:
                page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
                page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(Path(page_path).resolve().as_uri())
            page.wait_for_function("() => window.jmvaeExplorer && window.jmvaeExplorer.ready")
            yield page
        finally:
            browser.close()
