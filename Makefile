# vsml-es: `make demo` (set up, then meta-train on the embedded digits data) and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo demo-es test test-all bench clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $(STAMP)

# The demo pipeline (docs/meta_training.md): meta-learn backprop by cloning online SGD,
# refine by gradient meta-training, improve by ES on local Ray workers, then meta-test the
# LA against tuned online SGD and Adam on held-out digits with fresh label permutations.
DEMO := runs/demo-$(shell date +%Y%m%d-%H%M%S)
demo: $(STAMP)
	$(BIN)/vsml-es clone configs/demo_pipeline.yaml --run-dir $(DEMO)/clone --steps 600 --logit-scale 2.5
	$(BIN)/vsml-es train configs/demo_pipeline.yaml --address none --run-dir $(DEMO)/grad \
	    -o es.strategy=gradient -o es.learning_rate=0.003 -o es.population=8 \
	    -o es.generations=45 -o task.episode_length=60 -o 'task.loss_horizons=[]' \
	    -o es.init_from=$(DEMO)/clone
	$(BIN)/vsml-es train configs/demo_pipeline.yaml --address local --run-dir $(DEMO)/es \
	    -o es.init_from=$(DEMO)/grad --summary
	$(BIN)/vsml-es evaluate $(DEMO)/es --datasets digits,mnist_subset --steps 500 --tasks 16
	@echo "demo runs in $(DEMO); tensorboard --logdir $(DEMO)"

demo-es: $(STAMP)  ## ES from a random LA only (the paper's setting, scaled to 2 cores)
	$(BIN)/vsml-es train configs/demo.yaml --run-dir runs/demo-es-$$(date +%Y%m%d-%H%M%S) --summary

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -m "slow or not slow"

bench: $(STAMP)
	$(BIN)/vsml-es bench

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
