# The two set-up commands of the README. Each makes its own virtual environment.
PYTHON ?= python3
VENV ?= .venv
RUN_DIR ?= runs/digits

.PHONY: demo test bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test]'
	touch $@

# Train a supernet on the bundled 8x8 digits, search it under a latency budget, export the best subnet
# (model.onnx too, its parity in onnxruntime printed).
# Re-running starts over: the previous demo run is moved aside to $(RUN_DIR).previous.
demo: $(VENV)/.installed
	@if [ -d $(RUN_DIR) ]; then rm -rf $(RUN_DIR).previous && mv $(RUN_DIR) $(RUN_DIR).previous; fi
	$(VENV)/bin/nas train-supernet --dataset digits --epochs 30 --out $(RUN_DIR)
	$(VENV)/bin/nas search $(RUN_DIR) --latency-budget 60% --population 16 --generations 6
	$(VENV)/bin/nas export subnet $(RUN_DIR) --rank 1 --out $(RUN_DIR)/export
	@echo "results in $(RUN_DIR): config.json, metrics.jsonl, final.json, checkpoint/;"
	@echo "  Pareto front: $(RUN_DIR)/search/pareto.csv (and .json, .png); exported subnet: $(RUN_DIR)/export (model.onnx, model.stablehlo, model/)"

# two worker processes: one keeps about one core busy (README, "Run the tests")
PYTEST_ARGS ?= -n auto --maxprocesses 2
test: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/python -m pytest -q $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) runs
