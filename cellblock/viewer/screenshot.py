"""Headless screenshots of a neuroglancer viewer: Debian chromium through selenium.

neuroglancer's own ``webdriver`` module drives the browser; the viewer renders with
WebGL2 on SwiftShader (CPU). Facts that matter (shared/notes/neuroglancer.md):

* ``--enable-unsafe-swiftshader --disable-gpu`` give WebGL2 headless; ``--use-gl=
  swiftshader`` would disable WebGL;
* selenium must not phone home (``SE_OFFLINE``, ``SE_AVOID_STATS``), and chromium's
  background networking is off: nothing leaves loopback;
* chromium's own ``--screenshot`` captures before the data has loaded; neuroglancer's
  screenshot request waits until every visible chunk is drawn.

neuroglancer's ``Webdriver.sync`` and ``Viewer.screenshot`` wait forever on a browser
that died; ``Browser`` bounds every wait and says what it was waiting for.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import neuroglancer
import neuroglancer.webdriver
import numpy as np

from cellblock.atomic import atomic_path
from cellblock.errors import UserError

__all__ = ["CHROMEDRIVER", "CHROMIUM", "Browser", "check_browser", "screenshot"]

log = logging.getLogger(__name__)
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--enable-unsafe-swiftshader",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
)


def check_browser(chromium: str = CHROMIUM) -> None:
    """UserError unless chromium and its driver are installed."""
    driver = shutil.which("chromedriver") or CHROMEDRIVER
    for path, package in ((chromium, "chromium"), (driver, "chromium-driver")):
        if not os.access(path, os.X_OK):
            raise UserError(
                f"{path} not found: headless screenshots need Debian's {package} "
                "(scripts/apt_install.sh browser)"
            )


class Browser:
    """A headless chromium for screenshots of one or more viewers (a context manager).

    Args:
        size: Default screenshot ``(width, height)`` in pixels.
        timeout: Seconds to wait for the browser to start, connect and render.
        chromium: The chromium binary.
    """

    def __init__(
        self, size: tuple[int, int] = (1600, 1000), timeout: float = 120, chromium: str = CHROMIUM
    ):
        self.size, self.timeout, self.chromium = tuple(size), timeout, chromium
        self._profile: tempfile.TemporaryDirectory | None = None
        self._driver: neuroglancer.webdriver.WebdriverBase | None = None
        self._url: str | None = None

    def __enter__(self) -> Browser:
        check_browser(self.chromium)
        # selenium's manager otherwise tries to reach the internet for drivers and stats.
        os.environ["SE_OFFLINE"] = "true"
        os.environ["SE_AVOID_STATS"] = "true"
        self._profile = tempfile.TemporaryDirectory(prefix="cellblock-chromium-")
        started = time.monotonic()
        try:
            self._driver = neuroglancer.webdriver.WebdriverBase(
                headless=True,
                browser="chrome",
                browser_binary_path=self.chromium,
                window_size=self.size,
                print_logs=False,
                extra_command_line_args=[*CHROMIUM_ARGS, f"--user-data-dir={self._profile.name}"],
            )
        except Exception as err:  # selenium raises many types; all mean "no browser"
            self._profile.cleanup()
            raise UserError(f"headless chromium did not start: {err}") from None
        self._driver.add_log_listener(lambda entry: log.debug("browser: %s", entry.text))
        log.info("headless chromium up in %.1f s", time.monotonic() - started)
        return self

    def __exit__(self, *exc) -> None:
        if self._driver is not None:
            try:
                self._driver.driver.quit()
            finally:
                self._driver = None
        if self._profile is not None:
            # chromium's helpers may still be flushing the profile as they exit
            shutil.rmtree(self._profile.name, ignore_errors=True)
            self._profile = None

    def _request(self, viewer: neuroglancer.Viewer, what: str, deadline: float):
        """One screenshot reply from the browser, within the deadline."""
        done, reply = threading.Event(), []

        def on_reply(s: Any) -> None:
            reply.append(s)
            done.set()

        viewer.async_screenshot(on_reply)
        if not done.wait(max(0.0, deadline - time.monotonic())):
            raise UserError(f"the headless browser did not {what} within {self.timeout:.0f} s")
        return reply[0]

    def capture(
        self,
        viewer: neuroglancer.Viewer,
        path: Path | str | None = None,
        size: tuple[int, int] | None = None,
    ) -> np.ndarray:
        """Render ``viewer`` once all visible data has loaded.

        Args:
            viewer: The viewer (its server must be reachable from this machine).
            path: Write the PNG here (atomically), if given.
            size: ``(width, height)``; default the browser's.

        Returns:
            The pixels, ``(height, width, 4)`` uint8 RGBA.
        """
        if self._driver is None:
            raise RuntimeError("use Browser as a context manager")
        width, height = size or self.size
        deadline = time.monotonic() + self.timeout
        url = viewer.get_viewer_url()
        if url != self._url:
            self._driver.driver.get(url)
            self._url = url
        # Like neuroglancer's Webdriver.sync: wait until the page shows the current state.
        while self._request(viewer, "connect", deadline).viewer_state != viewer.state:
            time.sleep(0.1)
        prior = viewer.config_state.state
        with viewer.config_state.txn() as s:
            s.show_ui_controls = False
            s.show_panel_borders = False
            s.viewer_size = [width, height]
        try:
            for _ in range(5):  # the first frame after a resize may still have the old size
                shot = self._request(viewer, "render", deadline).screenshot
                if (shot.width, shot.height) == (width, height):
                    break
            else:
                raise UserError(f"the browser rendered {shot.width}x{shot.height}, not {size}")
        finally:
            viewer.config_state.set_state(prior)
        if path is not None:
            with atomic_path(Path(path)) as tmp:
                tmp.write_bytes(shot.image)
            log.info("wrote %s (%dx%d)", path, width, height)
        return shot.image_pixels


def screenshot(
    viewer: neuroglancer.Viewer,
    path: Path | str,
    size: tuple[int, int] = (1600, 1000),
    timeout: float = 120,
) -> np.ndarray:
    """Start a headless browser, write one PNG of ``viewer`` to ``path``, stop it.

    Args:
        viewer: The viewer.
        path: The PNG to write.
        size: ``(width, height)`` in pixels.
        timeout: Seconds allowed for starting, loading and rendering.

    Returns:
        The pixels, ``(height, width, 4)`` uint8 RGBA.
    """
    with Browser(size, timeout) as browser:
        return browser.capture(viewer, path)
