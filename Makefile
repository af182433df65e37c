# shardfleet: `make run` starts a local node, `make test` runs the whole suite.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
DATA   ?= .data
PORT   ?= 9000
STAMP   = $(VENV)/.installed

.PHONY: run test chaos bench lint venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

run: venv
	$(BIN)/shardfleet serve --data $(DATA) --drives 4 --ec 2+2 --address 127.0.0.1:$(PORT)

test: venv
	$(BIN)/python -m pytest -q

chaos: venv
	$(BIN)/python -m pytest -q -m chaos_long tests

bench: venv
	$(BIN)/python tests/bench/run_bench.py

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) $(DATA) matrix-results
