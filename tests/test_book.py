"""tools/book.py and tools/book_check.py (`make book`, `make book-check`) on a tiny synthetic course.

The real course takes minutes to hours to execute; these tests build a site from two small notebooks
and two READMEs made here: the index links every chapter's page (no ``.ipynb`` left), a figure output
and a local Markdown image are embedded, a chapter runs under the profile it is given, and a failing or
overlong chapter is reported, not hidden. Where Chromium is installed, the browser check runs on the
tiny site and on a page with a broken image, which it must catch.
"""

import base64
import io
import re
from pathlib import Path

import nbformat
import pytest
from conftest import load_tool
from PIL import Image

book = load_tool("book")
book_check = load_tool("book_check")


def png_bytes(size=(12, 8), colour=(200, 40, 40)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


FIGURE = png_bytes()


def make_course(root: Path, code_cells=None) -> Path:
    """A repository with README.md (a results section), notebooks/README.md (the index) and two chapters.

    Chapter 00 has a figure output already (as executed) and links to chapter 01 and the README;
    ``code_cells`` (chapter number -> source) adds a cell to run.
    """
    notebooks = root / "notebooks"
    (notebooks / "figures").mkdir(parents=True)
    (notebooks / "figures" / "dot.png").write_bytes(png_bytes((4, 4), (0, 0, 255)))
    (root / "lib").mkdir()
    (root / "lib" / "thing.py").write_text("x = 1\n")
    (root / "README.md").write_text(
        "# Tiny course\n\nSee [the notebooks](notebooks/README.md) and [the code](lib/thing.py).\n\n"
        "## Results on the toy dataset\n\n| category | AUROC |\n|---|---|\n| disc | 0.987 |\n\n"
        "## Afterwards\n\nNot on the index.\n")
    (notebooks / "README.md").write_text(
        "# Notebooks\n\n| # | notebook |\n|---|---|\n| 00 | [First](00_first.ipynb) |\n"
        "| 01 | [Second](01_second.ipynb#part) |\n\n![a dot](figures/dot.png)\n")
    stored = nbformat.v4.new_output("display_data", data={"image/png": base64.b64encode(FIGURE).decode(),
                                                          "text/plain": "<Figure>"})
    figure = nbformat.v4.new_code_cell("pass  # its figure was stored", execution_count=1, outputs=[stored])
    cells = {
        0: [nbformat.v4.new_markdown_cell("# 00 · First\n\nOn to [the second](01_second.ipynb) "
                                          "or back to [the README](../README.md)."), figure],
        1: [nbformat.v4.new_markdown_cell("# 01 · Second\n\n## Part")],
    }
    for number, name in [(0, "00_first"), (1, "01_second")]:
        extra = [nbformat.v4.new_code_cell(code_cells[number])] if code_cells and number in code_cells else []
        nb = nbformat.v4.new_notebook(cells=cells[number] + extra)
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(nb, notebooks / f"{name}.ipynb")
    return notebooks


def relative_links(page: str) -> list[str]:
    return [link for link in re.findall(r'href="([^"]*)"', page)
            if link and not link.startswith("#") and not re.match(r"^[a-z]+:", link)]


def test_the_index_links_every_chapter_page_and_the_figures_are_embedded(tmp_path):
    notebooks = make_course(tmp_path / "repo")
    before = {p.name: p.read_bytes() for p in notebooks.glob("*.ipynb")}
    out = tmp_path / "site"
    chapters = book.build(out, notebooks=notebooks, execute=False, log=lambda message: None)

    assert [c.page for c in chapters] == ["00_first.html", "01_second.html"]
    assert [c.title for c in chapters] == ["00 · First", "01 · Second"]
    index = (out / "index.html").read_text()
    links = relative_links(index)
    assert {"00_first.html", "01_second.html#part", "readme.html"} <= set(links)
    assert not [link for link in links if ".ipynb" in link or ".md" in link]
    assert all((out / link.partition("#")[0]).is_file() for link in links)
    assert "0.987" in index and "Not on the index" not in index  # the README's results section, only it
    assert "data:image/png;base64," in index  # the index's Markdown image, embedded

    first = (out / "00_first.html").read_text()
    assert base64.b64encode(FIGURE).decode() in first  # the figure output travels inside the page
    assert 'href="01_second.html"' in first and 'href="readme.html"' in first
    assert all((out / link.partition("#")[0]).is_file() for link in relative_links(first))
    readme = (out / "readme.html").read_text()
    assert 'href="index.html"' in readme
    assert 'href="https://github.com/cutswap-course/cutswap-notebooks/blob/main/lib/thing.py"' in readme
    assert {p.name: p.read_bytes() for p in notebooks.glob("*.ipynb")} == before  # committed notebooks untouched


@pytest.mark.slow
def test_chapters_run_under_the_profile_and_failures_and_timeouts_are_reported(tmp_path):
    notebooks = make_course(tmp_path / "repo", code_cells={
        0: "import os, matplotlib.pyplot as plt\nprint('profile', os.environ['CUTSWAP_PROFILE'])\n"
           "plt.plot([0, 1], [1, 0]); plt.show()",
        1: "raise ValueError('the chapter broke here')",
    })
    out = tmp_path / "site"
    chapters = book.build(out, notebooks=notebooks, profile="fast", timeout=120, log=lambda message: None)
    assert [(c.status, c.profile) for c in chapters] == [("ok", "fast"), ("failed", "fast")]
    assert "the chapter broke here" in chapters[1].error
    first = (out / "00_first.html").read_text()
    assert "profile fast" in first
    assert "data:image/png;base64," in first  # the figure drawn just now (execution cleared the stored one)
    assert base64.b64encode(FIGURE).decode() not in first
    assert "book-banner" in (out / "01_second.html").read_text()

    (notebooks / "01_second.ipynb").write_text(nbformat.writes(nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# 01 · Second"), nbformat.v4.new_code_cell("import time; time.sleep(60)")])))
    chapters = book.build(out, notebooks=notebooks, profile="fast", timeout=3, only=["01"], log=lambda message: None)
    assert [c.status for c in chapters] == ["ok", "timed out"]  # chapter 00 kept from the first build
    assert chapters[1].seconds < 30
    assert "timed out" in (out / "index.html").read_text()


def test_the_check_says_in_one_line_when_there_is_no_site(tmp_path, capsys):
    assert book_check.main(["--site", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "make book" in err


@pytest.mark.skipif(book_check.find_chromium() is None,
                    reason="no Chromium on PATH (apt-get install -y chromium); the browser check is skipped")
def test_chromium_sees_the_figures_and_catches_a_broken_image(tmp_path):
    out = tmp_path / "site"
    book.build(out, notebooks=make_course(tmp_path / "repo"), execute=False, log=lambda message: None)
    chromium = book_check.find_chromium()
    results = book_check.check_site(out, ["index.html", "00_first.html"], chromium, shots=tmp_path / "shots",
                                    log=lambda message: None)
    assert [(r.page, r.how, r.problems) for r in results] == [
        ("index.html", "served", []), ("index.html", "from disk", []),
        ("00_first.html", "served", []), ("00_first.html", "from disk", [])]
    assert all(image["width"] == 12 for image in results[2].local_images)
    assert (tmp_path / "shots" / "00_first.png").stat().st_size > 1000

    page = (out / "00_first.html").read_text()
    (out / "broken.html").write_text(page.replace(base64.b64encode(FIGURE).decode(), "iVBORw0KGgoAAAAbroken"))
    (out / "empty.html").write_text("<html><head><title>x</title></head><body><p>text, no figure</p></body></html>")
    results = book_check.check_site(out, ["broken.html", "empty.html"], chromium, log=lambda message: None)
    assert all("1 broken image(s)" in r.problems[0] for r in results[:2])
    assert all(r.problems == ["no figure: the page shows no image of its own"] for r in results[2:])
