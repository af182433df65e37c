# shardfleet: `make run` starts a local node, `make test` runs the whole suite.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
DATA   ?= .data
PORT   ?= 9000
STAMP   = $(VENV)/.installed
PKGS    = erasure transport cluster healing node

.PHONY: run run-standalone test chaos bench lint venv clean clients

# An editable install leaves our modules uncompiled, and with PYTHONDONTWRITEBYTECODE=1 (the
# systemd unit sets it too) every start then compiled them again (~50 ms of a node's start-up).
# A regular `pip install` byte-compiles at install time; this does the same for the source
# tree, after the install and on every later make (only changed files: ~0.1 s). Then the
# code that dataclasses and typing generate at start-up is compiled once into its cache the
# same way (node/codecache.py: ~30 ms of each start; ~0.5 s here, written only when new).
venv: $(STAMP)
	$(BIN)/python -m compileall -q $(PKGS)
	$(BIN)/python -m shardfleet.node.codecache

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

# the default dev cluster: 4 node processes x 2 drives, 2+2 (any one node may die);
# node i serves S3 on PORT+i
run: venv
	$(BIN)/shardfleet dev-cluster --nodes 4 --drives-per-node 2 --ec 2+2 --data $(DATA)/dev-cluster --base-port $(PORT)

# one standalone node, 4 drives as 2+2, S3 on PORT
run-standalone: venv
	$(BIN)/shardfleet serve --data $(DATA)/standalone --drives 4 --ec 2+2 --address 127.0.0.1:$(PORT)

# the real clients the suite drives besides boto3 and the AWS CLI (Debian's packages); a
# missing one fails its tests instead of skipping them
CLIENTS = rclone restic chromium
clients:
	@for c in $(CLIENTS); do command -v $$c >/dev/null || missing="$$missing $$c"; done; \
	if [ -n "$$missing" ]; then \
		sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$sudo apt-get install -y -q $$missing || \
			{ $$sudo apt-get update -q && $$sudo apt-get install -y -q $$missing; }; \
	fi

test: venv clients
	$(BIN)/lint-imports --no-logo
	$(BIN)/python -m pytest -q

chaos: venv
	$(BIN)/python -m pytest -q -m chaos_long tests

bench: venv
	$(BIN)/python tests/bench/run_bench.py

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-logo

clean:
	rm -rf $(VENV) $(DATA) matrix-results
