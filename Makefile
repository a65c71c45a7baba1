# mpcd: `make demo` shows it working, `make test` runs every test. Both install what is missing.
SHELL := /bin/bash
APT_PACKAGES := libzmq3-dev libopenblas-dev pkg-config
SWIFT_BUILD := swift build -c release
SWIFT_TEST := swift test -c release

.PHONY: test deps apt build swift-test

test: deps build swift-test

deps: apt

# Installs the C libraries when any is missing (needs root, as on CI machines).
apt:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

build:
	$(SWIFT_BUILD)

swift-test:
	$(SWIFT_TEST)
