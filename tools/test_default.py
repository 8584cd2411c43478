"""Every notebook and solution executed in the default profile, with its asserts, timed: ``make test-default``.

CI executes the notebooks in the fast profile only (``make test``). This runs each chapter and
each solutions notebook in a fresh ``pytest --nbval-lax`` process under ``CUTSWAP_PROFILE=default``
(or ``--profile``), once per torch thread count in ``--threads``, and prints one Markdown table
of wall times (the numbers `notebooks/README.md` quotes), also written to ``--out`` as JSON. Each thread
count runs in a fresh ``CUTSWAP_HOME`` (next to ``--out``): toy data, caches and checkpoints are made anew,
so the times are a first run's, not a cached rerun's (``--keep-home`` to use the usual folders).
Not part of CI: on this 2-core CPU the chapters took 9 min (two threads) and 13 min (one), the solutions 14 min (two).

    .venv/bin/python tools/test_default.py                      # every notebook, 1 and 2 threads
    .venv/bin/python tools/test_default.py --threads 1 --only 05 06
    .venv/bin/python tools/test_default.py --list               # what would run
    .venv/bin/python tools/test_default.py --no-solutions       # the chapters only

Exit status: 0 when every run passed, 1 when one failed (the table says which), 2 for a bad argument.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"


def notebooks(only: list[str] | None, solutions: bool = True, chapters: bool = True) -> list[Path]:
    """The chapters (``NN[b]_*.ipynb``) then their solutions, in course order; ``only`` keeps chapter numbers."""
    chapters = sorted(NOTEBOOKS.glob("[0-9][0-9]*_*.ipynb")) if chapters else []
    solutions = sorted((NOTEBOOKS / "solutions").glob("[0-9][0-9]*_*.ipynb")) if solutions else []
    found = chapters + solutions
    if only:
        found = [p for p in found if p.name.split("_")[0] in only]
        missing = sorted(set(only) - {p.name.split("_")[0] for p in found})
        if missing:
            raise ValueError(f"no notebook numbered {', '.join(missing)} under {NOTEBOOKS}")
    return found


def run_one(path: Path, profile: str, threads: int, home: Path | None = None) -> dict:
    """One notebook in its own pytest process (``home``: its ``CUTSWAP_HOME``); returns its status and wall seconds."""
    env = {**os.environ, "CUTSWAP_PROFILE": profile, "MPLBACKEND": "Agg", "OMP_NUM_THREADS": str(threads),
           "MKL_NUM_THREADS": str(threads)}
    if home is not None:
        env["CUTSWAP_HOME"] = str(home)
    cmd = [sys.executable, "-m", "pytest", "--nbval-lax", "-q", "-p", "no:cacheprovider", str(path)]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    tail = (done.stdout + done.stderr).strip().splitlines()[-1:] or [""]
    return {"notebook": str(path.relative_to(ROOT)), "threads": threads, "profile": profile,
            "passed": done.returncode == 0, "seconds": round(seconds, 1), "summary": tail[0]}


def minutes(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    return f"{m} min {s:02d} s" if m else f"{s} s"


def table(results: list[dict], threads: list[int]) -> str:
    """Markdown: one row per notebook, one column per thread count (time, or FAILED)."""
    names = list(dict.fromkeys(r["notebook"] for r in results))
    head = "| notebook | " + " | ".join(f"{t} thread{'s' if t > 1 else ''}" for t in threads) + " |"
    lines = [head, "|---|" + "---|" * len(threads)]
    for name in names:
        cells = []
        for t in threads:
            r = next((r for r in results if r["notebook"] == name and r["threads"] == t), None)
            cells.append("" if r is None else (minutes(r["seconds"]) if r["passed"] else f"FAILED ({r['summary']})"))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="default", choices=("fast", "default", "paper"))
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--only", nargs="+", help="chapter numbers (e.g. 00b 05); default: all")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "test_default.json")
    parser.add_argument("--list", action="store_true", help="print the notebooks that would run and exit")
    parser.add_argument("--no-solutions", action="store_true", help="the chapters only")
    parser.add_argument("--solutions-only", action="store_true", help="the solutions notebooks only")
    parser.add_argument("--keep-home", action="store_true",
                        help="use the usual data/ and results/ (their caches) instead of a fresh CUTSWAP_HOME per "
                             "thread count")
    args = parser.parse_args(argv)
    if any(t < 1 for t in args.threads):
        parser.error(f"--threads: each must be at least 1, got {args.threads}")
    try:
        paths = notebooks(args.only, solutions=not args.no_solutions, chapters=not args.solutions_only)
    except ValueError as err:
        parser.error(f"--only: {err}")
    if args.list:
        print("\n".join(str(p.relative_to(ROOT)) for p in paths))
        return 0
    results = []
    for threads in args.threads:
        # every thread count starts from nothing (toy data, saliency caches, checkpoints, 05's cached models), as a
        # student's first run does; a later notebook still finds what an earlier one made in the same pass
        home = None
        if not args.keep_home:
            home = args.out.parent / "test_default_home" / f"{threads}_threads"
            shutil.rmtree(home, ignore_errors=True)
            home.mkdir(parents=True)
        for path in paths:
            print(f"{path.relative_to(ROOT)} ({args.profile}, {threads} thread(s)) ...", end=" ", flush=True)
            results.append(run_one(path, args.profile, threads, home))
            r = results[-1]
            print(("passed" if r["passed"] else "FAILED") + f" in {minutes(r['seconds'])}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print()
    print(table(results, args.threads))
    return 0 if all(r["passed"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
