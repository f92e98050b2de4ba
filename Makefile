# `make demo` and `make test` work on a fresh machine: they build .venv first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
# the JupyterLab extension is built by `pip install` (hatch-jupyter-builder, npm) only when
# labextension/src is newer than rhapsody_lab/labextension; npm downloads are cached here
export npm_config_cache ?= $(HOME)/.cache/npm
LABEXT_SRC := labextension/package.json $(wildcard labextension/src/*.ts labextension/src/style/*)
EXTRAS ?= test,dask,dashboard,notebook,dragon,inference,asyncflow,flux,telemetry,radical,orbit

.PHONY: demo test lint bench venv clean flux

venv: $(STAMP)

$(STAMP): pyproject.toml $(LABEXT_SRC)
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install -q --disable-pip-version-check -e ".[$(EXTRAS)]"
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m rhapsody_lab demo

test: $(STAMP)
	$(BIN)/ruff check rhapsody_lab tests bench
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e ".[bench]"
	$(BIN)/python bench/bench_concurrent.py

# flux-core 0.88.0 for the Flux backend, built once into ~/.cache/rhapsody_lab (as CI does)
flux:
	bash .ci/setup.d/45-flux.sh

lint: $(STAMP)
	$(BIN)/ruff check rhapsody_lab tests bench

clean:
	rm -rf $(VENV) .pytest_cache
