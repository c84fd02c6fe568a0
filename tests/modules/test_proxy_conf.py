"""The proxy role's nginx configuration as rendered: every error nginx answers itself is
the API's JSON error, and the services' own errors are not intercepted. The deployed
behaviour is tests/deploy/test_proxy_errors.py."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from tests.modules.helpers import REPO, Ansible, PlaybookRun

ROLE = REPO / "roles" / "proxy"


INVENTORY = {
    "kuno_project": "kuno",
    "kuno_network": "kuno-internal",
    "kuno_proxy_image": "kuno/proxy:bookworm",
    "kuno_image_source": "build",
    "proxy_storage_nodes": ["node1", "node2", "node3"],
    "kuno_repo_dir": str(REPO),
    # Fixed, so rendering reads no tree (scripts/build-web --version gives the real one).
    "proxy_web_version": "0123456789ab",
}

# DESIGN.md's and WEB-CONTRACT.md's policy, exactly: the page works under this one.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)


def file_lookup(path: Path) -> str:
    return f"{{{{ lookup('ansible.builtin.file', '{path}') }}}}"


def render(ansible: Ansible, dest: Path, **inventory: object) -> PlaybookRun:
    """The role's preflight, then its files as its tasks write them under `dest`: kuno.conf
    (the sites), nginx.conf (the main configuration) and the container spec (spec.json)."""
    dest.mkdir(parents=True, exist_ok=True)
    templates = {"kuno.conf": "kuno.conf.j2", "nginx.conf": "nginx.conf.j2"}
    run = ansible.run(
        [
            {
                "name": "defaults",
                "ansible.builtin.include_vars": str(ROLE / "defaults" / "main.yml"),
            },
            {"name": "vars", "ansible.builtin.include_vars": str(ROLE / "vars" / "main.yml")},
            {
                "name": "inventory",
                "ansible.builtin.set_fact": INVENTORY | {"kuno_root": str(dest)} | inventory,
            },
            {
                "name": "preflight",
                "ansible.builtin.include_tasks": str(ROLE / "tasks" / "preflight.yml"),
            },
        ]
        + [
            {
                "name": f"render {name}",
                "ansible.builtin.template": {
                    "src": str(ROLE / "templates" / template),
                    "dest": str(dest / name),
                },
            }
            for name, template in templates.items()
        ]
        + [
            {
                # What the role's lookups give, from the files just rendered: the spec
                # names the files by their content.
                "name": "rendered",
                "ansible.builtin.set_fact": {
                    "_proxy_conf": file_lookup(dest / "kuno.conf"),
                    "_proxy_main_conf": file_lookup(dest / "nginx.conf"),
                },
            },
            {
                "name": "write spec.json",
                "ansible.builtin.copy": {
                    "content": "{{ _proxy_spec | to_json }}",
                    "dest": str(dest / "spec.json"),
                },
            },
        ]
    )
    return run


@pytest.fixture(scope="module")
def rendered(ansible: Ansible, work_root: Path) -> dict[str, str]:
    dest = work_root / "proxy-defaults"
    run = render(ansible, dest)
    assert run.returncode == 0, run.output
    return {name: (dest / name).read_text() for name in ("kuno.conf", "nginx.conf", "spec.json")}


@pytest.fixture(scope="module")
def conf(rendered: dict[str, str]) -> str:
    return rendered["kuno.conf"]


def test_every_error_nginx_answers_has_a_json_page(conf: str) -> None:
    # The server's error pages (the /ws location lists its own: see below).
    pages = dict(re.findall(r"^    error_page (\d+) (\S+);", conf, re.MULTILINE))
    assert {"400", "404", "413", "414", "494", "502", "504"} <= set(pages)
    for status, uri in pages.items():
        # An internal URI, not a named location: nginx cannot redirect a request whose
        # request line it failed to parse (GET /api/%00) to a named location.
        assert uri == f"/.kuno/errors/{status}"
        block = re.search(
            rf"location = {re.escape(uri)} {{ internal; return {status} '(.*)\\n'; }}", conf
        )
        assert block, f"no page for {status}"
        assert "$" not in block[1], "nginx would read a variable"
        body = json.loads(block[1])
        assert set(body) == {"error", "reason"} and all(body.values()), body
    pages_block = conf[conf.index("location ^~ /.kuno/errors/") :]
    assert "default_type application/json;" in pages_block.split("location =")[0]
    assert "types { }" in pages_block.split("location =")[0]


def test_the_services_own_errors_pass_through(conf: str) -> None:
    assert not re.search(r"^\s*proxy_intercept_errors\s+on", conf, re.MULTILINE)
    assert json.loads(
        re.search(r"return 413 '(.*)\\n';", conf)[1]  # type: ignore[index]
    ) == {"error": "too_large", "reason": "the request body is larger than the proxy accepts (1m)"}
    for node in ("node1", "node2", "node3"):
        assert f"location /{node}/ {{" in conf


def test_operators_details_stay_off_the_proxy(conf: str) -> None:
    """Through the proxy a node's health is its /status ({"node", "status"}) and its
    metrics are the proxy's 404; tests/deploy/test_proxy_redaction.py asks the proxy."""
    for node in ("node1", "node2", "node3"):
        health = re.search(rf"location = /{node}/health {{(.*?)}}", conf, re.DOTALL)
        assert health, f"no exact location for /{node}/health"
        assert re.search(rf"proxy_pass http://\$kuno_{node}/status;", health[1]), health[1]
        metrics = re.search(rf"location = /{node}/metrics {{(.*?)}}", conf, re.DOTALL)
        assert metrics and metrics[1].split() == ["return", "404;"], metrics


