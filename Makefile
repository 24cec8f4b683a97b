# Obol: the two commands a newcomer needs are `make run` and `make test`.
# Everything else (venv, npm packages, generated stubs) is built on demand.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
GEN_STAMP := build/gen/.stamp
VENV_STAMP := $(VENV)/.installed
NODE_STAMP := node_modules/.installed
REDIS_STAMP := $(VENV)/opt/redis/VERSION
PROTO_SOURCES := $(shell find protos -name '*.proto' 2>/dev/null)

.PHONY: run test lint protos bench clean install

run: $(VENV_STAMP) $(REDIS_STAMP) $(GEN_STAMP)
	$(BIN)/obol run

test: $(VENV_STAMP) $(REDIS_STAMP) $(GEN_STAMP) $(NODE_STAMP)
	$(BIN)/pytest $(PYTEST_ARGS)

bench: $(VENV_STAMP) $(REDIS_STAMP) $(GEN_STAMP)
	$(BIN)/obol bench --out bench/results.json

protos: $(VENV_STAMP)
	$(PY) tools/gen_protos.py
	@touch $(GEN_STAMP)

lint: $(VENV_STAMP) $(GEN_STAMP) $(NODE_STAMP)
	node_modules/.bin/buf lint build/obol.binpb
	$(PY) tools/buf_breaking.py
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy libs services

install: $(VENV_STAMP) $(REDIS_STAMP) $(NODE_STAMP) $(GEN_STAMP)

$(VENV_STAMP): pyproject.toml constraints.txt
	@echo ">> creating $(VENV) and installing pinned Python packages"
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	@$(PY) -c "import site, pathlib; pathlib.Path(site.getsitepackages()[0], 'obol-generated.pth').write_text(str(pathlib.Path('build/gen').resolve()) + '\n')"
	@touch $@

# Debian's Redis 7.0, unpacked into the venv (tools/fetch_redis.sh; decision D18).
$(REDIS_STAMP): tools/fetch_redis.sh
	tools/fetch_redis.sh $(VENV)/opt/redis

$(NODE_STAMP): package.json package-lock.json
	@echo ">> installing pinned npm packages (buf, grpc-js, proto-loader)"
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

$(GEN_STAMP): $(VENV_STAMP) $(PROTO_SOURCES) tools/gen_protos.py
	$(PY) tools/gen_protos.py
	@touch $@

clean:
	rm -rf build .venv node_modules .pytest_cache .mypy_cache .ruff_cache
