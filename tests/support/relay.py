"""A TCP relay on 127.0.0.1 in front of a server, that can leave its connections dead.

`freeze()` is what a partition leaves behind once it has healed: every connection open at
that moment carries no byte more and never closes; a frozen connection the client writes
to again is reset, as a peer that lost the connection's state answers; connections opened
afterwards work. A client waiting on a frozen response (a replication's long-poll
_changes) waits for good: the stall CouchDB 3's pulls showed after a partition.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading

from tests.support.pouchdb import free_port

BUFFER = 65536


class _Link:
    def __init__(self, client: socket.socket, server: socket.socket) -> None:
        self.client = client
        self.server = server
        self.frozen = False
        self.closed = threading.Event()

    def close(self, reset: bool = False) -> None:
        if self.closed.is_set():
            return
        self.closed.set()
        for sock in (self.client, self.server):
            with contextlib.suppress(OSError):
                if reset:  # RST, not FIN
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.close()

    def upstream(self) -> None:
        """Client -> server; a write on a frozen link resets it."""
        while not self.closed.is_set():
            try:
                data = self.client.recv(BUFFER)
            except OSError:
                break
            if self.frozen:
                self.close(reset=True)
                return
            if not data:
                break
            try:
                self.server.sendall(data)
            except OSError:
                break
        if not self.frozen:
            self.close()

    def downstream(self) -> None:
        """Server -> client; a frozen link swallows what the server sends, its close too."""
        while not self.closed.is_set():
            try:
                data = self.server.recv(BUFFER)
            except OSError:
                break
            if not data:
                break
            if self.frozen:
                continue
            try:
                self.client.sendall(data)
            except OSError:
                break
        if not self.frozen:
            self.close()


class Relay:
    """127.0.0.1:<port> relayed to 127.0.0.1:<target_port>; a context manager."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._links: list[_Link] = []
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._accepting = threading.Thread(target=self._accept, daemon=True)
        self._accepting.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
                server.settimeout(None)
            except OSError:
                client.close()
                continue
            link = _Link(client, server)
            with self._lock:
                self._links.append(link)
            threading.Thread(target=link.upstream, daemon=True).start()
            threading.Thread(target=link.downstream, daemon=True).start()

    def freeze(self) -> int:
        """Leave every open connection dead; returns how many were open."""
        with self._lock:
            live = [link for link in self._links if not link.closed.is_set()]
            for link in live:
                link.frozen = True
            return len(live)

    def cut_frozen(self) -> int:
        """Reset every frozen connection (the peer's side of it is gone at last); returns how
        many."""
        with self._lock:
            frozen = [link for link in self._links if link.frozen and not link.closed.is_set()]
        for link in frozen:
            link.close(reset=True)
        return len(frozen)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            for link in self._links:
                link.close()
        self._accepting.join(timeout=5)

    def __enter__(self) -> Relay:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
