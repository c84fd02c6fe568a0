"""The web page (apps/web) as its users see it, in headless Chromium, against the session's
deployment: the seed's scenarios 1-4 between two browser users, a browser user and a `kuno`
CLI user both ways, a tampered message, a master restart, and what the proxy serves (the
page with its Content-Security-Policy, /config.json; no token in any URL).

Each screen is saved as a PNG in the artifacts directory (KUNO_WEB_ARTIFACTS, else a
temporary directory printed at the end). Every message a test sends is gone from every
node before it ends; a stopped container is started again.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect, sync_playwright

from kuno.client.api import Outgoing
from kuno.client.crypto import seal
from kuno.client.profile import Profile
from tests.deploy.conftest import Deployment, docker
from tests.support.system import PASSWORD, stored_message, wait_until
from tests.support.web import CHROMIUM, UNDECRYPTABLE, MainScreen, WebUser, launch

pytestmark = [pytest.mark.docker, pytest.mark.slow]

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)


@pytest.fixture(scope="module")
def system(proxied: Deployment) -> Deployment:
    return proxied


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    chosen = os.environ.get("KUNO_WEB_ARTIFACTS")
    path = Path(chosen) if chosen else tmp_path_factory.mktemp("web-artifacts")
    path.mkdir(parents=True, exist_ok=True)
    yield path
    print(f"\nweb screenshots: {path}")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no {CHROMIUM}: make chromium (scripts/setup-chromium) installs it")
    with sync_playwright() as playwright:
        browser = launch(playwright)
        yield browser
        browser.close()


@pytest.fixture
def users(
    browser: Browser, system: Deployment, artifacts: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., WebUser]]:
    """users(role, **viewport): a person with a fresh browser of their own on the deployed
    page, named `<role>-<random>` (not registered yet). After the test: no request URL of
    any of them carried a token, and the console showed no policy violation."""
    made: list[WebUser] = []
    test = re.sub(r"^test_", "", request.node.name)[:40]

    def make(role: str, **viewport: int) -> WebUser:
        user = WebUser(browser, system.base_url, artifacts, f"{test}-{role}", **viewport)
        user.username = f"{role}-{uuid.uuid4().hex[:8]}"
        user.password = PASSWORD
        made.append(user)
        return user

    yield make
    for user in made:
        user.close()
    for user in made:
        assert user.urls_with_a_token() == [], user.name
        assert [e for e in user.console_errors if "Content Security Policy" in e] == []


class Cli:
    """One user's `kuno` command with a config directory of its own, run to its end."""

    def __init__(self, system: Deployment, config_dir: Path, username: str) -> None:
        self.config_dir = config_dir
        self.username = username
        self.env = {**os.environ, "KUNO_CONFIG_DIR": str(config_dir)}
        self.base = [sys.executable, "-m", "kuno.client", "--master", system.base_url]
        for url in system.node_urls:
            self.base += ["--node", url]

    def run(self, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.base, *args],
            env=self.env,
            input=stdin,
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )

    def ok(self, *args: str, stdin: str = "") -> str:
        result = self.run(*args, stdin=stdin)
        assert result.returncode == 0, (args, result.stdout, result.stderr)
        return result.stdout + result.stderr


def nodes_holding(system: Deployment, message_ids: list[str]) -> dict[str, set[str]]:
    """For each node, which of the messages its CouchDB holds, live."""
    return {node: system.message_ids(node) & set(message_ids) for node in system.nodes}


def wait_gone_everywhere(system: Deployment, message_ids: list[str]) -> None:
    """Every node's CouchDB holds none of the messages (deletes replicate): bounded poll."""
    wait_until(
        lambda: not any(nodes_holding(system, message_ids).values()),
        within=30,
        what=f"{message_ids} deleted on every node",
        every=0.5,
    )


def all_ok(system: Deployment) -> dict[str, str]:
    return dict.fromkeys(system.nodes, "ok")


# --- what the proxy serves ---------------------------------------------------------------


