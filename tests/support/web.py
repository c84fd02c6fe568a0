"""The web page (apps/web) driven in Debian's headless Chromium with Playwright: one page
object per screen, found as a user finds things (roles, labels, visible text).

- `launch(playwright)`: /usr/bin/chromium with the flags of DESIGN.md "Web client"
  (Playwright's own browser download cannot work here);
- `WebUser`: one person's browser (a context of its own: its own IndexedDB, so its own
  keys) on the page at `base_url`, which records every request URL, every WebSocket frame
  and every token the master handed it, and saves screenshots into `artifacts`;
- `LoginScreen`, `MainScreen`, `Conversation`: the screens of WEB-CONTRACT.md's UI contract.

Nothing here sleeps: every wait is Playwright's `expect`, bounded by `WAIT_MS`, for what a
user would see.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from playwright.sync_api import (
    Browser,
    BrowserContext,
    Locator,
    Page,
    Playwright,
    Response,
    WebSocket,
    expect,
)

CHROMIUM = "/usr/bin/chromium"
# DESIGN.md "Web client": what runs headless here. Playwright gives each launch a fresh
# user-data directory of its own.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# The longest a user is asked to wait for something to show (a reconnect after the master
# restarted, a stopped node's requests failing): a bound, not a measurement.
WAIT_MS = 30_000
# Message states of one's own messages (WEB-CONTRACT.md).
STATES = re.compile(r"sending|stored on \d+ of \d+|delivered|failed")
UNDECRYPTABLE = "Could not decrypt this message"
# Any JSON Web Token (the master's tokens are JWTs): header.payload.signature, base64url.
JWT = re.compile(r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")

expect.set_options(timeout=WAIT_MS)


def launch(playwright: Playwright) -> Browser:
    """Debian's Chromium, headless."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)


class WebUser:
    """One person with a browser of their own (a fresh context) on the page at base_url.

    `requests` holds every URL the page asked for (HTTP and WebSocket), `frames_sent` and
    `frames_received` the WebSocket frames as JSON objects, `tokens` every token the
    master's /api/login and /api/refresh answers gave the page.
    """

    def __init__(
        self,
        browser: Browser,
        base_url: str,
        artifacts: Path,
        name: str,
        width: int = 1024,
        height: int = 720,
    ) -> None:
        self.base_url = base_url
        self.artifacts = artifacts
        self.name = name
        self.username = ""
        self.password = ""
        self.context: BrowserContext = browser.new_context(
            base_url=base_url, viewport={"width": width, "height": height}, accept_downloads=True
        )
        self.context.set_default_timeout(WAIT_MS)
        self.requests: list[str] = []
        self.frames_sent: list[dict[str, Any]] = []
        self.frames_received: list[dict[str, Any]] = []
        self.tokens: list[str] = []
        self._token_answers: list[Response] = []
        # The page's own answer headers (names in lower case) and the console's errors.
        self.page_headers: dict[str, str] = {}
        self.console_errors: list[str] = []
        self.page: Page | None = None

    # --- the browser -----------------------------------------------------------------

    def open(self) -> LoginScreen:
        """A new tab on the page (the previous one, if any, closed: the user was offline)."""
        self.close_page()
        page = self.context.new_page()
        page.on("request", lambda request: self.requests.append(request.url))
        page.on("websocket", self._watch_socket)
        page.on("response", self._watch_response)
        page.on(
            "console",
            lambda message: message.type == "error" and self.console_errors.append(message.text),
        )
        answer = page.goto("/")
        assert answer is not None and answer.ok, answer
        self.page_headers = answer.headers
        self.page = page
        return LoginScreen(self)

    def close_page(self) -> None:
        """Close the tab: the user goes offline (the context keeps IndexedDB, so the key)."""
        if self.page is not None:
            self.collect_tokens()
            self.page.close()
            self.page = None

    def close(self) -> None:
        self.close_page()
        self.context.close()

    def screenshot(self, screen: str) -> Path:
        """The whole page as `<name>-<screen>.png` in artifacts."""
        path = self.artifacts / f"{self.name}-{screen}.png"
        self.tab.screenshot(path=str(path), full_page=True)
        return path

    @property
    def tab(self) -> Page:
        assert self.page is not None, "no tab open: call open()"
        return self.page

    # --- what the page sent and got ----------------------------------------------------

    def _watch_socket(self, socket: WebSocket) -> None:
        self.requests.append(socket.url)
        socket.on("framesent", lambda payload: self._frame(self.frames_sent, payload))
        socket.on("framereceived", lambda payload: self._frame(self.frames_received, payload))

    @staticmethod
    def _frame(frames: list[dict[str, Any]], payload: str | bytes) -> None:
        try:
            frame = json.loads(payload)
        except ValueError:
            return
        if isinstance(frame, dict):
            frames.append(frame)

    def _watch_response(self, response: Response) -> None:
        # Bodies are read later (collect_tokens): not inside the event handler.
        if re.search(r"/api/(login|refresh)$", response.url) and response.ok:
            self._token_answers.append(response)

    def collect_tokens(self) -> list[str]:
        """Every token the master gave this user's pages so far."""
        while self._token_answers:
            answer = self._token_answers.pop(0)
            self.tokens.append(answer.json()["token"])
        return self.tokens

    def urls_with_a_token(self) -> list[str]:
        """The request URLs (HTTP and WebSocket) that carry one of this user's tokens, or
        anything shaped like a JWT: none, when the page sends tokens in headers and frames."""
        tokens = self.collect_tokens()
        return [url for url in self.requests if JWT.search(url) or any(t in url for t in tokens)]

    def acks(self) -> dict[str, dict[str, Any]]:
        """The master's ack frames by message id."""
        return {frame["id"]: frame for frame in self.frames_received if frame.get("type") == "ack"}

    def sent_ids(self) -> list[str]:
        """Ids of the messages the page sent, in order (a resend counted once)."""
        ids = [frame["id"] for frame in self.frames_sent if frame.get("type") == "send"]
        return list(dict.fromkeys(ids))

    # --- the screens ---------------------------------------------------------------------

    def register(self, username: str, password: str) -> MainScreen:
        self.username, self.password = username, password
        return self.open().register(username, password)

    def log_in(self) -> MainScreen:
        """Open the page again and log in (the key is in this browser)."""
        return self.open().log_in(self.username, self.password)