def directive(conf: str, name: str) -> str:
    """The one value of a directive that takes one (`name value;`)."""
    values = re.findall(rf"^\s*{name}\s+(\S+);", conf, re.MULTILINE)
    assert len(values) == 1, f"{name}: {values}"
    return values[0]


def ws_location(conf: str) -> str:
    return re.search(r"location = /ws \{(.*?)\n    \}", conf, re.DOTALL)[1]  # type: ignore[index]


def test_nginx_holds_10000_websockets_and_the_open_files_they_need(
    rendered: dict[str, str],
) -> None:
    """Each WebSocket is two of nginx's connections (client and master), counted per worker:
    one worker alone must hold the proxy's limit of WebSockets and other traffic, within
    its open files, within the container's nofile ulimit."""
    main, spec = rendered["nginx.conf"], json.loads(rendered["spec.json"])
    websockets = int(
        re.search(r"limit_conn kuno_websockets (\d+);", ws_location(rendered["kuno.conf"]))[1]
    )  # type: ignore[index]
    connections = int(directive(main, "worker_connections"))
    workers = int(directive(main, "worker_processes"))
    rlimit = int(directive(main, "worker_rlimit_nofile"))
    assert websockets >= 10_000
    # The kernel spreads connections over the workers (reuseport); a 25 % uneven split
    # still fits, with 1024 connections of other traffic on each.
    assert re.findall(r"^\s*listen (.*);", rendered["kuno.conf"], re.MULTILINE) == ["80 reuseport"]
    assert connections >= 1.25 * 2 * websockets / workers + 1024
    assert rlimit >= connections
    assert spec["ulimits"] == [f"nofile:{rlimit}:{rlimit}"]
    # The main configuration is mounted over the image's (Debian's says 768) and keeps
    # the sites and the shared zone the /ws limit counts in.
    assert f"{spec['volumes'][0].split(':')[0]}:/etc/nginx/nginx.conf:ro" == spec["volumes"][0]
    assert "include /etc/nginx/conf.d/*.conf;" in main
    assert re.search(r"limit_conn_zone \$kuno_websockets zone=kuno_websockets:\S+;", main)
    assert directive(main, "limit_conn_status") == "503"
    # An open WebSocket holds nginx's buffer each way: 1k, not a page.
    assert re.search(r"proxy_buffer_size 1k;", ws_location(rendered["kuno.conf"]))
    assert directive(main, "user") == "www-data"  # the built image is Debian's nginx


def test_a_websocket_over_the_proxy_limit_is_a_json_503_naming_it(conf: str) -> None:
    location = ws_location(conf)
    pages = dict(re.findall(r"error_page (\d+) (\S+);", location))
    server_pages = dict(re.findall(r"^    error_page (\d+) (\S+);", conf, re.MULTILINE))
    # error_page in a location replaces the server's: every one is listed again.
    assert set(pages) == set(server_pages)
    assert {status: uri for status, uri in pages.items() if status != "503"} == {
        status: uri for status, uri in server_pages.items() if status != "503"
    }
    assert pages["503"] == "/.kuno/errors/websockets"
    page = re.search(
        r"location = /.kuno/errors/websockets \{ internal; return 503 '(.*)\\n'; \}", conf
    )
    assert page, "no page for the /ws limit"
    assert json.loads(page[1]) == {
        "error": "too_many_websockets",
        "reason": "the proxy holds its maximum of 12500 WebSockets; try again later",
    }


