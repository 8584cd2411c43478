"""Colab: every badge and setup cell names ``cutswap_lib.SOURCE``, and the setup cell does what it says.

The setup cell is run here as Colab runs it (``colab/run_setup_cell.py`` puts a stand-in
``google.colab`` in place) with ``subprocess.run`` replaced, so nothing is installed: the
tests read the pip command it would run. ``make test-colab`` runs the same cell for real.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import cutswap_lib
from cutswap_lib import SOURCE, colab_url, source_address, source_ref
from cutswap_lib import config

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
SOLUTIONS = sorted((REPO / "notebooks" / "solutions").glob("*.ipynb"))
BADGE = re.compile(r"\[!\[Open In Colab\]\(https://colab\.research\.google\.com/assets/colab-badge\.svg\)\]"
                   r"\((?P<url>[^)\s]+)\)")
# A file or folder link at a ref (GitHub's or Colab's), and an install address at a ref (pip's git+ form).
LINK_REF = re.compile(r"(?:github\.com|colab\.research\.google\.com/github)/(?P<repo>[\w.-]+/[\w.-]+)"
                      r"/(?:blob|tree)/(?P<ref>[^/\s)\"']+)/")
ADDRESS_REF = re.compile(r"https://github\.com/(?P<repo>[\w.-]+/[\w.-]+?)(?:\.git)?@(?P<ref>[\w./-]+)")
SOURCE_LINE = re.compile(r'^SOURCE = "(?P<source>[^"]*)"', re.MULTILINE)


def _load(name: str):
    """A script of ``colab/`` as a module (the folder is not a package)."""
    spec = importlib.util.spec_from_file_location(f"colab_{name}", REPO / "colab" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


runner = _load("run_setup_cell")


def _text(cell: dict) -> str:
    source = cell["source"]
    return source if isinstance(source, str) else "".join(source)


def reference_problems(text: str, where: str, source: str = SOURCE) -> list[str]:
    """Links and install addresses in ``text`` to this course's repository (any owner) at another ref.

    Links to other projects' files stay allowed; a fork's address or another ref does not.
    """
    repo, ref = source_address(source).removeprefix("https://github.com/"), source_ref(source)
    ours = [m for pattern in (LINK_REF, ADDRESS_REF) for m in pattern.finditer(text)
            if m["repo"].split("/")[1] == repo.split("/")[1]]
    return [f"{where}: names {m['repo']} at {m['ref']!r}, not {repo} at {ref!r} ({m[0]})"
            for m in ours if (m["repo"], m["ref"]) != (repo, ref)]


def notebook_problems(path: Path, setup_cell: str, source: str = SOURCE) -> list[str]:
    """What in notebook ``path`` disagrees with ``source``: its badge, its setup cell, any other link."""
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    problems = []
    badges = [m["url"] for m in BADGE.finditer(_text(cells[0]))] if cells[0]["cell_type"] == "markdown" else []
    where = f"{path.parent.name}/{path.name}" if path.parent.name == "solutions" else path.name
    expected = colab_url(f"notebooks/{where}", source)
    if badges != [expected]:
        problems.append(f"{path.name} cell 0: Colab badge(s) {badges}, expected one badge opening {expected}")
    if cells[1]["cell_type"] != "code" or _text(cells[1]) != setup_cell.rstrip("\n"):
        problems.append(f"{path.name} cell 1: not the setup cell of colab/setup_cell.py "
                        f"(run python colab/sync_notebooks.py)")
    for i, cell in enumerate(cells):
        problems += reference_problems(_text(cell), f"{path.name} cell {i}", source)
    return problems


def readme_problems(path: Path, notebooks: list[Path], source: str = SOURCE) -> list[str]:
    """Badges of ``notebooks/README.md``: one per notebook, each opening that notebook at ``source``."""
    text = path.read_text(encoding="utf-8")
    urls = [m["url"] for m in BADGE.finditer(text)]
    expected = [colab_url(f"notebooks/{p.name}", source) for p in notebooks]
    problems = [f"{path.name}: badge {url} opens no notebook at {source}" for url in urls if url not in expected]
    problems += [f"{path.name}: no badge opens {url}" for url in expected if url not in urls]
    return problems + reference_problems(text, path.name, source)


def all_problems(folder: Path, source: str = SOURCE) -> list[str]:
    """Everything in a notebooks folder (its ``*.ipynb`` and ``README.md``) that disagrees with ``source``."""
    setup_cell = (REPO / "colab" / "setup_cell.py").read_text(encoding="utf-8")
    notebooks = sorted(folder.glob("*.ipynb"))
    problems = [p for nb in notebooks for p in notebook_problems(nb, setup_cell, source)]
    return problems + readme_problems(folder / "README.md", notebooks, source)


# ------------------------------------------------------------------ one reference, everywhere

def test_source_is_one_address_and_ref():
    assert SOURCE == f"{source_address()}@{source_ref()}"
    assert source_address() == "https://github.com/cutswap-course/cutswap-notebooks"
    assert source_ref() == "main"
    assert colab_url("notebooks/00_data_tour.ipynb") == ("https://colab.research.google.com/github/"
                                                         "cutswap-course/cutswap-notebooks/blob/main/"
                                                         "notebooks/00_data_tour.ipynb")
    with pytest.raises(ValueError, match="GitHub"):
        colab_url("x.ipynb", "https://gitlab.com/a/b@main")


def test_setup_cell_template_names_the_source():
    text = (REPO / "colab" / "setup_cell.py").read_text(encoding="utf-8")
    assert [m["source"] for m in SOURCE_LINE.finditer(text)] == [SOURCE]
    compile(text, "colab/setup_cell.py", "exec")


def test_every_badge_and_setup_cell_agrees_with_the_source():
    assert len(NOTEBOOKS) == 8  # 00, 00b, 01-06
    assert all_problems(REPO / "notebooks") == []


def test_every_solutions_notebook_has_its_own_badge_and_the_setup_cell():
    chapters = {p.name.split("_")[0] for p in NOTEBOOKS}
    assert SOLUTIONS and {p.name.split("_")[0] for p in SOLUTIONS} <= chapters
    setup_cell = (REPO / "colab" / "setup_cell.py").read_text(encoding="utf-8")
    assert [p for nb in SOLUTIONS for p in notebook_problems(nb, setup_cell)] == []
    problems = notebook_problems(SOLUTIONS[0], setup_cell, "https://github.com/cutswap-course/cutswap-notebooks@v0.2.0")
    assert any("cell 0: Colab badge" in p for p in problems) and any("cell 1:" in p for p in problems)


def _copy_notebooks(tmp_path: Path) -> Path:
    folder = tmp_path / "notebooks"
    folder.mkdir()
    for path in [*NOTEBOOKS, REPO / "notebooks" / "README.md"]:
        shutil.copy(path, folder / path.name)
    return folder


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


@pytest.mark.parametrize("what, file, old, new", [
    ("badge", "03_backbone_training.ipynb", "/blob/main/", "/blob/v0.1.0/"),
    ("install cell", "05_swin_bagging.ipynb", "cutswap-notebooks@main", "cutswap-notebooks@v0.1.0"),
    ("README badge", "README.md", "/blob/main/notebooks/06", "/blob/dev/notebooks/06"),
])
def test_the_check_fails_on_a_copy_naming_another_ref(tmp_path, what, file, old, new):
    folder = _copy_notebooks(tmp_path)
    assert all_problems(folder) == []
    _edit(folder / file, old, new)
    problems = all_problems(folder)
    assert problems and all(p.startswith(file) for p in problems), (what, problems)


def test_the_check_fails_when_the_source_changes_but_the_notebooks_do_not():
    problems = all_problems(REPO / "notebooks", "https://github.com/cutswap-course/cutswap-notebooks@v0.2.0")
    for path in NOTEBOOKS:
        assert any(p.startswith(f"{path.name} cell 0: Colab badge") for p in problems), path.name
        assert any(p.startswith(f"{path.name} cell 1:") for p in problems), path.name
    assert any(p.startswith("README.md: no badge opens") for p in problems)


def test_links_to_other_projects_are_not_flagged():
    text = "see https://github.com/jupyter/nbclient/blob/v0.9/x.py and git+https://github.com/a/b@dev"
    assert reference_problems(text, "x") == []
    fork = "git+https://github.com/someone/cutswap-notebooks@main"
    assert reference_problems(fork, "x") and "someone/cutswap-notebooks" in reference_problems(fork, "x")[0]


# ------------------------------------------------------------------ what the setup cell does

SETUP = runner.setup_source(NOTEBOOKS[0])


def test_outside_colab_the_cell_installs_nothing(monkeypatch, capsys):
    def no_subprocess(*args, **kwargs):
        raise AssertionError(f"the setup cell ran {args} outside Colab")
    monkeypatch.setattr(subprocess, "run", no_subprocess)
    start = time.perf_counter()
    namespace = {}
    exec(compile(SETUP, "<setup cell>", "exec"), namespace)
    assert time.perf_counter() - start < 5
    assert namespace["IN_COLAB"] is False and namespace["USE_DRIVE"] is False
    out = capsys.readouterr().out
    assert f"cutswap_lib {cutswap_lib.__version__}" in out and "torch " in out and "device: " in out


def _pip_calls(monkeypatch) -> list:
    """Replace ``subprocess.run`` with a recorder; returns the list it appends each command to."""
    commands = []
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kwargs: commands.append((cmd, kwargs)))
    return commands


def _not_installed(monkeypatch) -> None:
    """Make the cell believe cutswap-lib is not installed yet (everything else stays as it is)."""
    real = importlib.metadata.version

    def version(name):
        if name == "cutswap-lib":
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)
    monkeypatch.setattr(importlib.metadata, "version", version)


def test_on_colab_an_installed_package_is_not_installed_again(monkeypatch, capsys):
    commands, calls = _pip_calls(monkeypatch), []
    runner.run_cell(SETUP, calls)
    assert commands == [] and calls == [("enable_custom_widget_manager",)]
    assert "google.colab" not in sys.modules   # the stand-in is gone again
    assert "device: " in capsys.readouterr().out


def _pins(command: list) -> dict[str, str]:
    """The constraints file the cell passed to pip, as ``{name: version}`` (the file is removed)."""
    path = Path(command[command.index("-c") + 1])
    pins = path.read_text().split()
    path.unlink()
    return dict(line.split("==") for line in pins)


def test_on_colab_the_cell_installs_the_source_and_keeps_colab_s_packages(monkeypatch, tmp_path):
    commands = _pip_calls(monkeypatch)
    _not_installed(monkeypatch)
    monkeypatch.chdir(tmp_path)                  # not inside a clone: install from GitHub
    runner.run_cell(SETUP)
    [(command, kwargs)] = commands
    assert command[:4] == [sys.executable, "-m", "pip", "install"] and kwargs == {"check": True}
    assert command[-1] == f"cutswap-lib[colab] @ git+{SOURCE}"
    pins = _pins(command)
    for name in ("torch", "torchvision", "numpy", "scipy", "scikit-learn"):
        assert pins[name] == importlib.metadata.version(name)   # installed ones are kept, never replaced
    assert not any(arg.startswith(("torch", "torchvision", "--upgrade", "-U", "--force")) for arg in command)


def test_on_colab_inside_a_clone_the_cell_installs_the_clone(monkeypatch):
    commands = _pip_calls(monkeypatch)
    _not_installed(monkeypatch)
    monkeypatch.chdir(REPO / "notebooks")        # a notebook opened from a clone
    monkeypatch.setattr(sys, "path", list(sys.path))
    runner.run_cell(SETUP)
    [(command, _)] = commands
    assert command[-2:] == ["-e", f"{REPO}[colab]"] and "torch" in _pins(command)
    assert sys.path[0] == str(REPO)


def test_use_drive_mounts_drive_and_moves_every_folder_there(monkeypatch):
    monkeypatch.setenv("CUTSWAP_HOME", "")       # empty = unset; monkeypatch restores the variable afterwards
    _pip_calls(monkeypatch)
    source = SETUP.replace("USE_DRIVE = False", "USE_DRIVE = True")
    assert source != SETUP
    calls = []
    runner.run_cell(source, calls)
    home = Path("/content/drive/MyDrive/cutswap")
    assert ("mount", "/content/drive") in calls
    assert config.data_root() == home / "data" and config.results_root() == home / "results"


def test_the_cell_never_asks_for_input():
    assert "input(" not in SETUP and "getpass" not in SETUP
