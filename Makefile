# The two commands of the README:
#   make deploy   set up this machine and deploy the whole system on it (inventories/local)
#   make test     set up this machine and run every test
# Everything else here is a step of those two.

VENV := .venv
PY := $(VENV)/bin/python
POUCHDB := images/pouchdb-server/node_modules/.bin/pouchdb-server
# The venv's tools (ansible-playbook, molecule, ...) first, for the tools they start.
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: test deploy venv pouchdb lint unit

venv: $(VENV)/.installed
$(VENV)/.installed: requirements/app.txt requirements/dev.txt pyproject.toml
	scripts/setup-python
	touch $@

pouchdb: $(POUCHDB)
$(POUCHDB): images/pouchdb-server/package.json images/pouchdb-server/package-lock.json
	cd images/pouchdb-server && npm ci --no-audit --no-fund
	touch $@

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/yamllint --strict .
	$(VENV)/bin/ansible-lint --offline

# Every test: unit and integration (real pouchdb-servers), the modules' playbooks, the
# deployment on this machine's Docker, and the molecule scenarios. Docker is started
# first so that nothing is skipped for want of it. Lint and pytest run side by side; make
# test fails when either fails. pytest runs in one process: the two-lane run
# (-n 2 --dist loadgroup) did not keep the Docker tests on one worker (both deployed
# `kunotest` at once), see the README's Tests.
test: venv pouchdb docker
	$(MAKE) --no-print-directory -j2 lint pytest

.PHONY: pytest
pytest: venv pouchdb docker
	$(VENV)/bin/pytest --durations=15

# --- deployment (issue 5) ---------------------------------------------------------
ANSIBLE_PLAYBOOK := $(VENV)/bin/ansible-playbook

.PHONY: docker images rollback verify heal

docker:
	scripts/setup-docker

images: venv docker pouchdb
	$(ANSIBLE_PLAYBOOK) playbooks/docker_hosts.yml playbooks/images.yml

deploy: venv docker pouchdb
	$(ANSIBLE_PLAYBOOK) deploy.yml

verify: venv
	$(ANSIBLE_PLAYBOOK) playbooks/verify.yml

heal: venv
	$(ANSIBLE_PLAYBOOK) playbooks/heal.yml

rollback: venv
	$(ANSIBLE_PLAYBOOK) rollback.yml

# --- the web page (issue 13) --------------------------------------------------------
# apps/web: its unit tests (vitest) run in `make test`, its browser tests
# (tests/deploy/test_web_*.py) drive Debian's chromium; the proxy role builds the page
# itself on deploy (scripts/build-web), `make web` builds it alone into apps/web/dist/.
WEB_MODULES := apps/web/node_modules/.installed

.PHONY: web web-test chromium

test: chromium web-test

chromium:
	scripts/setup-chromium

$(WEB_MODULES): apps/web/package.json apps/web/package-lock.json
	cd apps/web && npm ci --no-audit --no-fund
	touch $@

web-test: $(WEB_MODULES)
	cd apps/web && npm test

web:
	scripts/build-web
