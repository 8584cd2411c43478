"""Build the executed course as a static HTML site: ``make book`` (issue #19).

The notebooks are committed without outputs, so GitHub shows the course without a single figure.
This script executes each chapter (``notebooks/NN_slug.ipynb``) in memory, in the notebooks'
folder as ``make test`` does, under one profile, and renders it with nbconvert's ``lab`` template
into ``<out>/NN_slug.html``; the committed notebooks are only read, never written. Figures are
embedded in the pages as ``data:`` URIs, so the site works opened from disk and served alike.

Besides the chapters it writes

* ``index.html``: ``notebooks/README.md`` (the course index), its links to ``.ipynb`` rewritten to
  the chapter pages, then the "Results on the toy dataset" section of ``README.md`` and a table of
  this build (status and time of each chapter, the profile);
* ``readme.html``: the whole ``README.md``;
* ``build.json``: that table as data, so that ``--only 03`` rebuilds one chapter and keeps the others'.

Links between pages point at the pages; links to other files of the repository point at GitHub
(``cutswap_lib.SOURCE``); local images are embedded. The pages still load MathJax and require.js
from a CDN, as nbconvert's pages do: offline, equations show as their TeX source.

    .venv/bin/python tools/book.py                      # default profile (the chapters: about 10 min on 2 cores)
    .venv/bin/python tools/book.py --profile fast       # CI sizes (a few minutes)
    .venv/bin/python tools/book.py --only 03 05 --timeout 1800
    .venv/bin/python tools/book.py --no-execute         # render the committed notebooks as they are

Exit status: 0 when every selected chapter ran to its end, 1 when one failed or timed out (its
page is still written, up to the failing cell, with a banner), 2 for a bad argument.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import html
import json
import math
import mimetypes
import os
import re
import sys
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import unquote

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError
from nbconvert import HTMLExporter
from nbconvert.filters.markdown_mistune import markdown2html_mistune

from cutswap_lib import source_address, source_ref
from cutswap_lib.config import PROFILE_ENV, PROFILES

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
DEFAULT_OUT = ROOT / "_book"
RESULTS_HEADING = "## Results on the toy dataset"
MANIFEST = "build.json"

# Matplotlib's inline backend in the kernel, whatever the caller's MPLBACKEND (`make test` sets Agg,
# under which figures are drawn but never shown, so a page would have none).
INLINE_BACKEND = "module://matplotlib_inline.backend_inline"

BOOK_CSS = """
<style>
  .book-nav { position: sticky; top: 0; z-index: 10; background: #f6f8fa; border-bottom: 1px solid #d0d7de;
              padding: 0.5em 1em; font-family: system-ui, sans-serif; font-size: 14px; }
  .book-nav a { margin-right: 1.2em; }
  .book-nav .book-meta { float: right; color: #57606a; }
  .book-banner { margin: 1em; padding: 0.8em 1em; border: 1px solid #cf222e; background: #ffebe9;
                 font-family: system-ui, sans-serif; }
  .book-page { max-width: 1200px; margin: 0 auto; padding: 1em 2em; }
  .book-page table { margin: 1em 0; }
</style>
"""


@dataclass
class Chapter:
    """One chapter of the build: where it came from, its page, and how its execution went."""

    source: str  # the notebook's file name, e.g. 00_data_tour.ipynb
    page: str  # its page in the site, e.g. 00_data_tour.html
    title: str  # the notebook's first heading
    status: str  # "ok", "failed", "timed out" or "not executed"
    seconds: float  # execution wall time
    profile: str  # the CUTSWAP_PROFILE it ran under ("" when not executed)
    built: str  # when, ISO 8601 to the second
    error: str = ""  # the first line of the error, when it failed


def format_seconds(seconds: float) -> str:
    """``75.2`` -> ``'1 min 15 s'``, ``3600`` -> ``'1 h 00 min'``: the way the README writes times."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def chapter_sources(folder: Path) -> list[Path]:
    """The course's chapters in order: ``NN_slug.ipynb`` and ``NNb_slug.ipynb`` (e.g. 00b) in ``folder``."""
    return sorted({*folder.glob("[0-9][0-9]_*.ipynb"), *folder.glob("[0-9][0-9][a-z]_*.ipynb")})


def notebook_title(nb) -> str:
    """The text of the notebook's first Markdown heading (its title), else empty."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            match = re.search(r"^#{1,6}\s+(.+?)\s*$", cell.source, re.MULTILINE)
            if match:
                return match.group(1)
    return ""


def read_notebook(path: Path):
    """The notebook at ``path``, in memory; a cell without an id (nbformat 4.5 wants one) gets one there."""
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        cell.setdefault("id", uuid.uuid4().hex[:8])
    return nb


def write_text(path: Path, text: str) -> None:
    """Write one page; a build that stops halfway is simply run again, so plain writes do."""
    path.write_text(text, encoding="utf-8")


def execute_notebook(nb, cwd: Path, profile: str, timeout: float) -> tuple[str, float, str]:
    """Run every cell of ``nb`` in place (outputs land in ``nb``, never on disk) in a fresh kernel.

    The kernel starts in ``cwd`` with ``CUTSWAP_PROFILE=profile`` and the inline Matplotlib backend.
    ``timeout`` bounds the whole notebook, not one cell: each cell may use what is left of it.
    Returns ``(status, seconds, error)``; on a failure ``nb`` holds the outputs up to the failing cell.
    """
    env = dict(os.environ, **{PROFILE_ENV: profile, "MPLBACKEND": INLINE_BACKEND})
    start = time.monotonic()
    deadline = start + timeout
    client = NotebookClient(
        nb,
        kernel_name=nb.metadata.get("kernelspec", {}).get("name", "python3"),
        resources={"metadata": {"path": str(cwd)}},
        # nbclient reads 0 as "no limit", so what is left is rounded up and never below one second.
        timeout_func=lambda cell: max(1, math.ceil(deadline - time.monotonic())),
    )
    try:
        client.execute(env=env)
    except CellTimeoutError:
        return "timed out", time.monotonic() - start, f"stopped after the notebook's {format_seconds(timeout)}"
    except (CellExecutionError, DeadKernelError) as error:
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(error))  # the traceback's terminal colours
        lines = [line for line in text.splitlines() if line.strip()]
        return "failed", time.monotonic() - start, lines[-1] if lines else type(error).__name__
    return "ok", time.monotonic() - start, ""


def data_uri(path: Path) -> str:
    """The file at ``path`` as a ``data:`` URI, so that a page carries its images with it."""
    mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


_ATTRIBUTE = re.compile(r'\b(href|src)="([^"]*)"')
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def rewrite_links(page_html: str, base: Path, pages: dict[Path, str], repo: Path) -> str:
    """Point the relative ``href`` / ``src`` of ``page_html`` (written in folder ``base``) at the site.

    A target that is one of ``pages`` (source file -> page name) becomes that page, its ``#anchor`` kept;
    a local image becomes a ``data:`` URI; another file or folder of ``repo`` becomes its GitHub address.
    Absolute URLs, anchors and targets outside ``repo`` stay as they are.
    """
    repo = repo.resolve()

    def rewrite(match: re.Match) -> str:
        attribute, url = match.group(1), html.unescape(match.group(2))
        if not url or url.startswith(("#", "/")) or _SCHEME.match(url):
            return match.group(0)
        path, hash_sign, anchor = url.partition("#")
        target = (base / unquote(path.partition("?")[0])).resolve()
        if target in pages:
            new = pages[target] + hash_sign + anchor
        elif attribute == "src" and target.is_file():
            new = data_uri(target)
        elif target.exists() and target.is_relative_to(repo):
            kind = "tree" if target.is_dir() else "blob"
            new = f"{source_address()}/{kind}/{source_ref()}/{target.relative_to(repo).as_posix()}" + hash_sign + anchor
        else:
            return match.group(0)
        return f'{attribute}="{html.escape(new, quote=True)}"'

    return _ATTRIBUTE.sub(rewrite, page_html)


def markdown_section(text: str, heading: str) -> str:
    """The part of Markdown ``text`` from the line ``heading`` to the next heading of the same level."""
    level = heading.split(" ", 1)[0]
    lines = text.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == heading)
    except StopIteration:
        raise ValueError(f"no section {heading!r} in the Markdown") from None
    end = next((i for i in range(start + 1, len(lines))
                if lines[i].startswith(level + " ")), len(lines))
    return "\n".join(lines[start:end]) + "\n"


def navigation(chapters: list[Chapter], current: int | None, meta: str = "") -> str:
    """The bar at the top of every page: contents, previous and next chapter, the README, and ``meta``."""
    links = ['<a href="index.html">Contents</a>']
    if current is not None and current > 0:
        links.append(f'<a href="{chapters[current - 1].page}">&larr; {html.escape(chapters[current - 1].title)}</a>')
    if current is not None and current + 1 < len(chapters):
        links.append(f'<a href="{chapters[current + 1].page}">{html.escape(chapters[current + 1].title)} &rarr;</a>')
    links.append('<a href="readme.html">README</a>')
    meta_html = f'<span class="book-meta">{html.escape(meta)}</span>' if meta else ""
    return f'<nav class="book-nav">{meta_html}{"".join(links)}</nav>\n'


def chapter_meta(chapter: Chapter) -> str:
    """What the bar says about how a chapter's outputs were made."""
    if chapter.status == "not executed":
        return "not executed: the committed notebook, without outputs"
    return (f"executed with profile {chapter.profile} in {format_seconds(chapter.seconds)} "
            f"({chapter.status}), {chapter.built}")


def _insert_after_body(page_html: str, insert: str) -> str:
    """``page_html`` with ``insert`` right after its ``<body ...>`` tag and BOOK_CSS before ``</head>``."""
    page_html = page_html.replace("</head>", BOOK_CSS + "</head>", 1)
    match = re.search(r"<body[^>]*>", page_html)
    if match is None:
        raise ValueError("nbconvert's page has no <body> tag")
    return page_html[:match.end()] + "\n" + insert + page_html[match.end():]


def render_chapter(nb, exporter: HTMLExporter, chapter: Chapter, nav: str, base: Path,
                   pages: dict[Path, str], repo: Path) -> str:
    """The HTML page of an executed (or not) notebook: nbconvert's, with the bar and its links rewritten."""
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": chapter.title or chapter.source,
                                                                      "path": str(base)}})
    banner = ""
    if chapter.status in ("failed", "timed out"):
        banner = (f'<div class="book-banner">This chapter {chapter.status} during the build: '
                  f'{html.escape(chapter.error)}. The outputs stop there.</div>\n')
    return rewrite_links(_insert_after_body(body, nav + banner), base, pages, repo)