def test_the_proxy_serves_the_page_its_assets_and_config_json_with_the_policy(
    system: Deployment,
) -> None:
    def get(path: str) -> tuple[int, dict[str, str], bytes]:
        with urllib.request.urlopen(f"{system.base_url}{path}", timeout=10) as answer:
            headers = {name.lower(): value for name, value in answer.headers.items()}
            return answer.status, headers, answer.read()

    status, headers, body = get("/")
    assert status == 200 and headers["content-type"].startswith("text/html"), headers
    assert headers["content-security-policy"] == CSP
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["cache-control"] == "no-cache"
    page = body.decode()
    # Everything from this origin, nothing inline that the policy would refuse.
    assets = re.findall(r'(?:src|href)="(/assets/[^"]+)"', page)
    assert any(a.endswith(".js") for a in assets), page
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", page), page
    assert " style=" not in page and "http://" not in page and "https://" not in page
    for asset in assets:
        status, headers, _ = get(asset)
        assert status == 200, asset
        assert headers["content-security-policy"] == CSP, asset
        assert "max-age=" in headers["cache-control"], (asset, headers)

    status, headers, body = get("/config.json")
    assert status == 200 and headers["content-type"] == "application/json", headers
    assert json.loads(body) == {"nodes": [f"/{node}" for node in system.nodes]}
    assert headers["content-security-policy"] == CSP


# --- the seed's scenarios, two browser users ----------------------------------------------


def test_scenario_1_online_delivery_shown_at_once_and_stored_on_every_node(
    users: Callable[..., WebUser], system: Deployment
) -> None:
    alice, bob = users("alice"), users("bob")
    login = alice.open()
    alice.screenshot("login")
    alice_main = login.register(alice.username, alice.password)
    bob_main = bob.register(bob.username, bob.password)
    # The served page carries the policy; a fresh main screen, all nodes answering.
    assert alice.page_headers["content-security-policy"] == CSP
    for main in (alice_main, bob_main):
        main.expect_connected()
        main.expect_nodes(all_ok(system))
    alice.screenshot("main")

    to_bob = alice_main.add_contact(bob.username)
    to_bob.send("hello, online bob")
    # bob had not added alice: her message adds her as his contact, and shows.
    from_alice = bob_main.open_conversation(alice.username)
    from_alice.expect_texts(["hello, online bob"])
    to_bob.expect_state("hello, online bob", "delivered")
    alice.screenshot("conversation")
    (message_id,) = alice.sent_ids()
    # The master acknowledged it after the fan-out: stored on all N nodes.
    ack = alice.acks()[message_id]
    assert (ack["delivered"], ack["stored"], ack["nodes"]) == (True, 3, len(system.nodes))
    # bob's page marked it received: the master deleted it from every node.
    wait_gone_everywhere(system, [message_id])


def test_scenarios_2_and_3_stored_while_offline_then_shown_oldest_first_and_deleted(
    users: Callable[..., WebUser], system: Deployment
) -> None:
    alice, bob = users("alice"), users("bob")
    alice_main = alice.register(alice.username, alice.password)
    bob.register(bob.username, bob.password).expect_connected()
    bob.close_page()  # bob is offline now

    # 2. Each message is stored on all N nodes, none delivered.
    texts = [f"offline message {number}" for number in range(1, 4)]
    to_bob = alice_main.add_contact(bob.username)
    for text in texts:
        to_bob.send(text)
    n = len(system.nodes)
    for text in texts:
        to_bob.expect_state(text, f"stored on {n} of {n}")
    ids = alice.sent_ids()
    assert len(ids) == 3
    assert nodes_holding(system, ids) == {node: set(ids) for node in system.nodes}

    # 3. bob opens the page: fetched from every node, deduplicated, decrypted, oldest first.
    bob_main = bob.log_in()
    bob_main.expect_nodes(all_ok(system))
    from_alice = bob_main.open_conversation(alice.username)
    from_alice.expect_texts(texts)
    bob.screenshot("stored-messages")
    # ... then deleted: every node lists none of them.
    wait_gone_everywhere(system, ids)
    # Shown once each, also after the page asked every node again.
    bob_main = bob.log_in()
    bob_main.open_conversation(alice.username).expect_texts([])


