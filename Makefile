# The two commands of the README:
#   make deploy   set up this machine and deploy the whole system on it (inventories/local)
#   make test     set up this machine and run every test
# Everything else here is a step of those two.

VENV := .venv
PY := $(VENV)/bin/python
POUCHDB := images/pouchdb-server/node_modules/.bin/pouchdb-server

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

test: venv pouchdb lint
	$(VENV)/bin/pytest

# --- deployment (issue 5) ---------------------------------------------------------
ANSIBLE_PLAYBOOK := $(VENV)/bin/ansible-playbook

.PHONY: docker images rollback verify

docker:
	scripts/setup-docker

images: venv docker pouchdb
	$(ANSIBLE_PLAYBOOK) playbooks/docker_hosts.yml playbooks/images.yml

deploy: venv docker pouchdb
	$(ANSIBLE_PLAYBOOK) deploy.yml

verify: venv
	$(ANSIBLE_PLAYBOOK) playbooks/verify.yml

rollback: venv
	$(ANSIBLE_PLAYBOOK) rollback.yml
