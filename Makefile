# The README's commands: `make run` (main job), `make test` (whole suite), `make lab` (the notebooks in
# JupyterLab) and `make test-colab` (the whole suite again, with Colab's package versions).
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

.PHONY: run test lab test-colab bench clean

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

bench: $(VENV)/.installed
	$(PY) tests/benchmarks/bench_patchcore.py

clean:
	rm -rf $(VENV) $(COLAB_VENV) results data/toy_* .cache
