"""Run a notebook's setup cell as Colab runs it, on a machine that is not Colab.

``make test-colab`` installs the package into ``.venv-colab`` with this script, so the
environment that stands for Colab gets the package exactly the way a Colab user does:
through the notebooks' own setup cell. ``tests/test_colab_setup.py`` uses the same
stand-in (with ``subprocess.run`` replaced) to see what the cell asks for.

The stand-in ``google.colab`` module only records what the cell asks of Colab: the custom
widget manager and a Drive mount (nothing is mounted; the cell still sets ``CUTSWAP_HOME``).

    python colab/run_setup_cell.py notebooks/00_data_tour.ipynb
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path


def setup_source(notebook) -> str:
    """The source of ``notebook``'s setup cell: its first code cell."""
    path = Path(notebook)
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    code = [cell for cell in cells if cell["cell_type"] == "code"]
    if not code:
        raise ValueError(f"{path}: no code cell, so no setup cell")
    source = code[0]["source"]
    return source if isinstance(source, str) else "".join(source)


def stand_in_colab(calls: list) -> dict[str, types.ModuleType]:
    """Modules ``google``, ``google.colab`` and its ``output`` / ``drive``, each call appended to ``calls``."""
    google, colab = types.ModuleType("google"), types.ModuleType("google.colab")
    output, drive = types.ModuleType("google.colab.output"), types.ModuleType("google.colab.drive")
    output.enable_custom_widget_manager = lambda: calls.append(("enable_custom_widget_manager",))
    drive.mount = lambda folder, **kwargs: calls.append(("mount", folder))
    google.colab, colab.output, colab.drive = colab, output, drive
    return {"google": google, "google.colab": colab, "google.colab.output": output, "google.colab.drive": drive}


def run_cell(source: str, calls: list | None = None, namespace: dict | None = None) -> dict:
    """Execute ``source`` as Colab would (``google.colab`` importable); returns the cell's namespace.

    The stand-in modules are removed again afterwards, so later code does not think it runs on Colab.
    """
    calls = [] if calls is None else calls
    namespace = {"__name__": "__main__"} if namespace is None else namespace
    stand_ins = stand_in_colab(calls)
    before = {name: sys.modules.get(name) for name in stand_ins}
    sys.modules.update(stand_ins)
    try:  # only the stand-ins are taken out again: what the cell imported (torch, ...) stays loaded
        exec(compile(source, "<setup cell>", "exec"), namespace)
    finally:
        for name, module in before.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
    return namespace


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python colab/run_setup_cell.py NOTEBOOK.ipynb", file=sys.stderr)
        return 2
    calls: list = []
    run_cell(setup_source(argv[0]), calls)
    print(f"setup cell of {argv[0]} ran as on Colab; it asked Colab for: {calls}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
