"""Write every notebook's Colab badge and setup cell from ``cutswap_lib.SOURCE``.

Run it after changing ``SOURCE`` in ``cutswap_lib/__init__.py`` (a release tag, say) or the
setup cell in ``colab/setup_cell.py``:

    python colab/sync_notebooks.py

It changes only the badge address in each notebook's first cell, the whole second cell (the
setup cell, copied from ``colab/setup_cell.py``), the badge column of ``notebooks/README.md``
and the ``SOURCE = ...`` line of ``colab/setup_cell.py``. ``tests/test_colab_setup.py`` fails
until all of them agree with the constant.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cutswap_lib import SOURCE, colab_url  # noqa: E402

SETUP_CELL = REPO / "colab" / "setup_cell.py"
BADGE_URL = re.compile(r"https://colab\.research\.google\.com/github/[^)\s]+?/notebooks/(?P<name>(?:solutions/)?[\w.-]+\.ipynb)")
SOURCE_LINE = re.compile(r'^SOURCE = "[^"]*"', re.MULTILINE)


def setup_cell(source: str = SOURCE) -> str:
    """The setup cell's text (``colab/setup_cell.py``) with ``source`` as its ``SOURCE``."""
    text = SETUP_CELL.read_text(encoding="utf-8")
    if len(SOURCE_LINE.findall(text)) != 1:
        raise ValueError(f"{SETUP_CELL}: expected exactly one line starting 'SOURCE = \"...\"'")
    return SOURCE_LINE.sub(f'SOURCE = "{source}"', text)


def badges(text: str, source: str = SOURCE) -> str:
    """``text`` with every Colab badge address pointing at its notebook under ``source``."""
    return BADGE_URL.sub(lambda m: colab_url(f"notebooks/{m['name']}", source), text)


def _lines(text: str) -> list[str]:
    return text.splitlines(keepends=True)


def sync_notebook(path: Path, cell: str, source: str = SOURCE) -> bool:
    """Rewrite the badge of cell 0 and the whole setup cell 1 of ``path``; True when something changed."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    title, setup = nb["cells"][0], nb["cells"][1]
    if title["cell_type"] != "markdown" or not BADGE_URL.search("".join(title["source"])):
        raise ValueError(f"{path}: cell 0 should be the title with an 'Open in Colab' badge")
    if setup["cell_type"] != "code":
        raise ValueError(f"{path}: cell 1 should be the setup code cell")
    title["source"] = _lines(badges("".join(title["source"]), source))
    setup["source"] = _lines(cell.rstrip("\n"))
    text = json.dumps(nb, indent=1, ensure_ascii=False) + "\n"
    changed = text != path.read_text(encoding="utf-8")
    if changed:
        path.write_text(text, encoding="utf-8")
    return changed


def main() -> int:
    cell = setup_cell()
    if cell != SETUP_CELL.read_text(encoding="utf-8"):
        SETUP_CELL.write_text(cell, encoding="utf-8")
        print(f"updated {SETUP_CELL.relative_to(REPO)}")
    chapters = sorted((REPO / "notebooks").glob("*.ipynb"))
    for path in chapters + sorted((REPO / "notebooks" / "solutions").glob("*.ipynb")):
        if sync_notebook(path, cell):
            print(f"updated {path.relative_to(REPO)}")
    readme = REPO / "notebooks" / "README.md"
    text = readme.read_text(encoding="utf-8")
    if badges(text) != text:
        readme.write_text(badges(text), encoding="utf-8")
        print(f"updated {readme.relative_to(REPO)}")
    print(f"badges and setup cells name {SOURCE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