def markdown_page(exporter: HTMLExporter, title: str, parts: list[tuple[str, Path]], nav: str,
                  pages: dict[Path, str], repo: Path, extra_html: str = "") -> str:
    """A page of Markdown ``parts`` (text, the folder its links are relative to), styled as the chapters.

    The page shell (head and styles) is nbconvert's for an empty notebook, so that the index reads like
    the chapters; each part is converted with nbconvert's own Markdown filter, then its links rewritten.
    """
    shell, _ = exporter.from_notebook_node(nbformat.v4.new_notebook(), resources={"metadata": {"name": title}})
    head = shell.partition("<body")[0]
    content = "\n".join(rewrite_links(markdown2html_mistune(text), base, pages, repo) for text, base in parts)
    page = (f'{head}<body class="jp-Notebook">\n{nav}<main class="book-page">'
            f'<div class="jp-RenderedHTMLCommon jp-RenderedMarkdown jp-MarkdownOutput">\n{content}\n{extra_html}'
            f"</div></main>\n</body>\n</html>\n")
    return page.replace("</head>", BOOK_CSS + "</head>", 1)


def build_table(chapters: list[Chapter]) -> str:
    """The index's table of this build: one row per chapter with its status and execution time."""
    rows = []
    for chapter in chapters:
        time_cell = format_seconds(chapter.seconds) if chapter.status != "not executed" else ""
        rows.append(f'<tr><td><a href="{chapter.page}">{html.escape(chapter.title or chapter.source)}</a></td>'
                    f"<td>{html.escape(chapter.status)}</td><td>{html.escape(chapter.profile)}</td>"
                    f"<td>{time_cell}</td><td>{html.escape(chapter.built)}</td></tr>")
    return ("<h2>This build</h2>\n<p>Each chapter below was executed once for this site "
            "(profile, wall time, when); the committed notebooks carry no outputs.</p>\n"
            "<table><thead><tr><th>chapter</th><th>status</th><th>profile</th><th>time</th><th>built</th></tr>"
            "</thead><tbody>\n" + "\n".join(rows) + "\n</tbody></table>\n")