def test_scenario_4_a_stopped_storage_node_the_page_stores_and_fetches_with_the_others(
    users: Callable[..., WebUser], system: Deployment
) -> None:
    down = system.nodes[1]
    standard = system.container("standard", down)
    n = len(system.nodes)
    alice, bob = users("alice"), users("bob")
    alice_main = alice.register(alice.username, alice.password)
    bob.register(bob.username, bob.password).expect_connected()
    bob.close_page()
    to_bob = alice_main.add_contact(bob.username)
    docker("stop", standard)
    try:
        # The master stores on the others: the ack says so.
        to_bob.send("while a node is down")
        to_bob.expect_state("while a node is down", f"stored on {n - 1} of {n}")
        alice.screenshot("stored-on-fewer")
        (message_id,) = alice.sent_ids()
        assert alice.acks()[message_id]["stored"] == n - 1

        # bob's page names the node it cannot reach and shows what the others hold.
        bob_main = bob.log_in()
        bob_main.expect_nodes(
            {node: "unreachable" if node == down else "ok" for node in system.nodes}
        )
        bob_main.open_conversation(alice.username).expect_texts(["while a node is down"])
        bob.screenshot("node-unreachable")
        # Deleted on the nodes that answer.
        live = [node for node in system.nodes if node != down]
        wait_until(
            lambda: not any(message_id in system.message_ids(node) for node in live),
            within=30,
            what=f"{message_id} deleted on {live}",
        )
    finally:
        docker("start", standard)
        wait_until(lambda: system.healthy(down), within=90, what=f"{down} healthy again", every=1)
    # The restored node converges: its CouchDB got the message and the delete by replication.
    wait_gone_everywhere(system, [message_id])


# --- a browser user and a CLI user ----------------------------------------------------------


def test_a_browser_user_and_a_cli_user_talk_both_ways(
    users: Callable[..., WebUser], system: Deployment, tmp_path: Path
) -> None:
    bob = users("bob")
    alice = Cli(system, tmp_path / "alice", f"alice-{uuid.uuid4().hex[:8]}")
    alice.ok("register", alice.username, "--password-stdin", stdin=PASSWORD)
    bob_main = bob.register(bob.username, bob.password)
    bob_main.expect_connected()

    # CLI → browser, bob online: shown at once under the new contact alice.
    out = alice.ok("send", bob.username, "hello from the command line")
    assert "delivered" in out, out
    from_alice = bob_main.open_conversation(alice.username)
    from_alice.expect_texts(["hello from the command line"])
    message_id = out.split()[1].rstrip(":")

    # Browser → CLI, alice offline: stored, then her `kuno inbox` decrypts it.
    n = len(system.nodes)
    from_alice.send("hello from the browser")
    from_alice.expect_state("hello from the browser", f"stored on {n} of {n}")
    bob.screenshot("with-cli-user")
    inbox = alice.run("inbox")
    assert inbox.returncode == 0, inbox.stderr
    assert f"{bob.username}: hello from the browser" in inbox.stdout
    assert "1 messages, 0 undecryptable removed" in inbox.stderr
    wait_gone_everywhere(system, [message_id, *bob.sent_ids()])

    # The page's exported key is the CLI's key.json: bob reads his inbox from the command line.
    bob_cli = Cli(system, tmp_path / "bob", bob.username)
    bob_cli.config_dir.mkdir(mode=0o700)
    key_file = bob_main.export_key(bob_cli.config_dir)
    assert set(json.loads(key_file.read_text())) >= {"username", "publicKey", "privateKey"}
    bob_main.log_out()
    bob.close_page()
    alice.ok("send", bob.username, "read me in the terminal")
    bob_cli.ok("login", bob.username, "--password-stdin", stdin=PASSWORD)
    inbox = bob_cli.run("inbox")
    assert inbox.returncode == 0, inbox.stderr
    assert f"{alice.username}: read me in the terminal" in inbox.stdout


