# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv and install utad into it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.utad-installed
DEMO_OUT ?= runs/demo

.PHONY: install demo test lint format bench mutation clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip -q
	$(BIN)/python -m pip install -c constraints.txt -e ".[dev,export,backbones]"
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/utad demo --out $(DEMO_OUT) --overwrite

# One pytest-xdist worker per core, up to 4, tests handed out one by one (loadgroup would keep a module's fixture
# on one worker, but xdist 3.8 cannot group under pytest 9.2): 180 s on 2 idle cores (3 workers: 209 s).
test: install
	$(BIN)/python -m pytest -q -n auto --maxprocesses 4 --dist load

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

format: install
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

# Mutation testing of the method's core (30 to 45 minutes on 2 cores; resumable): see benchmarks/mutation.py.
mutation: install
	$(BIN)/python -m pip install -q "mutmut==3.8.1"
	$(BIN)/python benchmarks/mutation.py --run --json benchmarks/results/mutation.json

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .ruff_cache mutants
