"""Headless Chromium for reports: PDF printing, screenshots and browser checks.

Chromium is driven through Playwright (the ``browser`` extra:
``pip install 'clinical-mtl[browser]'``) with the system's own Chromium
(Debian: ``apt-get install chromium``), so nothing is downloaded at run time.
The executable is ``$CLINICAL_MTL_CHROMIUM`` or the first of ``chromium``,
``chromium-browser`` and ``google-chrome`` on the PATH.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from ..exceptions import BrowserUnavailableError

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
# Offline and quiet: no background connections, which a closed network refuses noisily.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def find_chromium() -> str:
    """The Chromium executable to use.

    Raises
    ------
    RuntimeError
        When none is installed, saying how to install one.
    """
    configured = os.environ.get("CLINICAL_MTL_CHROMIUM")
    if configured:
        if not Path(configured).is_file():
            raise BrowserUnavailableError(f"CLINICAL_MTL_CHROMIUM={configured!r} is not a file.")
        return configured
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    raise BrowserUnavailableError("No Chromium found (looked for " + ", ".join(CHROMIUM_NAMES) + " on the PATH); install "
                       "it (Debian: apt-get install chromium) or set CLINICAL_MTL_CHROMIUM to its executable.")


@contextmanager
def chromium():
    """A headless Chromium browser (a Playwright ``Browser``), closed on exit."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as error:  # pragma: no cover - depends on the installation
        raise BrowserUnavailableError("PDF reports need Playwright: pip install 'clinical-mtl[browser]'.") from error
    executable = find_chromium()
    with tempfile.TemporaryDirectory() as profile, sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        try:
            yield context
        finally:
            context.close()


def print_pdfs(pages: list[Path], folder: Path) -> int:
    """Print every HTML page in ``pages`` to ``folder/<page stem>.pdf`` (A4); returns the count."""
    with chromium() as browser:
        tab = browser.new_page()
        for page in pages:
            tab.goto(Path(page).resolve().as_uri())
            tab.pdf(path=str(Path(folder) / f"{Path(page).stem}.pdf"), format="A4", print_background=True,
                    margin={"top": "12mm", "bottom": "12mm", "left": "10mm", "right": "10mm"})
    return len(pages)
