# The two front-door commands. Both set up everything they need first (tools/install.sh).
VENV ?= $(CURDIR)/.venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: install test demo clean-demo

install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt setup.py tools/install.sh tools/apt-packages.txt tools/requirements-nodeps.txt tools/constraints.txt
	bash tools/install.sh $(VENV)
	touch $@

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

demo: install
	cd egs/mini_synth/asr1 && ./run.sh
	cat egs/mini_synth/asr1/RESULTS.md

clean-demo:
	rm -rf egs/mini_synth/asr1/corpus egs/mini_synth/asr1/data egs/mini_synth/asr1/exp