def load_manifest(out: Path) -> dict[str, Chapter]:
    """The chapters of an earlier build in ``out`` by page name (empty when none)."""
    path = out / MANIFEST
    if not path.exists():
        return {}
    return {entry["page"]: Chapter(**entry) for entry in json.loads(path.read_text())["chapters"]}


def select(sources: list[Path], only: list[str] | None) -> list[Path]:
    """The chapters named by ``only`` (a number such as ``03`` or a file stem), all of them when None."""
    if not only:
        return sources
    chosen = [s for s in sources if any(s.stem == name or s.stem.split("_", 1)[0] == name for name in only)]
    unknown = [name for name in only if not any(s.stem == name or s.stem.split("_", 1)[0] == name for s in sources)]
    if unknown:
        raise ValueError(f"no chapter {', '.join(unknown)} in {[s.stem for s in sources]}")
    return chosen


def build(out: Path, *, notebooks: Path = NOTEBOOKS, index_md: Path | None = None, readme_md: Path | None = None,
          profile: str = "default", execute: bool = True, timeout: float = 3600.0,
          only: list[str] | None = None, log=None) -> list[Chapter]:
    """Execute and render the chapters in ``notebooks`` into the site folder ``out``; return every chapter.

    ``index_md`` (default ``notebooks/README.md``) becomes ``index.html``; ``readme_md`` (default the
    README next to the notebooks' folder, whose folder is taken for the repository's root) becomes
    ``readme.html`` and lends its results section to the index. ``only`` rebuilds some chapters and
    keeps the others' pages and rows from the last build.
    ``log`` takes one progress line (default: print it).
    """
    log = log or (lambda message: print(message, flush=True))
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {sorted(PROFILES)}")
    notebooks = notebooks.resolve()
    index_md = (index_md or notebooks / "README.md").resolve()
    readme_md = (readme_md or notebooks.parent / "README.md").resolve()
    repo = readme_md.parent  # the repository: links to its other files go to GitHub
    sources = chapter_sources(notebooks)
    if not sources:
        raise ValueError(f"no chapters (NN_slug.ipynb) in {notebooks}")
    chosen = select(sources, only)
    out.mkdir(parents=True, exist_ok=True)

    pages = {source: source.stem + ".html" for source in sources}
    pages[index_md] = "index.html"
    pages[readme_md] = "readme.html"
    earlier = load_manifest(out)
    loaded = {source: read_notebook(source) for source in sources}
    chapters = []
    for source in sources:
        chapter = earlier.get(source.stem + ".html")
        if chapter is None or not (out / chapter.page).exists():
            chapter = Chapter(source.name, source.stem + ".html", "", "not executed", 0.0, "", "")
        chapter.title = notebook_title(loaded[source]) or source.stem  # the bars name every chapter's title
        chapters.append(chapter)
    exporter = HTMLExporter(template_name="lab")

    readme_text = readme_md.read_text(encoding="utf-8")
    index_parts = [(index_md.read_text(encoding="utf-8"), index_md.parent)]
    if RESULTS_HEADING in readme_text.splitlines():
        index_parts.append((markdown_section(readme_text, RESULTS_HEADING), readme_md.parent))

    def write_contents() -> None:  # after every chapter, so that an interrupted build leaves a site
        write_text(out / "index.html", markdown_page(
            exporter, "CutSwap notebooks: the course", index_parts, navigation(chapters, None), pages, repo,
            extra_html=build_table(chapters)))
        write_text(out / "readme.html", markdown_page(
            exporter, "CutSwap notebooks: README", [(readme_text, repo)], navigation(chapters, None), pages, repo))
        write_text(out / MANIFEST, json.dumps({"chapters": [asdict(c) for c in chapters]}, indent=1) + "\n")

    def write_page(index: int, nb) -> None:
        chapter = chapters[index]
        nav = navigation(chapters, index, chapter_meta(chapter))
        write_text(out / chapter.page, render_chapter(nb, exporter, chapter, nav, notebooks, pages, repo))

    failures = 0
    for number, source in enumerate(chosen, start=1):
        index = sources.index(source)
        nb = loaded[source]
        log(f"[{number}/{len(chosen)}] {source.name}: {'executing' if execute else 'rendering'}"
            + (f" (profile {profile}, timeout {format_seconds(timeout)})" if execute else ""))
        status, seconds, error = "not executed", 0.0, ""
        if execute:
            status, seconds, error = execute_notebook(nb, notebooks, profile, timeout)
        chapters[index] = Chapter(source.name, source.stem + ".html", chapters[index].title, status, seconds,
                                  profile if execute else "", datetime.datetime.now().isoformat(timespec="seconds"),
                                  error)
        failures += status in ("failed", "timed out")
        write_page(index, nb)
        write_contents()
        log(f"[{number}/{len(chosen)}] {source.name}: "
            + (f"{status} in {format_seconds(seconds)}" if execute else "rendered")
            + (f": {error}" if error else ""))
    for index, source in enumerate(sources):  # with --only on a new folder, the others as committed
        if not (out / chapters[index].page).exists():
            write_page(index, loaded[source])
    write_contents()

    log(f"site written to {out} ({len(chosen)} chapter(s) built, {failures} failed or timed out)")
    return chapters


def main(argv: list[str] | None = None) -> int:
    """The command line: parse, build, and exit 1 when a chapter failed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="default", choices=sorted(PROFILES),
                        help="the CUTSWAP_PROFILE the notebooks run under (default: default)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"the site folder (default: {DEFAULT_OUT})")
    parser.add_argument("--timeout", type=float, default=3600.0,
                        help="seconds one notebook may run, all its cells together (default: 3600)")
    parser.add_argument("--only", nargs="+", metavar="NN",
                        help="rebuild only these chapters (number or file stem); the others' pages stay")
    parser.add_argument("--no-execute", dest="execute", action="store_false",
                        help="render the committed notebooks without running them")
    args = parser.parse_args(argv)
    if args.timeout <= 0:
        parser.error(f"--timeout must be positive, got {args.timeout}")
    start = time.monotonic()
    try:
        chapters = build(args.out, profile=args.profile, execute=args.execute, timeout=args.timeout, only=args.only)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"done in {format_seconds(time.monotonic() - start)}; open {args.out / 'index.html'}")
    return 1 if any(c.status in ("failed", "timed out") for c in chapters) else 0


if __name__ == "__main__":
    sys.exit(main())
