"""Render an HTML file in headless Chromium and report what a test needs to know about it.

Dependency-light on purpose: Debian's ``chromium`` binary and the standard library, no driver
package. The page is copied next to the original (so relative URLs resolve the same way) with a
small script appended; on the window's ``load`` event — after every image has loaded or failed —
the script writes a JSON report into the DOM, and ``chromium --dump-dom`` prints the DOM once
``--virtual-time-budget`` has run out. ``make test`` installs chromium when it is missing; this
helper fails loudly (it never skips) when the binary is absent.

    page = render("results.html")
    assert page.all_images_loaded and "results" in page.sections
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPORT_ID = "__browser_report__"

# Runs after load: images that failed have complete = true and naturalWidth = 0.
_PROBE = """
<script>
window.addEventListener("load", () => {
  const images = Array.from(document.images).map((img) => ({
    src: img.getAttribute("src").slice(0, 80), complete: img.complete,
    naturalWidth: img.naturalWidth, naturalHeight: img.naturalHeight, alt: img.alt,
    section: (img.closest("section[id]") || {}).id || null,
  }));
  const sections = Array.from(document.querySelectorAll("section[id]")).map((s) => s.id);
  const headings = Array.from(document.querySelectorAll("h1, h2")).map((h) => h.textContent.trim());
  const report = document.createElement("script");
  report.type = "application/json";
  report.id = "%s";
  // "<" escaped so that no string in the report can close the script element
  report.textContent = JSON.stringify({title: document.title, images, sections, headings}).replace(/</g, "\\\\u003c");
  document.body.appendChild(report);
});
</script>
""" % REPORT_ID


@dataclass
class RenderedPage:
    """What Chromium saw: the serialised DOM after load, and the probe's report."""

    dom: str
    title: str
    images: list[dict[str, Any]] = field(default_factory=list)
    sections: list[str] = field(default_factory=list)
    headings: list[str] = field(default_factory=list)

    @property
    def all_images_loaded(self) -> bool:
        """True when there is at least one ``<img>`` and every one decoded (naturalWidth > 0)."""
        return bool(self.images) and all(i["complete"] and i["naturalWidth"] > 0 for i in self.images)

    def broken_images(self) -> list[dict[str, Any]]:
        return [i for i in self.images if not (i["complete"] and i["naturalWidth"] > 0)]

    def images_in(self, section: str) -> list[dict[str, Any]]:
        return [i for i in self.images if i["section"] == section]


def chromium_binary() -> str:
    """Path of the Chromium executable; an AssertionError (not a skip) when it is missing."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    raise AssertionError("chromium is not installed; `make test` installs it "
                         "(apt-get install -y chromium)")


def render(html_file: str | os.PathLike, *, budget_ms: int = 5000, timeout_s: float = 60.0) -> RenderedPage:
    """Load ``html_file`` in headless Chromium and return the rendered DOM and image/section report.

    Raises:
        AssertionError: chromium missing, failed, or the page never fired ``load``.
    """
    source = Path(html_file).resolve()
    html = source.read_text(encoding="utf-8")
    probed = re.sub(r"</body>", lambda _: _PROBE + "</body>", html, count=1, flags=re.IGNORECASE)
    if probed == html:
        probed = html + _PROBE
    copy = source.with_name(f".probe-{os.getpid()}-{source.name}")
    copy.write_text(probed, encoding="utf-8")
    try:
        # a private profile: several test processes may run chromium at once
        with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
            proc = subprocess.run(
                [chromium_binary(), "--headless", "--disable-gpu", "--no-sandbox", "--disable-dev-shm-usage",
                 "--no-first-run", "--no-default-browser-check", f"--user-data-dir={profile}",
                 f"--virtual-time-budget={budget_ms}", "--dump-dom", copy.as_uri()],
                capture_output=True, text=True, timeout=timeout_s)
    finally:
        copy.unlink(missing_ok=True)
    if proc.returncode != 0:
        raise AssertionError(f"chromium exited with {proc.returncode}: {proc.stderr[-2000:]}")
    dom = proc.stdout
    match = re.search(rf'<script type="application/json" id="{REPORT_ID}">(.*?)</script>', dom, re.S)
    if not match:
        raise AssertionError(f"the page did not finish loading in chromium (no report in the DOM); "
                             f"stderr: {proc.stderr[-2000:]}")
    report = json.loads(match.group(1))
    return RenderedPage(dom=dom, title=report["title"], images=report["images"], sections=report["sections"],
                        headings=report["headings"])
