# mpcd: `make demo` shows it working, `make test` runs every test. Both install what is missing.
SHELL := /bin/bash
APT_PACKAGES := libzmq3-dev libopenblas-dev libmujoco-dev pkg-config gcc
# what the tests use besides: systemd-analyze, load, a terminal for mpcctl top, packaging
TEST_APT_PACKAGES := systemd stress-ng tmux dpkg-dev lintian
VENV := .venv
PYTHON := $(VENV)/bin/python

.PHONY: demo test deps apt apt-test venv mujoco-library build swift-test python-test fuzz-check bench results deb clean

demo: deps build
	scripts/demo.sh

test: deps apt-test build swift-test python-test fuzz-check

deps: apt venv mujoco-library

# Installs the Debian packages that are missing (needs root, as on CI machines).
define apt_install
	@missing=""; for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "apt-get install$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
endef

apt:
	$(call apt_install,$(APT_PACKAGES))

apt-test:
	$(call apt_install,$(TEST_APT_PACKAGES))

# The Python client, Gymnasium, PyTorch and pytest in a virtual environment, rebuilt when the
# client's dependencies change. PyTorch's CPU build first (about 190 MB, where the machine's wheel
# folder or a CPU index has it): PyPI's default Linux torch would pull several GB of CUDA libraries.
TORCH_CPU := torch==2.13.0+cpu
venv: $(VENV)/.installed

$(VENV)/.installed: clients/python/pyproject.toml
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install -q --upgrade pip
	$(PYTHON) -m pip install -q '$(TORCH_CPU)' || $(PYTHON) -m pip install -q torch --index-url https://download.pytorch.org/whl/cpu
	$(PYTHON) -m pip install -q -e 'clients/python[test]'
	scripts/gymnasium_models.sh
	touch $@

# MuJoCo's own AVX build of libmujoco 2.2.2 (PyPI's mujoco 2.2.2 wheel, pinned by sha256) in
# .deps; where it cannot be had, says why and goes on with Debian's.
mujoco-library: venv
	scripts/mujoco_library.sh

# and a copy of it beside the binaries, which load it before the system's (their search path
# starts with their own folder); none there where .deps has none
build:
	swift build -c release
	scripts/mujoco_library.sh --into .build/release

swift-test:
	swift test -c release

python-test: build venv
	cd clients/python && ../../$(PYTHON) -m pytest -q tests

# The fuzzers for a few seconds each, on a copy of the corpus (scripts/fuzz.sh for longer runs).
fuzz-check:
	scripts/fuzz.sh 10 --check

# Every figure in docs/benchmarks.md but the peers (about 20 minutes).
bench: deps build
	scripts/benchmarks.sh

# docs/results.md, results.png and horizons.png: amortised against iterative inference, and the
# learned value against the horizon, and the distance to the optimum (about 2 minutes).
results: deps build
	.venv/bin/python -m mpcd_client.amortisation

# dist/mpcd_<version>_<arch>.deb: the binaries with the Swift runtime linked in, the unit, the
# configuration as a conffile, networks, docs (docs/operations.md; about 2 minutes the first time).
deb: apt
	$(call apt_install,dpkg-dev)
	scripts/build_deb.sh

clean:
	rm -rf .build $(VENV) dist .deps
