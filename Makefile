# The two commands a newcomer needs: `make demo` and `make test`. Everything else is set up on the way.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0

.PHONY: install demo test test-unit bench bench-host schemas tools clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first: a bare torch requirement on an empty environment pulls several GB of CUDA wheels.
	$(BIN)/pip install -q torch==$(TORCH_VERSION)
	$(BIN)/pip install -q -e '.[test,bench]'
	touch $@

install: $(BIN)/.installed

tools: .tools/bin/helm

.tools/bin/helm:
	bash .ci/get-helm

demo: install
	HF_HUB_OFFLINE=1 $(BIN)/encoder-worker demo

test: install tools
	HF_HUB_OFFLINE=1 PATH="$(CURDIR)/.tools/bin:$$PATH" $(BIN)/python -m pytest

test-unit: install
	$(BIN)/python -m pytest tests/unit

# Both benchmarks run even when the first misses a target (exit 1); host capacity is reported, not checked.
bench: install
	HF_HUB_OFFLINE=1 $(BIN)/python bench/run.py; status=$$?; \
	HF_HUB_OFFLINE=1 $(BIN)/python bench/host_capacity.py || status=1; exit $$status

bench-host: install
	HF_HUB_OFFLINE=1 $(BIN)/python bench/host_capacity.py --quick

schemas: install
	$(BIN)/encoder-worker schemas

clean:
	rm -rf $(VENV) .tools .pytest_cache