class LoginScreen:
    def __init__(self, user: WebUser) -> None:
        self.user = user
        page = user.tab
        self.heading = page.get_by_role("heading", name="kuno", level=1)
        self.username = page.get_by_label("Username")
        self.password = page.get_by_label("Password", exact=True)
        self.log_in_button = page.get_by_role("button", name="Log in")
        self.register_button = page.get_by_role("button", name="Register")
        self.import_key_button = page.get_by_role("button", name="Import key")
        self.alert = page.get_by_role("alert")
        expect(self.heading).to_be_visible()

    def fill(self, username: str, password: str) -> None:
        self.username.fill(username)
        self.password.fill(password)

    def register(self, username: str, password: str) -> MainScreen:
        self.fill(username, password)
        self.register_button.click()
        return MainScreen(self.user)

    def log_in(self, username: str, password: str) -> MainScreen:
        self.fill(username, password)
        self.log_in_button.click()
        return MainScreen(self.user)

    def import_key(self, key_file: Path) -> None:
        """After a log-in in a browser without the key: give it the CLI's key.json."""
        self.user.tab.get_by_label("Key file").set_input_files(str(key_file))

    def expect_error(self, text: str | re.Pattern[str]) -> None:
        expect(self.alert.filter(has_text=text)).to_be_visible()


class MainScreen:
    def __init__(self, user: WebUser) -> None:
        self.user = user
        page = user.tab
        self.contacts = page.get_by_role("region", name="Contacts")
        self.add_contact_box = page.get_by_label("Add contact")
        self.add_button = self.contacts.get_by_role("button", name="Add", exact=True)
        self.storage_nodes = page.get_by_role("status", name="Storage nodes")
        self.connection = page.get_by_role("status", name="Connection")
        self.export_key_button = page.get_by_role("button", name="Export key")
        self.log_out_button = page.get_by_role("button", name="Log out")
        expect(self.contacts).to_be_visible()

    def contact(self, username: str) -> Locator:
        """The contact's button (its accessible name starts with the username)."""
        return self.contacts.get_by_role(
            "button", name=re.compile(rf"^{re.escape(username)}(\b|$)")
        )

    def add_contact(self, username: str) -> Conversation:
        self.add_contact_box.fill(username)
        self.add_button.click()
        expect(self.contact(username)).to_be_visible()
        return self.open_conversation(username)

    def open_conversation(self, username: str) -> Conversation:
        self.contact(username).click()
        return Conversation(self.user, username)

    def expect_connected(self) -> None:
        expect(self.connection).to_have_text("connected")

    def expect_nodes(self, states: dict[str, str]) -> None:
        """The status line reads exactly `node1 ok · node2 unreachable ...` in this order."""
        expect(self.storage_nodes).to_have_text(
            " · ".join(f"{node} {state}" for node, state in states.items())
        )

    def export_key(self, directory: Path) -> Path:
        """Press Export key; the downloaded key.json saved into directory."""
        with self.user.tab.expect_download() as download:
            self.export_key_button.click()
        path = directory / "key.json"
        download.value.save_as(str(path))
        return path

    def log_out(self) -> LoginScreen:
        self.log_out_button.click()
        return LoginScreen(self.user)


class Conversation:
    def __init__(self, user: WebUser, contact: str) -> None:
        self.user = user
        self.contact = contact
        page = user.tab
        self.log = page.get_by_role("log", name=f"Conversation with {contact}")
        self.messages = self.log.get_by_role("article")
        self.message_box = page.get_by_label("Message", exact=True)
        self.send_button = page.get_by_role("button", name="Send", exact=True)
        expect(self.log).to_be_visible()

    def message(self, text: str) -> Locator:
        return self.messages.filter(has_text=text)

    def send(self, text: str) -> Locator:
        """Type and press Send; the message's article."""
        self.message_box.fill(text)
        self.send_button.click()
        article = self.message(text)
        expect(article).to_be_visible()
        return article

    def expect_state(self, text: str, state: str) -> None:
        """The own message's state text reads `state` ("stored on 3 of 3", "delivered")."""
        expect(self.message(text)).to_contain_text(state)

    def expect_texts(self, texts: list[str]) -> None:
        """Exactly these messages, in this order (each article contains its text)."""
        expect(self.messages).to_have_count(len(texts))
        for index, text in enumerate(texts):
            expect(self.messages.nth(index)).to_contain_text(text)
