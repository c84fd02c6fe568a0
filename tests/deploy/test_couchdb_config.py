"""The CouchDB role's rendered ini files and mounts, rendered by Ansible itself (no Docker).

CouchDB 3 reads default.ini, default.d/*.ini, local.ini, local.d/*.ini in that order
(local.d by name) and writes every config change it makes itself (a hashed admin, a
generated uuid, a PUT to /_node/_local/_config) to the last file it read. So the file
that sorts last must be writable and outlive the container, the node's uuid must come
from the deployment, and the admin password must never be in plaintext.
"""

from __future__ import annotations

import configparser
import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.conftest import ANSIBLE_PLAYBOOK, REPO

pytestmark = pytest.mark.slow  # each render is an ansible-playbook run

PASSWORD = "a-long-admin-password-for-tests"
UUID = "0123456789abcdef0123456789abcdef"
SALT = "fedcba9876543210fedcba9876543210"
LOCAL_D = "/opt/couchdb/etc/local.d"
# The file the official image's entrypoint writes (COUCHDB_USER, COUCHDB_SECRET, ...).
IMAGE_LOCAL_D_FILES = ["docker.ini"]

PLAYBOOK = """
- name: Render the CouchDB role's configuration
  hosts: node1
  gather_facts: false
  tasks:
    - name: Write the configuration files
      ansible.builtin.include_role:
        name: couchdb
        tasks_from: configure.yml
        public: true
    - name: Keep what the container would be given
      ansible.builtin.copy:
        content: "{{ {'spec': _couchdb_spec, 'ini_file': _couchdb_ini_file} | to_json }}"
        dest: "{{ render_out }}"
        mode: "0600"
      changed_when: false
"""


class Rendered:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.playbook = root / "render.yml"
        self.playbook.write_text(PLAYBOOK)
        # Outside the role, its template lookup searches the playbook's templates/.
        (root / "templates").symlink_to(REPO / "roles" / "couchdb" / "templates")

    def render(self, name: str, **extra: Any) -> dict[str, Any]:
        out = self.root / f"{name}.json"
        variables = {
            "kuno_project": "kunounit",
            "kuno_network": "kunounit-internal",
            "kuno_root": str(self.root / "kuno"),
            "kuno_couchdb_image": "couchdb:3.5.1",
            "kuno_couchdb_flavour": "couchdb",
            "kuno_couchdb_admin_user": "admin",
            "kuno_couchdb_admin_password": PASSWORD,
            "kuno_couchdb_uuid": UUID,
            "kuno_couchdb_admin_password_salt": SALT,
            # The files belong to CouchDB's uid in production; to whoever runs the test here.
            "_couchdb_uid": os.getuid(),
            "render_out": str(out),
            "ansible_connection": "local",
            "ansible_python_interpreter": str(REPO / ".venv" / "bin" / "python"),
            **extra,
        }
        extra_file = self.root / f"{name}-vars.json"
        extra_file.write_text(json.dumps(variables))
        result = subprocess.run(
            [str(ANSIBLE_PLAYBOOK), "-i", "node1,", str(self.playbook), "-e", f"@{extra_file}"],
            cwd=REPO,
            env=dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1"),
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
        )
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
        assert PASSWORD not in result.stdout + result.stderr
        rendered = json.loads(out.read_text())
        rendered["output"] = result.stdout
        return rendered


@pytest.fixture(scope="module")
def renderer(tmp_path_factory: pytest.TempPathFactory) -> Rendered:
    if not ANSIBLE_PLAYBOOK.exists():
        pytest.skip("no .venv: run make venv")
    return Rendered(tmp_path_factory.mktemp("couchdb-config"))


@pytest.fixture(scope="module")
def couchdb(renderer: Rendered) -> dict[str, Any]:
    return renderer.render("couchdb")


