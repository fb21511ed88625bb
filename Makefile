# Every target builds its own environment from nothing: a virtualenv in .venv with the CPU build of
# PyTorch pinned first, so that the project's range `torch>=2.2` installs nothing more; the
# extras (sae-lens, sparsify, transformers...) are installed with the pin repeated, so that none
# of them can replace it with another (CUDA) build.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: demo lint test docs bench venv clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[test,plot,docs,activations,interop]" "$(TORCH_SPEC)"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) -m skmpsae compare --data mnist

# Lint first, so that CI (which runs `make test`) fails on a lint error or an unformatted file
# as on a failing test.
lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

test: lint
	$(PY) -m pytest -q

docs: $(STAMP)
	$(PY) -m sphinx -W --keep-going -b html -q docs docs/_build/html

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) docs/_build build *.egg-info
