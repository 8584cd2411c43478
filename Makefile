# The README's two commands: `make run` (main job) and `make test` (whole suite).
# Both build a local virtual environment in .venv from nothing but python3.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# The exact torch pair for a fresh environment (pyproject.toml declares ranges,
# so that Colab's preinstalled torch satisfies them).
TORCH_PIN := torch==2.14.1 torchvision==0.29.1

.PHONY: run test bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_PIN) -e ".[dev]"
	touch $@

run: $(VENV)/.installed
	$(PY) -m cutswap_lib

test: $(VENV)/.installed
	CUTSWAP_PROFILE=fast MPLBACKEND=Agg $(PY) -m pytest --nbval-lax tests notebooks

bench: $(VENV)/.installed
	$(PY) tests/benchmarks/bench_patchcore.py

clean:
	rm -rf $(VENV) results data/toy_* .cache
