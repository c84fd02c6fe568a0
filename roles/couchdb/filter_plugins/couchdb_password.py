"""couchdb_pbkdf2: a server admin's password as CouchDB 3 stores it in an ini file."""

from __future__ import annotations

import hashlib
import re

from ansible.errors import AnsibleFilterError

_SALT = re.compile(r"^[0-9a-f]{32}$")


def couchdb_pbkdf2(password: str, salt: str, iterations: int = 10000) -> str:
    """Return ``-pbkdf2-<derived key>,<salt>,<iterations>`` for an ``[admins]`` entry.

    CouchDB 3's documented form (docs "Authentication and Authorization", Server
    Administrators): PBKDF2-HMAC-SHA1 of the password with the salt's characters as the
    salt, 20 bytes, lower-case hex. ``salt`` is 32 lower-case hex characters (a fixed salt
    per node keeps the rendered file, and so the container, unchanged from run to run).

    Raises AnsibleFilterError on an empty password, a malformed salt or iterations < 1;
    the message never holds the password.
    """
    if not password:
        raise AnsibleFilterError("couchdb_pbkdf2: the password is empty")
    if not isinstance(salt, str) or not _SALT.match(salt):
        raise AnsibleFilterError("couchdb_pbkdf2: the salt must be 32 lower-case hex characters")
    rounds = int(iterations)
    if rounds < 1:
        raise AnsibleFilterError(f"couchdb_pbkdf2: iterations must be at least 1 (is {rounds})")
    key = hashlib.pbkdf2_hmac("sha1", password.encode(), salt.encode(), rounds, 20)
    return f"-pbkdf2-{key.hex()},{salt},{rounds}"


class FilterModule:
    def filters(self) -> dict[str, object]:
        return {"couchdb_pbkdf2": couchdb_pbkdf2}
