"""Headless Chromium from the system (Debian's ``chromium`` package) driven by Playwright, for
the debugger page's tests and its screenshot. Playwright's own browser downloads are never
used: there may be no network, and the system browser is the one CI installs."""

from __future__ import annotations

import os
import shutil
from typing import Any, Optional

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")


def find_chromium() -> Optional[str]:
    """``$CHROMIUM`` if set, else the system's Chromium, else None."""
    for path in (os.environ.get("CHROMIUM"), *_CANDIDATES, shutil.which("chromium")):
        if path and os.access(path, os.X_OK):
            return path
    return None


def launch(playwright: Any, executable: str) -> Any:
    return playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
