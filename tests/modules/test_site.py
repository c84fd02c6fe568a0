"""The modules together: a two-node mesh applied twice; documentation ansible-doc renders."""

from __future__ import annotations

import json
import os
import subprocess
import uuid

import pytest
import yaml

from tests.modules.conftest import REPLICATION_PASSWORD, REPLICATION_USER
from tests.modules.helpers import BIN, DOC_FRAGMENTS, LIBRARY, PLAYBOOKS, Ansible, load_library
from tests.support.pouchdb import PouchServer, http_json, wait_until

MODULES = [
    "couchdb_database",
    "couchdb_design",
    "couchdb_index",
    "couchdb_replication",
    "couchdb_replication_info",
    "couchdb_replication_job",
]


def test_the_whole_set_twice_changes_nothing_the_second_time(
    ansible: Ansible, one: PouchServer, two: PouchServer, name: str
):
    extra_vars = {
        "kuno_nodes": [{"name": "one", "url": one.url}, {"name": "two", "url": two.url}],
        "kuno_database": name,
        "kuno_replication_user": REPLICATION_USER,
        "kuno_replication_password": REPLICATION_PASSWORD,
    }

    first = ansible.run(playbook=PLAYBOOKS / "site.yml", extra_vars=extra_vars)
    second = ansible.run(playbook=PLAYBOOKS / "site.yml", extra_vars=extra_vars)

    assert first.returncode == 0, first.output
    # Three tasks (databases, indexes, replications), each changed on both nodes.
    assert first.stats["changed"] == 3
    for task in ("The messages database on every node", "Every node pulls from every other node"):
        assert sum(item["changed"] for item in first[task]["results"]) == 2, task
    assert second.returncode == 0, second.output
    assert second.stats["changed"] == 0
    assert second.stats["failures"] == 0

    # The mesh carries documents both ways.
    for source, target in ((one, two), (two, one)):
        doc_id = uuid.uuid4().hex
        assert http_json("PUT", f"{source.db_url(name)}/{doc_id}", {"type": "message"})[0] == 201
        wait_until(lambda t=target, d=doc_id: d in t.all_ids(name))


def ansible_doc(*modules: str) -> subprocess.CompletedProcess[str]:
    """`ansible-doc --json` on our modules, wherever the tests run from."""
    return subprocess.run(
        [str(BIN / "ansible-doc"), "-M", str(LIBRARY), "--json", *modules],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        # The connection options' shared documentation (ansible.cfg names it too).
        env=os.environ | {"ANSIBLE_DOC_FRAGMENT_PLUGINS": str(DOC_FRAGMENTS)},
    )


def test_ansible_doc_renders_every_module():
    process = ansible_doc(*MODULES)

    assert process.returncode == 0, process.stderr
    assert "WARNING" not in process.stderr
    docs = json.loads(process.stdout)
    assert sorted(docs) == MODULES
    for module, doc in docs.items():
        assert doc["doc"]["attributes"]["check_mode"]["support"] == "full", module
        assert yaml.safe_load(doc["examples"]), module
        assert doc["return"], module


@pytest.mark.parametrize("module", MODULES)
def test_documented_options_are_the_argument_spec(module: str):
    process = ansible_doc(module)
    documented = json.loads(process.stdout)[module]["doc"]["options"]
    spec = load_library(module).argument_spec()

    assert sorted(documented) == sorted(spec)
    for option, settings in spec.items():
        assert documented[option]["type"] == settings.get("type", "str"), option
        assert documented[option].get("default") == settings.get("default"), option
        assert documented[option].get("required", False) == settings.get("required", False)
        assert documented[option].get("no_log", False) is False  # not a doc key
        if settings.get("no_log"):
            description = documented[option]["description"]
            text = description if isinstance(description, str) else " ".join(description)
            assert "Never logged" in text, option
