"""Check the built site in a real browser: ``make book-check`` (issue #19).

Headless Chromium opens the index and one chapter (or the pages named), twice each: served over HTTP
(a server on a free local port, as a web host would) and opened from disk (``file://``). For each
page it reports what the browser sees, and fails when

* the page does not load (no title, or no text);
* one of its own images is broken: it finished loading with ``naturalWidth == 0`` (a corrupt
  ``data:`` URI, a missing file);
* a chapter (any page but the index) shows no image of its own: its figures are missing;
* a link of the page to another page of the site points at no file.

How: a small check page holds the page in an ``<iframe>`` (same origin, so its script can read the
page's ``document.images``) and writes what it finds into its own DOM on the frame's ``load`` event,
which fires once every image has loaded or failed; ``chromium --dump-dom`` prints that DOM. Every host
but 127.0.0.1 resolves to nothing, so the check is the same on- and offline: images from other hosts
(the Colab badge) are listed as external and not judged, and the CDN scripts (MathJax) do not load.

It also writes a screenshot of each page (served, 1280 x 1600 px) to ``<site>/_check/<page>.png``, and
of a chapter scrolled to its first figure to ``<page>-figure.png``, and prints their size and the share
of pixels that are not near-white (code cells' grey counts); a one-colour screenshot (nothing rendered)
fails the check.

    .venv/bin/python tools/book_check.py                 # _book/: index.html and its first chapter
    .venv/bin/python tools/book_check.py --site /tmp/site --pages index.html 03_backbone_training.html

Exit status: 0 all pages pass, 1 a page fails, 2 no site or no Chromium (one line says which).
Chromium: ``apt-get install -y chromium`` (Debian), or name the binary with ``--chromium``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import html
import http.server
import json
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, quote, urlparse

from PIL import Image  # a dependency of the course

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SITE = ROOT / "_book"
CHECK_PATH = "/__book_check__.html"
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
WINDOW = (1280, 1600)  # screenshot size in CSS pixels

# The check page: the page under test in a frame, and what the browser made of it as JSON in <pre id="report">.
CHECK_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>book check</title></head><body>
<pre id="report">the page did not finish loading</pre>
<iframe id="page" src="{src}" style="width:{width}px;height:{height}px"></iframe>
<script>
const frame = document.getElementById("page");
function isLocal(src, location) {{  // embedded, or a file of the site (same host, or on disk)
  if (src.startsWith("data:") || src.startsWith("file:")) return true;
  try {{ return new URL(src).origin === location.origin; }} catch (error) {{ return true; }}
}}
frame.addEventListener("load", () => {{
  let report;
  try {{
    const doc = frame.contentDocument;
    report = {{
      url: doc.location.href,
      title: doc.title,
      text_length: doc.body ? doc.body.innerText.length : 0,
      images: Array.from(doc.images).map(img => ({{
        src: (img.getAttribute("src") || "").slice(0, 80),
        local: isLocal(img.src, doc.location),
        complete: img.complete, width: img.naturalWidth, height: img.naturalHeight,
      }})),
      links: Array.from(doc.links).map(a => a.getAttribute("href")),
    }};
  }} catch (error) {{
    report = {{error: String(error)}};
  }}
  document.getElementById("report").textContent = JSON.stringify(report);
}});
</script>
</body></html>
"""

# For the second screenshot of a chapter: the page filling the window, scrolled to its first figure.
FIGURE_VIEW = """<!doctype html>
<html><head><meta charset="utf-8"><title>book check: first figure</title>
<style>html, body {{ margin: 0; height: 100%; }} iframe {{ border: 0; width: 100%; height: 100%; }}</style></head>
<body><iframe id="page" src="{src}"></iframe>
<script>
const frame = document.getElementById("page");
frame.addEventListener("load", () => {{
  const figure = Array.from(frame.contentDocument.images)
    .find(img => img.naturalWidth > 100 && img.src.startsWith("data:"));
  if (figure) {{ figure.scrollIntoView({{block: "start"}}); frame.contentWindow.scrollBy(0, -80); }}
}});
</script>
</body></html>
"""


@dataclass
class PageResult:
    """What the browser saw of one page, opened one way, and what is wrong with it."""

    page: str
    how: str  # "served" or "from disk"
    title: str = ""
    images: list[dict] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def local_images(self) -> list[dict]:
        return [image for image in self.images if image["local"]]

    def summary(self) -> str:
        local = self.local_images
        good = sum(image["width"] > 0 for image in local)
        verdict = "ok" if not self.problems else "FAIL: " + "; ".join(self.problems)
        return (f"{self.page} ({self.how}): title {self.title!r}, {good}/{len(local)} images of its own decoded, "
                f"{len(self.images) - len(local)} external not judged, {len(self.links)} links: {verdict}")


