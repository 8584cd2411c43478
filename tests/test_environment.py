"""The dependency files agree: pyproject.toml, environment.yml and the recorded Colab versions.

* ``environment.yml`` (conda) lists the same packages as ``pyproject.toml`` (dependencies and the
  ``notebooks`` / ``dev`` extras) with the same bounds, from conda-forge only;
* ``.ci/colab-versions.txt`` pins Colab's versions, each inside the ranges ``pyproject.toml``
  allows, and the notebooks' setup cell keeps every one of them when it installs the course;
* inside ``.venv-colab`` (``make test-colab``) the recorded versions are the installed ones.
"""

from __future__ import annotations

import importlib.metadata
import re
import sys
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

REPO = Path(__file__).resolve().parents[1]
CONDA_NAMES = {"pytorch": "torch"}  # conda-forge name -> PyPI name, where they differ
COLAB_VERSIONS = REPO / ".ci" / "colab-versions.txt"


def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def pyproject_requirements(extras=("notebooks", "dev")) -> dict[str, SpecifierSet]:
    """``{name: specifiers}`` of the dependencies and ``extras`` (the package's own extras left out)."""
    project = pyproject()
    lines = [*project["dependencies"], *(r for e in extras for r in project["optional-dependencies"][e])]
    reqs = [Requirement(line) for line in lines]
    return {canonicalize_name(r.name): r.specifier for r in reqs if canonicalize_name(r.name) != "cutswap-lib"}


def environment() -> dict:
    return yaml.safe_load((REPO / "environment.yml").read_text(encoding="utf-8"))


def environment_requirements() -> dict[str, SpecifierSet]:
    """``{PyPI name: specifiers}`` of environment.yml: conda packages (but python, pip) and its pip list."""
    conda, pip = [], []
    for entry in environment()["dependencies"]:
        if isinstance(entry, dict):
            pip += [line for line in entry["pip"] if not line.startswith("-e")]
        elif not re.match(r"(python|pip)\b(?![-\w])", entry):
            conda.append(entry)
    found = {}
    for line in conda + pip:
        req = Requirement(line)
        name = canonicalize_name(CONDA_NAMES.get(req.name, req.name))
        assert name not in found, f"environment.yml lists {name} twice"
        found[name] = req.specifier
    return found


def recorded_colab_versions() -> dict[str, str]:
    """``{name: version}`` from .ci/colab-versions.txt (one ``name==version`` a line, # comments)."""
    pins = {}
    for number, line in enumerate(COLAB_VERSIONS.read_text(encoding="utf-8").splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9][\w.-]*)==(\S+)", line)
        assert match, f"{COLAB_VERSIONS}:{number}: expected name==version, got {line!r}"
        pins[canonicalize_name(match[1])] = match[2]
    return pins


# ------------------------------------------------------------------ environment.yml vs pyproject.toml

def test_environment_uses_conda_forge_only():
    channels = environment()["channels"]
    assert [c for c in channels if c != "nodefaults"] == ["conda-forge"], channels
    assert "pytorch" not in channels


def test_environment_lists_the_pyproject_packages_with_the_same_bounds():
    conda, pip = environment_requirements(), pyproject_requirements()
    assert sorted(conda) == sorted(pip), (f"only in environment.yml: {sorted(set(conda) - set(pip))}; "
                                          f"only in pyproject.toml: {sorted(set(pip) - set(conda))}")
    differ = {name: (str(conda[name]), str(pip[name])) for name in pip if conda[name] != pip[name]}
    assert not differ, f"bounds differ (environment.yml, pyproject.toml): {differ}"


def test_environment_installs_the_package_itself():
    [pip] = [entry["pip"] for entry in environment()["dependencies"] if isinstance(entry, dict)]
    assert "-e ." in pip


def test_the_comparison_notices_a_changed_bound(monkeypatch):
    real = environment()
    changed = {**real, "dependencies": [d.replace("faiss-cpu>=1.9", "faiss-cpu>=1.7.4") if isinstance(d, str)
                                        else d for d in real["dependencies"]]}
    monkeypatch.setattr(sys.modules[__name__], "environment", lambda: changed)
    assert environment_requirements()["faiss-cpu"] != pyproject_requirements()["faiss-cpu"]


# ------------------------------------------------------------------ the bounds that Colab needs

def test_faiss_wheels_import_under_numpy_2():
    assert not pyproject_requirements()["faiss-cpu"].contains("1.8.0")   # 1.8 and older: NumPy 1 only
    assert pyproject_requirements()["faiss-cpu"].contains("1.9.0")


def test_widgets_allow_colab_s_ipywidgets_and_the_current_one():
    spec = pyproject_requirements()["ipywidgets"]
    assert spec.contains("7.7.1") and spec.contains("8.1.9") and not spec.contains("7.6.5")


def test_colab_extra_adds_what_the_setup_cell_promises():
    assert pyproject()["optional-dependencies"]["colab"] == ["ipyevents>=2"]


# ------------------------------------------------------------------ the recorded Colab versions

def test_colab_versions_are_recorded_once_and_well_formed():
    pins = recorded_colab_versions()
    assert {"torch": "2.11.0", "torchvision": "0.26.0", "scikit-learn": "1.6.1", "scipy": "1.16.3",
            "ipywidgets": "7.7.1"}.items() <= pins.items()
    assert Version(pins["numpy"]).release[:2] == (2, 1)
    for version in pins.values():
        Version(version)   # a valid version, not a range


def test_colab_versions_satisfy_the_project_ranges():
    ranges = pyproject_requirements()
    outside = {n: (v, str(ranges[n])) for n, v in recorded_colab_versions().items()
               if n in ranges and not ranges[n].contains(v)}
    assert not outside, f"Colab's versions outside pyproject.toml's ranges: {outside}"


def test_the_setup_cell_pins_every_recorded_version():
    cell = (REPO / "colab" / "setup_cell.py").read_text(encoding="utf-8")
    kept = re.search(r"for name in \((?P<names>[^)]*)\):", cell)["names"]
    names = {canonicalize_name(n) for n in re.findall(r'"([^"]+)"', kept)}
    assert set(recorded_colab_versions()) <= names, set(recorded_colab_versions()) - names


@pytest.mark.skipif(Path(sys.prefix).name != ".venv-colab", reason="only inside .venv-colab (make test-colab)")
def test_the_colab_venv_has_exactly_the_recorded_versions():
    installed = {n: importlib.metadata.version(n) for n in recorded_colab_versions()}
    assert installed == recorded_colab_versions()
