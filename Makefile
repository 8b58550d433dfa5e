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

# Train a supernet on the bundled 8x8 digits, search it under a latency budget, export the best subnet.
demo: $(VENV)/.installed
	$(VENV)/bin/nas train-supernet --dataset digits --out $(RUN_DIR)
	$(VENV)/bin/nas search $(RUN_DIR) --latency-budget 80%
	$(VENV)/bin/nas export subnet $(RUN_DIR) --rank 1 --out $(RUN_DIR)/export
	@echo "results: $(RUN_DIR) (config.json, metrics.jsonl, checkpoint/, search/pareto.{json,csv,png}, export/)"

test: $(VENV)/.installed
	$(VENV)/bin/python -m pytest -q

clean:
	rm -rf $(VENV) runs
