"""Shared fixtures: one small toy dataset per test session; tools/ scripts as modules."""

import importlib.util
import sys
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")

from cutswap_lib.data import TOY_CATEGORIES, make_toy_dataset  # noqa: E402


@pytest.fixture(scope="session")
def toy_root(tmp_path_factory):
    """A fast-profile toy dataset (64 px) with every category, generated once per session."""
    root = tmp_path_factory.mktemp("toy")
    for category in TOY_CATEGORIES:
        make_toy_dataset(root, category, n_train=16, n_test_good=6, n_test_defect=3,
                         image_size=64, seed=0)
    return root


TOOLS = Path(__file__).resolve().parents[1] / "tools"


def load_tool(name: str):
    """``tools/<name>.py`` as a module named ``tools_<name>`` (tools/ is no package)."""
    spec = importlib.util.spec_from_file_location(f"tools_{name}", TOOLS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module
