"""A real browser for the dashboard's tests: Debian's `chromium` and `chromium-driver`.

    chromium, chromedriver = require_chromium()   # paths, for selenium

`require_chromium()` returns the system Chromium and its driver; where they are missing and this
process is root on a Debian-like system, it installs the two packages once with apt-get (a
bounded wait, output kept for the error). Otherwise it skips the calling test with a loud reason;
with the `CI` or `ORC_REQUIRE_BROWSER` environment variable set, it fails instead, so a machine
meant to check the dashboard cannot silently skip it (as `netns.require_netns` does for
namespaces).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
PACKAGES = ("chromium", "chromium-driver")
INSTALL_TIMEOUT = 900  # seconds for update + install together: a slow mirror, not a hung one

_install_failure: str | None = None  # why the one install attempt of this process failed


def _present() -> bool:
    return CHROMIUM.exists() and CHROMEDRIVER.exists()


def _install() -> str | None:
    """Install Debian's chromium and its driver; why it could not, or None."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update"], ["apt-get", "install", "-y", "--no-install-recommends", *PACKAGES]):
        try:
            done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=INSTALL_TIMEOUT)
        except subprocess.TimeoutExpired:
            return f"`{' '.join(argv)}` took more than {INSTALL_TIMEOUT} s"
        if done.returncode != 0:
            return f"`{' '.join(argv)}` failed ({done.returncode}): {(done.stderr or done.stdout)[-2000:]}"
    return None if _present() else f"apt-get installed {', '.join(PACKAGES)} but {CHROMIUM} or {CHROMEDRIVER} is missing"


def unavailable_reason() -> str | None:
    """Why no browser can be had here, or None once both binaries are in place."""
    global _install_failure
    if _present():
        return None
    if _install_failure is not None:
        return _install_failure  # tried once already in this process: do not retry per test
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return f"{CHROMIUM} and {CHROMEDRIVER} are not installed (apt-get install {' '.join(PACKAGES)} as root)"
    if shutil.which("apt-get") is None:
        return f"{CHROMIUM} and {CHROMEDRIVER} are not installed and there is no apt-get to install them"
    _install_failure = _install()
    return _install_failure


def require_chromium() -> tuple[str, str]:
    """The paths of chromium and chromedriver; skip (or, with CI or ORC_REQUIRE_BROWSER set, fail)
    the current test when they cannot be had."""
    reason = unavailable_reason()
    if reason is None:
        return str(CHROMIUM), str(CHROMEDRIVER)
    message = f"BROWSER TESTS NOT RUN: {reason}"
    if os.environ.get("CI") or os.environ.get("ORC_REQUIRE_BROWSER"):
        pytest.fail(message + " (CI or ORC_REQUIRE_BROWSER is set, so this is a failure, not a skip)", pytrace=False)
    pytest.skip(message)