def find_chromium(name: str | None = None) -> str | None:
    """The Chromium binary: ``name`` when given (a path or a command), else the first of BROWSERS on PATH."""
    for candidate in ([name] if name else BROWSERS):
        found = shutil.which(candidate)
        if found:
            return found
    return None


def chromium_command(chromium: str, profile_dir: Path, *args: str) -> list[str]:
    """Headless Chromium with its own throwaway profile, as root (``--no-sandbox``), and no host but 127.0.0.1."""
    return [chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--no-first-run", "--hide-scrollbars", f"--user-data-dir={profile_dir}",
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1", *args]


def dump_dom(chromium: str, url: str, profile_dir: Path, *extra: str, budget_ms: int = 15000) -> str:
    """The DOM of ``url`` once it has loaded (and ``budget_ms`` of virtual time passed), as Chromium prints it."""
    command = chromium_command(chromium, profile_dir, f"--virtual-time-budget={budget_ms}", *extra, "--dump-dom", url)
    done = subprocess.run(command, capture_output=True, text=True, timeout=180)
    if done.returncode != 0:
        raise RuntimeError(f"chromium exited {done.returncode} on {url}: {done.stderr.strip()[-500:]}")
    return done.stdout


def browse(chromium: str, url: str, profile_dir: Path, *extra: str) -> dict:
    """What the check page at ``url`` reported, or an ``error`` entry when Chromium itself failed."""
    try:
        return read_report(dump_dom(chromium, url, profile_dir, *extra))
    except (RuntimeError, subprocess.TimeoutExpired) as error:
        return {"error": str(error)}


def read_report(dom: str) -> dict:
    """The JSON the check page wrote into ``<pre id="report">`` (an ``error`` entry when it wrote none)."""
    match = re.search(r'<pre id="report">(.*?)</pre>', dom, re.DOTALL)
    text = html.unescape(match.group(1)) if match else "no report in the DOM"
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return {"error": text}


def judge(result: PageResult, report: dict, site: Path, is_chapter: bool) -> PageResult:
    """Fill ``result`` from the check page's ``report`` and list what is wrong with the page."""
    if "error" in report:
        result.problems.append(f"not loaded: {report['error']}")
        return result
    result.title, result.images, result.links = report["title"], report["images"], report["links"]
    if not result.title or report["text_length"] == 0:
        result.problems.append("empty page (no title or no text)")
    broken = [image["src"] for image in result.local_images if not image["complete"] or image["width"] == 0]
    if broken:
        result.problems.append(f"{len(broken)} broken image(s): {', '.join(broken[:3])}")
    if is_chapter and not result.local_images:
        result.problems.append("no figure: the page shows no image of its own")
    missing = [link for link in site_links(result.links) if not (site / link).is_file()]
    if missing:
        result.problems.append(f"link(s) to missing pages: {', '.join(missing[:5])}")
    return result


def site_links(links: list[str]) -> list[str]:
    """The links that point at another file of the site (relative, no scheme), without their #anchor."""
    targets = []
    for link in links:
        if not link or link.startswith(("#", "/")) or re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", link):
            continue
        targets.append(link.partition("#")[0].partition("?")[0])
    return [t for t in dict.fromkeys(targets) if t]


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves the site, the check page at CHECK_PATH?page=<page> (FIGURE_VIEW with &view=figure); logs nothing."""

    def do_GET(self):  # noqa: N802 (the standard library's name)
        url = urlparse(self.path)
        if url.path != CHECK_PATH:
            return super().do_GET()
        query = parse_qs(url.query)
        page = query.get("page", ["index.html"])[0]
        template = FIGURE_VIEW if query.get("view") == ["figure"] else CHECK_PAGE
        body = template.format(src="/" + quote(page), width=WINDOW[0], height=WINDOW[1]).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def serve(site: Path):
    """``with serve(site) as base_url:`` the site over HTTP on a free port of 127.0.0.1, in a thread."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Handler, directory=str(site)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def screenshot(chromium: str, url: str, path: Path, profile_dir: Path) -> str:
    """Write a screenshot of ``url`` to ``path``; describe it (size, share of non-white pixels) or say what is wrong."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    command = chromium_command(chromium, profile_dir, f"--window-size={WINDOW[0]},{WINDOW[1]}",
                               "--virtual-time-budget=15000", f"--screenshot={path}", url)
    with contextlib.suppress(subprocess.TimeoutExpired):
        subprocess.run(command, capture_output=True, text=True, timeout=180)
    if not path.is_file():
        return "FAIL: chromium wrote no screenshot"
    with Image.open(path) as image:
        grey = image.convert("L")
        lo, hi = grey.getextrema()
        histogram = grey.histogram()
    inked = 1 - sum(histogram[250:]) / sum(histogram)
    if lo == hi:
        return f"FAIL: the screenshot is one colour ({image.width}x{image.height})"
    return f"{image.width}x{image.height} px, {inked:.1%} of the pixels not white"


def first_chapter(site: Path) -> str | None:
    """The first page the index links to that is a chapter (``NN_slug.html``)."""
    index = (site / "index.html").read_text(encoding="utf-8")
    pages = re.findall(r'href="(\d\d_[^"#/]+\.html)', index)
    return pages[0] if pages else None


def check_site(site: Path, pages: list[str], chromium: str, shots: Path | None = None,
               log=print) -> list[PageResult]:
    """Open each of ``pages`` of ``site`` served and from disk; screenshot it into ``shots``; return the results."""
    site = site.resolve()
    results = []
    with tempfile.TemporaryDirectory(prefix="book-check-") as scratch, serve(site) as base:
        scratch = Path(scratch)
        for page in pages:
            is_chapter = page != "index.html"
            report = browse(chromium, f"{base}{CHECK_PATH}?page={quote(page)}", scratch / "profile")
            results.append(judge(PageResult(page, "served"), report, site, is_chapter))
            check_file = scratch / f"check-{len(results)}.html"  # outside the site, so the site stays as built
            check_file.write_text(CHECK_PAGE.format(src=(site / page).as_uri(), width=WINDOW[0], height=WINDOW[1]),
                                  encoding="utf-8")
            report = browse(chromium, check_file.as_uri(), scratch / "profile", "--allow-file-access-from-files")
            results.append(judge(PageResult(page, "from disk"), report, site, is_chapter))
            for result in results[-2:]:
                log(result.summary())
            if shots is None:
                continue
            views = [("", f"{base}/{quote(page)}")]
            if is_chapter:
                views.append(("-figure", f"{base}{CHECK_PATH}?page={quote(page)}&view=figure"))
            for suffix, url in views:
                shot = shots / f"{Path(page).stem}{suffix}.png"
                described = screenshot(chromium, url, shot, scratch / "profile")
                log(f"{page}: screenshot {shot}{' (at its first figure)' if suffix else ''}: {described}")
                if described.startswith("FAIL"):
                    results[-2].problems.append(described)
    return results


def main(argv: list[str] | None = None) -> int:
    """The command line: find the site and Chromium, check the pages, exit 0 / 1 / 2."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--site", type=Path, default=DEFAULT_SITE, help=f"the built site (default: {DEFAULT_SITE})")
    parser.add_argument("--pages", nargs="+", help="pages to check (default: index.html and its first chapter)")
    parser.add_argument("--chromium", help=f"the Chromium binary (default: the first of {', '.join(BROWSERS)} on PATH)")
    parser.add_argument("--no-screenshots", action="store_true", help="skip the screenshots")
    args = parser.parse_args(argv)

    if not (args.site / "index.html").is_file():
        print(f"error: no site at {args.site} (index.html missing): build it first with `make book`", file=sys.stderr)
        return 2
    chromium = find_chromium(args.chromium)
    if chromium is None:
        print(f"error: no Chromium ({args.chromium or ', '.join(BROWSERS)}) on PATH: "
              "install it with `apt-get install -y chromium` (Debian)", file=sys.stderr)
        return 2
    chapter = first_chapter(args.site)
    pages = args.pages or ["index.html"] + ([chapter] if chapter else [])
    missing = [page for page in pages if not (args.site / page).is_file()]
    if missing:
        print(f"error: no page {', '.join(missing)} in {args.site}", file=sys.stderr)
        return 2
    shots = None if args.no_screenshots else args.site / "_check"
    results = check_site(args.site, pages, chromium, shots)
    failed = [r for r in results if r.problems]
    print(f"{len(results) - len(failed)}/{len(results)} page checks passed" + (": FAIL" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
