# Two entry points: `make demo` runs the main job on the built-in corpus, `make test` runs lint and tests.
# Both create (or reuse) a virtualenv in .venv; `make test` also installs Debian's chromium for the browser test when
# it can (.ci/ensure-browser), else that test is skipped and says why. TORCH selects the torch build: the default is
# the CPU wheel; a GPU user runs e.g. `make TORCH=torch demo` or installs CUDA torch into .venv first.
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH ?= torch==2.13.0

.PHONY: demo test install clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

demo: install
	$(PY) jobs/demo.py

test: install
	.ci/ensure-browser
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) .pytest_cache