def mounts(spec: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Container path -> (host source, mode) of each volume string of the spec."""
    found = {}
    for volume in spec["volumes"]:
        source, target, *mode = volume.split(":")
        found[target] = (source, mode[0] if mode else "rw")
    return found


def read_ini(path: str) -> configparser.ConfigParser:
    # strict: a section or key given twice is an error, as a reader would want.
    parser = configparser.ConfigParser(
        strict=True, interpolation=None, inline_comment_prefixes=(";",)
    )
    parser.read_string(Path(path).read_text())
    return parser


def test_couchdb_writes_its_own_changes_to_a_writable_file_on_the_host_read_last(
    couchdb: dict[str, Any],
) -> None:
    local_d = {
        target.rsplit("/", 1)[1]: source_mode
        for target, source_mode in mounts(couchdb["spec"]).items()
        if target.startswith(LOCAL_D + "/")
    }
    last = sorted([*IMAGE_LOCAL_D_FILES, *local_d])[-1]
    assert last in local_d, local_d
    source, mode = local_d[last]
    assert mode == "rw"
    # A host file (it outlives the container), not inside the container's own layer.
    assert Path(source).is_file() and Path(source).is_relative_to(
        Path(couchdb["spec"]["volumes"][1].split(":")[0]).parent
    )
    # The deployment's settings are read-only and read before it.
    assert local_d["kuno.ini"] == (couchdb["ini_file"], "ro")


def test_the_runtime_file_keeps_what_couchdb_wrote_across_deploys(
    renderer: Rendered, couchdb: dict[str, Any]
) -> None:
    runtime = Path(mounts(couchdb["spec"])[f"{LOCAL_D}/zz-runtime.ini"][0])
    written = "[couchdb]\nmax_dbs_open = 600\n"
    runtime.write_text(written)  # as CouchDB would, after a PUT to _config
    again = renderer.render("again")
    assert runtime.read_text() == written
    # Same inputs, same file and mounts: the container is not re-created.
    assert again["spec"] == couchdb["spec"]
    assert "changed=0" in again["output"], again["output"][-2000:]


def test_the_node_has_the_deployments_uuid_and_a_hashed_admin(couchdb: dict[str, Any]) -> None:
    ini = read_ini(couchdb["ini_file"])
    assert ini["couchdb"]["uuid"] == UUID
    stored = ini["admins"]["admin"]
    # CouchDB 3's documented form: -pbkdf2-<derived key hex>,<salt>,<iterations>,
    # PBKDF2-HMAC-SHA1 over the salt's characters, 20 bytes.
    assert stored.startswith("-pbkdf2-"), stored
    derived, salt, iterations = stored.removeprefix("-pbkdf2-").split(",")
    assert salt == SALT
    assert (
        derived
        == hashlib.pbkdf2_hmac("sha1", PASSWORD.encode(), salt.encode(), int(iterations), 20).hex()
    )
    # No plaintext password anywhere CouchDB's container is given or its files hold.
    assert PASSWORD not in json.dumps(couchdb["spec"])
    assert "COUCHDB_PASSWORD" not in couchdb["spec"]["env"]
    for path in Path(couchdb["ini_file"]).parent.iterdir():
        assert PASSWORD not in path.read_text(), path


def test_the_replicator_brings_a_restarted_or_rejoined_peer_back_within_15_seconds(
    couchdb: dict[str, Any],
) -> None:
    replicator = read_ini(couchdb["ini_file"])["replicator"]
    number = {key: int(value) for key, value in replicator.items() if key != "socket_options"}
    # Replications start within 2 s of the server answering (defaults: 5 s + up to 5 s).
    assert number["cluster_start_period"] + number["startup_jitter"] / 1000 <= 2
    # A silent connection (a partition) is given up after at most 10 s (default 30 s).
    assert number["connection_timeout"] <= 10000
    # Retries 0.25 s doubling: a peer that is back is asked again within 8 s.
    waits = [0.25 * 2**attempt for attempt in range(number["retries_per_request"])]
    assert max(waits) <= 8
    # A job that spent its retries on a dead peer ran longer than the health threshold,
    # so its crash is restarted at once, without the scheduler's 30 s back-off.
    assert number["health_threshold"] < sum(waits)
    # The scheduler looks for jobs to start every 5 s (default 60 s), and the back-off
    # of a job that keeps crashing is capped (default 30 s x 2^10).
    assert number["interval"] <= 5000
    assert 2 <= number["max_history"] <= 3
    assert "{nodelay, true}" in replicator["socket_options"]
    assert "{keepalive, true}" in replicator["socket_options"]


def test_couchdb_config_wins_in_the_same_sections(renderer: Rendered) -> None:
    rendered = renderer.render(
        "override",
        couchdb_config={"replicator": {"connection_timeout": 20000}, "log": {"level": "warning"}},
    )
    ini = read_ini(rendered["ini_file"])  # strict: one [replicator] section only
    assert ini["replicator"]["connection_timeout"] == "20000"
    assert ini["replicator"]["retries_per_request"] == "6"
    assert ini["log"]["level"] == "warning"


def test_the_stand_in_gets_its_admin_from_the_environment_and_no_ini(renderer: Rendered) -> None:
    rendered = renderer.render(
        "stand-in",
        kuno_couchdb_image="kuno/pouchdb-server:4.2.0",
        kuno_couchdb_flavour="pouchdb-server",
        kuno_root=str(renderer.root / "stand-in"),
    )
    spec = rendered["spec"]
    assert spec["volumes"] == ["kunounit-couchdb-node1:/opt/couchdb/data"]
    assert spec["env"]["COUCHDB_USER"] == "admin"
    assert spec["env"]["COUCHDB_PASSWORD"] == PASSWORD
    assert not (renderer.root / "stand-in").exists()