def tamper(ciphertext: str) -> str:
    """The ciphertext with one bit of its middle byte flipped."""
    raw = bytearray(base64.b64decode(ciphertext))
    raw[len(raw) // 2] ^= 0x01
    return base64.b64encode(bytes(raw)).decode()


def test_a_tampered_message_is_shown_as_undecryptable_and_removed(
    users: Callable[..., WebUser], system: Deployment, tmp_path: Path
) -> None:
    bob = users("bob")
    alice = Cli(system, tmp_path / "alice", f"alice-{uuid.uuid4().hex[:8]}")
    alice.ok("register", alice.username, "--password-stdin", stdin=PASSWORD)
    bob.register(bob.username, bob.password).expect_connected()
    bob.close_page()

    # alice seals a message to bob with her key; a storage tier that altered it would
    # store this: one bit flipped, written on every node as the master writes messages.
    profile = Profile.load(alice.config_dir)
    keys, token = profile.load_key(), profile.load_token()
    assert keys is not None and token is not None
    request = urllib.request.Request(
        f"{system.base_url}/api/users/{bob.username}/key",
        headers={"Authorization": f"Bearer {token}"},
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        bob_key = json.loads(answer.read())["publicKey"]
    ciphertext, nonce = seal("you should never read this", keys, bob_key)
    tampered = Outgoing(str(uuid.uuid4()), bob.username, tamper(ciphertext), nonce)
    now = int(time.time() * 1000)
    body = stored_message(tampered, alice.username, bob.username, now, now + 86_400_000)
    for node in system.nodes:
        system.put_message(node, body)
    out = alice.ok("send", bob.username, "this one is genuine")
    genuine = out.split()[1].rstrip(":")

    bob_main = bob.log_in()
    from_alice = bob_main.open_conversation(alice.username)
    expect(from_alice.messages).to_have_count(2)
    expect(from_alice.message(UNDECRYPTABLE)).to_have_count(1)
    expect(from_alice.message("this one is genuine")).to_have_count(1)
    expect(from_alice.log).not_to_contain_text("you should never read this")
    bob.screenshot("undecryptable")
    # Both are removed from every node: a message that cannot be read is not kept.
    wait_gone_everywhere(system, [tampered.id, genuine])


# --- reconnecting ----------------------------------------------------------------------------


def test_the_page_reconnects_after_the_master_restarts(
    users: Callable[..., WebUser], system: Deployment
) -> None:
    alice, bob = users("alice"), users("bob")
    alice_main = alice.register(alice.username, alice.password)
    bob_main = bob.register(bob.username, bob.password)
    to_bob = alice_main.add_contact(bob.username)
    for main in (alice_main, bob_main):
        main.expect_connected()
    master = system.container("master")
    docker("stop", master)
    try:
        for main in (alice_main, bob_main):
            expect(main.connection).to_have_text(re.compile("reconnecting|offline"))
        bob.screenshot("reconnecting")
    finally:
        docker("start", master)
    # Back without a new login: the same tokens, a new socket each.
    for main in (alice_main, bob_main):
        main.expect_connected()
    to_bob.send("after the restart")
    to_bob.expect_state("after the restart", "delivered")
    bob_main.open_conversation(alice.username).expect_texts(["after the restart"])
    wait_gone_everywhere(system, alice.sent_ids())


# --- the page's own promises ---------------------------------------------------------------


def test_no_request_url_carries_a_token(users: Callable[..., WebUser], system: Deployment) -> None:
    """Tokens go in Authorization headers and the WebSocket's first frame, never in a URL
    (where proxies and logs would keep them). `users` checks it after every test; this one
    goes through each kind of request on purpose."""
    alice, bob = users("alice"), users("bob")
    alice_main = alice.register(alice.username, alice.password)
    bob.register(bob.username, bob.password).expect_connected()
    bob.close_page()
    alice_main.add_contact(bob.username).send("a stored one")
    bob.log_in().open_conversation(alice.username).expect_texts(["a stored one"])
    wait_gone_everywhere(system, alice.sent_ids())
    requests = alice.requests + bob.requests
    # Every kind: the page, the master's API, each node's listing and delete, the socket.
    assert any(url.endswith("/api/login") for url in requests)
    assert any(re.search(r"/node\d+/messages/", url) for url in requests)
    assert any(url.endswith("/ws") for url in requests)
    assert len(bob.collect_tokens()) >= 2
    assert [url for user in (alice, bob) for url in user.urls_with_a_token()] == []


def test_at_360_px_by_keyboard_alone(users: Callable[..., WebUser], system: Deployment) -> None:
    carol = users("carol", width=360, height=740)
    login = carol.open()
    page = carol.tab

    def overflow() -> int:
        return int(page.evaluate("document.documentElement.scrollWidth - window.innerWidth"))

    assert overflow() <= 0
    carol.screenshot("login-360px")
    # Tab from the top reaches the fields and buttons, in order; Enter presses.
    page.keyboard.press("Tab")
    expect(login.username).to_be_focused()
    page.keyboard.type(carol.username)
    page.keyboard.press("Tab")
    expect(login.password).to_be_focused()
    page.keyboard.type(carol.password)
    page.keyboard.press("Tab")
    expect(login.log_in_button).to_be_focused()
    page.keyboard.press("Tab")
    expect(login.register_button).to_be_focused()
    page.keyboard.press("Enter")
    main = MainScreen(carol)
    main.expect_connected()
    assert overflow() <= 0
    carol.screenshot("main-360px")
    # Every control of the main screen is reached with Tab.
    controls = {
        "Add contact": main.add_contact_box,
        "Add": main.add_button,
        "Export key": main.export_key_button,
        "Log out": main.log_out_button,
    }
    reached: set[str] = set()
    for _ in range(40):
        page.keyboard.press("Tab")
        reached |= {
            name
            for name, control in controls.items()
            if control.evaluate("element => element === document.activeElement")
        }
    assert reached == set(controls)
