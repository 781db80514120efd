"""Headless Chromium as the browser tests drive it: Debian's package (tools/chromium/install, run by make test),
its own `--headless --dump-dom` (the DOM after the page's scripts ran) and `--screenshot`; no WebDriver.
Without it the tests skip, saying how to install it."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import tempfile

import pytest

__all__ = ["dump_dom", "require", "screenshot"]


def require() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.skip("SKIPPED LOUDLY: no chromium on the PATH; `make chromium` (tools/chromium/install, which "
                    "make test runs) installs Debian's pinned package; it needs root and apt")
    return found


def _run(url: str, *flags: str) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="polymesh-chromium-") as profile:
        # --no-sandbox: tests run as root in CI, where Chromium's sandbox refuses to start.
        return subprocess.run([require(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                               "--disable-extensions", "--disable-background-networking", f"--user-data-dir={profile}",
                               *flags, url], capture_output=True, text=True, timeout=90,
                              env={**os.environ, "HOME": profile})


def dump_dom(page: pathlib.Path, fragment: str = "") -> str:
    done = _run(page.resolve().as_uri() + (f"#{fragment}" if fragment else ""), "--dump-dom")
    assert done.returncode == 0 and "<html" in done.stdout, done.stderr[-2000:]
    return done.stdout


def screenshot(page: pathlib.Path, png: pathlib.Path, size: str = "1400,900") -> pathlib.Path:
    png.parent.mkdir(parents=True, exist_ok=True)
    done = _run(page.resolve().as_uri(), f"--screenshot={png.resolve()}", f"--window-size={size}",
                "--hide-scrollbars")
    assert done.returncode == 0 and png.exists() and png.stat().st_size > 1000, done.stderr[-2000:]
    return png
