"""Names that would address CouchDB's special documents and endpoints (issue 17 item 1).

One list for every service's tests: a user id, a database name or a path segment that
reaches CouchDB as one of these would read or change what no client may.
"""

from __future__ import annotations

#: Plain: each begins with `_`, which CouchDB keeps for its own documents and endpoints.
SPECIAL_NAMES = [
    "_all_docs",
    "_changes",
    "_security",
    "_design",
    "_design/x",
    "_local/x",
    "_find",
    "_index",
    "_bulk_docs",
    "_explain",
    "_purge",
    "_revs_diff",
    "_revs_limit",
    "_x",
]

#: The same names as a path segment, percent-encoded (once or twice, either case) or
#: reached through `..`, as a client or attacker might send them. `_design/x` and
#: `_local/x`, a segment with a plain `/`, are in SPECIAL_NAMES.
ENCODED_SEGMENTS = [
    "%5Fall_docs",
    "%5fchanges",
    "%5Fsecurity",
    "_design%2Fx",
    "%5Fdesign%2Fx",
    "%5fdesign%2Fx",
    "_local%2Fx",
    "%5Flocal%2fx",
    "%255Fall_docs",
    "..%2F_all_docs",
    "%2E%2E/_security",
]
