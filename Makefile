# egpu-operator: the two commands a newcomer needs are `make demo` and `make test`.
# Both install what they need: a virtualenv in .venv and the control-plane binaries,
# built from pinned Go modules and cached in ~/.cache/egpu-operator (see hack/build-tools.sh).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml requirements-dev.lock | sha256sum | cut -c1-12)

.PHONY: demo test lint chart-lint unit e2e e2e-kind tools venv clean

demo: $(STAMP) tools
	$(PY) -m egpu_localcluster demo

test: lint unit e2e

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy api localcluster node-agent operator runtime
	$(VENV)/bin/hadolint images/operator.Dockerfile images/node-agent.Dockerfile
	$(VENV)/bin/shellcheck hack/build-tools.sh hack/lock.sh hack/images/*.sh hack/kind/*.sh hack/kind/node/egpu-entrypoint .ci/run
	$(MAKE) --no-print-directory chart-lint

# The Helm chart: strict lint with the cached helm (hack/build-tools.sh builds it once), and
# its CRD templates and values schema in step with crds/ and values.yaml.
chart-lint: $(STAMP)
	"$$(hack/build-tools.sh)/helm" lint --strict charts/egpu-operator
	$(PY) hack/sync-chart-crds.py --check
	$(PY) hack/sync-chart-schema.py --check

unit: $(STAMP)
	$(PY) -m pytest tests/unit

e2e: $(STAMP) tools
	$(PY) -m pytest tests/e2e

# The kind tier: Docker engine, images, kind node image, all built here with nothing pulled; a
# kind cluster with the chart installed from those images; the image tests and the e2e suite
# against the chart's operator pod; everything torn down afterwards (hack/kind/e2e.sh).
e2e-kind: $(STAMP) tools
	hack/kind/e2e.sh

tools:
	hack/build-tools.sh >/dev/null

venv: $(STAMP)

# Every dependency at the version and hashes in requirements-dev.lock (hack/lock.sh makes it
# from pyproject.toml's pins); then the project itself, editable.
$(STAMP): pyproject.toml requirements-dev.lock
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --require-hashes -r requirements-dev.lock
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	@rm -f $(VENV)/.installed-* && touch $@

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