def test_the_official_image_runs_its_workers_as_its_own_user(
    ansible: Ansible, work_root: Path
) -> None:
    dest = work_root / "proxy-pull"
    run = render(ansible, dest, kuno_image_source="pull", kuno_proxy_image="nginx:1.27")
    assert run.returncode == 0, run.output
    assert directive((dest / "nginx.conf").read_text(), "user") == "nginx"


@pytest.mark.parametrize(
    "limits",
    [
        {"proxy_max_websockets": 20000},  # 40,000 connections: over 2 x 19,000
        {"proxy_worker_processes": 1},  # 12,500 WebSockets on one worker of 19,000
        {"proxy_worker_connections": 30000},  # over the default nofile 20,000
    ],
)
def test_limits_nginx_cannot_hold_are_refused_before_deploying(
    ansible: Ansible, work_root: Path, limits: dict[str, int]
) -> None:
    name = "-".join(f"{key}-{value}" for key, value in limits.items())
    run = render(ansible, work_root / f"proxy-bad-{name}", **limits)
    assert run.returncode != 0
    assert "each WebSocket holds two of nginx's connections" in run.output


@pytest.mark.docker
def test_the_built_image_s_nginx_accepts_the_configuration(
    rendered: dict[str, str], work_root: Path
) -> None:
    """nginx -t in the image the local deployment builds, with the container's ulimit."""
    image = "kuno/proxy:bookworm"
    try:
        present = subprocess.run(
            ["docker", "image", "inspect", image], capture_output=True, check=False, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired):
        pytest.skip("no Docker engine answers (scripts/setup-docker starts one)")
    if present.returncode != 0:
        pytest.skip(f"no {image} image: make images builds it")
    dest = work_root / "proxy-defaults"
    spec = json.loads(rendered["spec.json"])
    check = subprocess.run(
        [
            *("docker", "run", "--rm", "--network", "none"),
            *("--ulimit", spec["ulimits"][0].replace(":", "=", 1)),
            *("-v", f"{dest / 'nginx.conf'}:/etc/nginx/nginx.conf:ro"),
            *("-v", f"{dest / 'kuno.conf'}:/etc/nginx/conf.d/default.conf:ro"),
            *(image, "nginx", "-t"),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert check.returncode == 0, check.stderr
    assert "test is successful" in check.stderr
    assert "[warn]" not in check.stderr and "[emerg]" not in check.stderr, check.stderr


def location(conf: str, pattern: str) -> str:
    """The body of the first location block whose head matches pattern."""
    found = re.search(
        rf"^    location {pattern} \{{\n(.*?)^    \}}", conf, re.MULTILINE | re.DOTALL
    )
    assert found, f"no location {pattern}"
    return found[1]


def test_every_answer_carries_the_content_security_policy(conf: str) -> None:
    server = conf[conf.index("server_name") :]
    headers = dict(re.findall(r'^    add_header (\S+) "?(.*?)"? always;$', server, re.MULTILINE))
    assert headers["Content-Security-Policy"] == CSP
    assert headers["X-Content-Type-Options"] == "nosniff"
    # nginx drops the server's add_header in a location that has one of its own.
    assert not re.search(r"^\s{8,}add_header", conf, re.MULTILINE)


def test_the_page_is_served_at_the_root_from_its_read_only_mount(
    rendered: dict[str, str],
) -> None:
    conf, spec = rendered["kuno.conf"], json.loads(rendered["spec.json"])
    root = f"{INVENTORY['proxy_web_version']}:/usr/share/kuno/web:ro"
    mounts = [volume for volume in spec["volumes"] if volume.endswith(":/usr/share/kuno/web:ro")]
    assert len(mounts) == 1 and mounts[0].endswith(f"/web/{root}"), spec["volumes"]
    index = location(conf, "= /")
    assert "try_files /index.html =404;" in index and "expires -1;" in index
    # Any other path is a file of the page or the proxy's JSON 404.
    assert "try_files $uri =404;" in location(conf, "/")
    assert "expires max;" in location(conf, r"\^~ /assets/")


def test_config_json_names_the_inventory_s_storage_nodes(
    ansible: Ansible, work_root: Path, conf: str
) -> None:
    def config(text: str) -> object:
        block = location(text, "= /config.json")
        assert "default_type application/json;" in block
        return json.loads(re.search(r"return 200 '(.*)\\n';", block)[1])  # type: ignore[index]

    assert config(conf) == {"nodes": ["/node1", "/node2", "/node3"]}
    dest = work_root / "proxy-four-nodes"
    nodes = ["node1", "node2", "node3", "node4"]
    run = render(ansible, dest, proxy_storage_nodes=nodes)
    assert run.returncode == 0, run.output
    assert config((dest / "kuno.conf").read_text()) == {"nodes": [f"/{n}" for n in nodes]}
