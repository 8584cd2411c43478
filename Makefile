# The README's commands: `make run` (main job), `make test` (whole suite), `make lab` (the notebooks in
# JupyterLab) and `make test-colab` (the whole suite again, with Colab's package versions).
# `make book` executes the notebooks into a static HTML site in _book/; `make book-check` opens it in headless Chromium.
# Each builds its virtual environment from nothing but python3.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# The exact torch pair for a fresh environment (pyproject.toml declares ranges,
# so that Colab's preinstalled torch satisfies them).
TORCH_PIN := torch==2.14.1 torchvision==0.29.1

# `make test-colab`: .venv-colab holds Colab's versions (one file, .ci/colab-versions.txt); the
# notebooks' own setup cell installs the course into it, as on Colab (colab/run_setup_cell.py stands in
# for google.colab); the test tools follow under the same pins. Its data, caches and checkpoints live
# in CUTSWAP_HOME, as with Drive on Colab, so it never shares a checkpoint folder with `make test`.
COLAB_VENV     := .venv-colab
COLAB_PY       := $(COLAB_VENV)/bin/python
COLAB_VERSIONS := .ci/colab-versions.txt
COLAB_HOME     := $(CURDIR)/.cache/colab-home
KEY_PACKAGES   := torch|torchvision|numpy|scipy|scikit-learn|opencv-python-headless|ipywidgets|ipykernel|faiss-cpu|grad-cam|ipyevents

.PHONY: run test lab test-colab test-default bench clean book book-check gpu-check

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_PIN) -e ".[dev]"
	touch $@

run: $(VENV)/.installed
	$(PY) -m cutswap_lib

test: $(VENV)/.installed
	CUTSWAP_PROFILE=fast MPLBACKEND=Agg $(PY) -m pytest --nbval-lax tests notebooks

# JupyterLab on the notebooks, with .venv's Python as the notebooks' kernel.
lab: $(VENV)/.installed
	$(PY) -m jupyterlab notebooks

$(COLAB_VENV)/.installed: pyproject.toml $(COLAB_VERSIONS) colab/setup_cell.py colab/run_setup_cell.py
	rm -rf $(COLAB_VENV)
	$(PYTHON) -m venv $(COLAB_VENV)
	echo '*' > $(COLAB_VENV)/.gitignore
	$(COLAB_PY) -m pip install --quiet --upgrade pip
	$(COLAB_PY) -m pip install --quiet -r $(COLAB_VERSIONS)
	$(COLAB_PY) colab/run_setup_cell.py notebooks/00_data_tour.ipynb
	$(COLAB_PY) -m pip install --quiet -c $(COLAB_VERSIONS) -e ".[dev]"
	$(COLAB_PY) -m pip check
	$(COLAB_PY) -m pip freeze | grep -iE '^($(KEY_PACKAGES))==' | tee $(COLAB_VENV)/versions.txt
	touch $@

test-colab: $(COLAB_VENV)/.installed
	CUTSWAP_HOME=$(COLAB_HOME) CUTSWAP_PROFILE=fast MPLBACKEND=Agg $(COLAB_PY) -m pytest --nbval-lax tests notebooks

# `make book`: every notebook executed under PROFILE (default `default`: the chapters took 10 min on 2 cores in `make test-default`; `make book
# PROFILE=fast` takes minutes), at most BOOK_TIMEOUT seconds each, rendered with its figures into _book/
# (tools/book.py; the committed notebooks stay without outputs). `make book-check` opens _book/'s index and a
# chapter in headless Chromium and checks that they load and their figures decode (tools/book_check.py;
# Chromium: `apt-get install -y chromium` on Debian). `make test` needs neither.
PROFILE      ?= default
BOOK_TIMEOUT ?= 3600

book: $(VENV)/.installed
	$(PY) tools/book.py --profile $(PROFILE) --timeout $(BOOK_TIMEOUT)

book-check: $(VENV)/.installed
	$(PY) tools/book_check.py

# `make test-default` (not in CI): every notebook and solution in the default profile with its asserts, each
# in its own process, timed with THREADS torch threads (tools/test_default.py; on 2 cores about 23 min per thread count).
THREADS ?= 1 2

test-default: $(VENV)/.installed
	$(PY) tools/test_default.py --profile $(PROFILE) --threads $(THREADS)

bench: $(VENV)/.installed
	$(PY) tests/benchmarks/bench_patchcore.py

# The papers' sizes on one CUDA GPU in under 8 minutes (tests/gpu_check.py; without CUDA it says so).
gpu-check: $(VENV)/.installed
	CUTSWAP_PROFILE=fast MPLBACKEND=Agg $(PY) tests/gpu_check.py

clean:
	rm -rf $(VENV) $(COLAB_VENV) results data/toy_* .cache _book
