"""Headless Chromium (Debian's `chromium`): the DOM after scripts ran, and screenshots."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

# what Chromium needs as root in a container, and nothing that talks to the outside
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--virtual-time-budget=3000",
)


def chromium(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    """Run chromium with FLAGS and a fresh profile; raises on a non-zero exit."""
    profile = tempfile.mkdtemp(prefix="fa-chromium-")
    try:
        return subprocess.run(
            ["chromium", *FLAGS, f"--user-data-dir={profile}", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=True,
        )
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def dump_dom(url: str) -> str:
    """The page's DOM as serialized after its scripts ran."""
    return chromium("--dump-dom", url).stdout


def screenshot(url: str, out: Path, size: str = "1280,900") -> Path:
    """A PNG of the page at `size` (width,height)."""
    chromium(f"--window-size={size}", f"--screenshot={out}", url)
    return out


class Page(HTMLParser):
    """What the status page shows: `data-stat` values, table rows by their data attribute,
    and the elements uPlot created."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.stats: dict[str, str] = {}
        self.rows: dict[str, dict[str, list[str]]] = {"image": {}, "schedule": {}, "run": {}, "upstream": {}}
        self.classes: list[str] = []
        self.tags: list[str] = []
        self._row: tuple[str, str] | None = None
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.tags.append(tag)
        self.classes += a.get("class", "").split()
        if "data-stat" in a:
            self.stats[a["data-stat"]] = a.get("data-value", "")
        for kind in self.rows:
            if f"data-{kind}" in a and tag == "tr":
                self._row = (kind, a[f"data-{kind}"])
                self.rows[kind][a[f"data-{kind}"]] = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "tr":
            self._row = None

    def handle_data(self, data: str) -> None:
        if self._row is not None and data.strip():
            self.rows[self._row[0]][self._row[1]].append(data.strip())
