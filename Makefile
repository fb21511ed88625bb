# Every target builds its own environment from nothing: a virtualenv in .venv with the CPU build of
# PyTorch pinned first, so that the project's range `torch>=2.2` installs nothing more; the
# extras (sae-lens, sparsify, transformers...) are installed with the pin repeated, so that none
# of them can replace it with another (CUDA) build.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: demo lint test test-compat docs bench venv clean

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
	$(VENV)/bin/basedpyright

test: lint
	$(PY) -m pytest -q

# The scikit-learn contract (scikit-learn's estimator checks, the estimators' API, parameter
# validation) against the oldest scikit-learn that pyproject.toml allows, in a second venv;
# .venv has the newest that installs. skmpsae reaches scikit-learn's private API through
# skmpsae/_compat.py only, so a release that breaks it fails here first.
SKLEARN_OLDEST ?= 1.6.1
COMPAT_VENV := .venv-compat
COMPAT_PY := $(COMPAT_VENV)/bin/python
COMPAT_STAMP := $(COMPAT_VENV)/.installed
CONTRACT_TESTS := tests/test_sklearn_checks.py tests/test_estimators.py tests/test_validation.py

$(COMPAT_STAMP): pyproject.toml
	$(PYTHON) -m venv $(COMPAT_VENV)
	$(COMPAT_PY) -m pip install -q --upgrade pip
	$(COMPAT_PY) -m pip install -q "$(TORCH_SPEC)"
	$(COMPAT_PY) -m pip install -q -e . "scikit-learn==$(SKLEARN_OLDEST)" "$(TORCH_SPEC)" \
		"pytest>=7" "hypothesis>=6.80" "pandas>=1.5"
	touch $(COMPAT_STAMP)

test-compat: $(COMPAT_STAMP)
	$(COMPAT_PY) -c "import sklearn; print('scikit-learn', sklearn.__version__)"
	$(COMPAT_PY) -m pytest -q $(CONTRACT_TESTS)

docs: $(STAMP)
	$(PY) -m sphinx -W --keep-going -b html -q docs docs/_build/html

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) $(COMPAT_VENV) docs/_build build *.egg-info
