# Set-up and checks. `make demo` and `make test` work on a fresh machine with python3 and PyPI.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# The CPU wheel of torch: an unpinned torch would pull gigabytes of CUDA packages.
TORCH  := torch==2.13.0
SAMPLE ?= ../shared/media/images/d8.jpg
DEMO_OUT ?= out/demo-d8

.PHONY: install demo test bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e ".[test,cluster]"
	touch $(STAMP)

demo: install
	$(BIN)/headrig reconstruct $(SAMPLE) -o $(DEMO_OUT) --force
	@echo "Result: $(abspath $(DEMO_OUT))  (open head.glb in Blender, or run: $(BIN)/headrig info $(DEMO_OUT))"

test: install
	$(BIN)/python -m pytest -q -ra

# Figures for BENCHMARKS.md. The synthetic dataset (about 15 minutes on 2 cores) is rendered once;
# samples already on disk are skipped.
bench: install
	$(BIN)/python -m bench.speed
	$(BIN)/python -m bench.synthetic --out bench/results/synthetic --count 24 --sizes 512 1024 --seed 0 --verify
	$(BIN)/python -m bench.accuracy --data bench/results/synthetic

clean:
	rm -rf $(VENV) out dist build *.egg-info .pytest_cache
