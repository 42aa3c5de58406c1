# The two set-up commands of README.md: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch first and pinned: a looser spec lets pip pull a multi-GB CUDA build
TORCH := torch==2.13.0

.PHONY: demo test install lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# installed once, and again when the package's requirements change
$(VENV)/.installed: setup.cfg pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e ".[all,dev]" $(TORCH)
	touch $@

install: $(VENV)/.installed

demo: install
	@$(BIN)/edgekit demo

test: install
	$(BIN)/ruff check edgekit tests benchmarks
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check edgekit tests benchmarks

clean:
	rm -rf out build dist *.egg-info
