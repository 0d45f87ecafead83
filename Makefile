# crispy: `make run` starts the daemon, `make test` runs every test.
# Both install what they need first (Debian packages, a venv, gRPC stubs).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# Everything the daemon and the tests run. Installed without recommends, so a
# tool a package only recommends (iptables -> nftables' `nft`) is named here.
APT_PACKAGES := conmon crun runc catatonit containernetworking-plugins iptables nftables \
                iproute2 docker-registry busybox-static containerd \
                gcc libc6-dev procps util-linux
PROTO  := cri/proto/api.proto
STUBS  := cri/proto/api_pb2.py cri/proto/api_pb2_grpc.py cri/proto/api_pb2.pyi
# NRI speaks ttrpc, not gRPC: messages only, no service stubs.
NRI_PROTO := runtime/nri/proto/api.proto runtime/nri/proto/ttrpc.proto
NRI_STUBS := runtime/nri/proto/api_pb2.py runtime/nri/proto/api_pb2.pyi \
             runtime/nri/proto/ttrpc_pb2.py runtime/nri/proto/ttrpc_pb2.pyi
# NRI's Field enum has a value named `None`, which a .pyi cannot declare.
NRI_PYI_FIX := sed -i '/^ *None: /d'
PYTEST_ARGS ?=

.PHONY: all deps venv proto proto-check lint run test unit integration tools critest bench clean install uninstall

all: venv

deps:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

# Regenerate the Python stubs from our proto (they are committed).
proto: venv
	$(PY) -m grpc_tools.protoc -I . --python_out=. --grpc_python_out=. --pyi_out=. $(PROTO)
	$(PY) -m grpc_tools.protoc -I . --python_out=. --pyi_out=. $(NRI_PROTO)
	$(NRI_PYI_FIX) runtime/nri/proto/api_pb2.pyi

# Fails if the committed stubs are not what `make proto` would write.
proto-check: venv
	@tmp=$$(mktemp -d); \
	$(PY) -m grpc_tools.protoc -I . --python_out=$$tmp --grpc_python_out=$$tmp --pyi_out=$$tmp $(PROTO); \
	$(PY) -m grpc_tools.protoc -I . --python_out=$$tmp --pyi_out=$$tmp $(NRI_PROTO); \
	$(NRI_PYI_FIX) $$tmp/runtime/nri/proto/api_pb2.pyi; \
	for f in $(STUBS) $(NRI_STUBS); do cmp -s $$tmp/$$f $$f || { echo "$$f is stale: run 'make proto' and commit"; rm -rf $$tmp; exit 1; }; done; \
	rm -rf $$tmp; echo "generated stubs are up to date"

run: deps venv
	$(VENV)/bin/crispy $(ARGS) cni-install
	$(VENV)/bin/crispy $(ARGS)

# Put crispy on this node (a venv under PREFIX, the systemd unit, the
# default config and CNI network); `make uninstall` takes them off again.
PREFIX ?= /opt/crispy
install: deps venv
	$(VENV)/bin/crispy install --prefix $(PREFIX) --source . $(ARGS)

uninstall: venv
	$(VENV)/bin/crispy uninstall --prefix $(PREFIX) $(ARGS)

# Static checks: ruff over every Python tree, mypy over the daemon's packages
# (the file list and strictness live in pyproject.toml). A few seconds, so
# `make test` runs them before the much slower pytest.
lint: venv
	$(PY) -m ruff check cri runtime images tests bench critest
	$(PY) -m mypy

test: deps venv proto-check lint
	$(PY) -m pytest -q -rs $(PYTEST_ARGS)

# tests/unit needs no root and no installed runtime; tests/integration runs
# the real crun/runc, conmon, CNI plugins and a registry; tests/tools checks
# the bench and critest harnesses.
unit: venv
	$(PY) -m pytest -q tests/unit $(PYTEST_ARGS)

integration: deps venv
	$(PY) -m pytest -q tests/integration $(PYTEST_ARGS)

tools: deps venv
	$(PY) -m pytest -q tests/tools $(PYTEST_ARGS)

# ARGS go to critest, e.g. ARGS="--ginkgo.focus='Image Manager'"; see critest/README.md.
critest: deps venv
	$(PY) -m critest.run $(ARGS)

# matplotlib (the chart) and gcc (the pause image containerd needs) are
# only needed here.
$(VENV)/.bench-installed: $(VENV)/.installed
	$(PY) -m pip install -q -e '.[dev,bench]'
	touch $@

bench: deps venv $(VENV)/.bench-installed
	@command -v gcc >/dev/null && [ -e /usr/lib/x86_64-linux-gnu/libc.a -o -e /usr/lib/aarch64-linux-gnu/libc.a ] || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends gcc libc6-dev >/dev/null; }
	$(PY) -m bench.run $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
