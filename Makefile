# `make demo`: the demo study on the embedded demo data. `make test`: lint + tests (the tests build the docs
# with mkdocs --strict). `make docs`: the documentation site in site/.
# All create .venv on first use (Python >= 3.10, pip and make are all a fresh machine needs).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

$(STAMP): setup.cfg setup.py pyproject.toml iqa_tune/_gather.c
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned to the pair that imports together (timm needs torchvision)
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

.PHONY: install demo train-demo test lint docs bench clean
install: $(STAMP)

demo: $(STAMP)
	$(BIN)/iqa-tune run demo --name demo-$$(date +%Y%m%d-%H%M%S)

train-demo: $(STAMP)
	$(BIN)/iqa-tune train demo_train

lint: $(STAMP)
	$(BIN)/ruff check iqa_tune trainables reports tests

test: lint
	$(BIN)/python -m pytest -q

docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/python -m mkdocs build --strict

bench: $(STAMP)
	$(BIN)/iqa-tune bench --out bench.json

clean:
	rm -rf $(VENV) ray_results runs .pytest_cache site
