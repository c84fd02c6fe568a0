# -*- coding: utf-8 -*-
# Copyright (c) 2026, the kuno authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Shared code of the couchdb_* modules: connection options, an HTTP client on
Ansible's own URL helpers (nothing to install on a managed host), CouchDB status
codes as exceptions, server flavour detection, and the read -> normalise ->
compare -> act cycle that each module specialises.
"""

from __future__ import annotations

import calendar
import json
import time
import traceback
from email.utils import parsedate_tz
from urllib.error import HTTPError, URLError
from urllib.parse import quote, urlsplit, urlunsplit

from ansible.module_utils.urls import open_url

FLAVOUR_COUCHDB = "couchdb"
FLAVOUR_POUCHDB = "pouchdb-server"

STATE_PRESENT = "present"
STATE_ABSENT = "absent"

OPERATION_CREATE = "create"
OPERATION_UPDATE = "update"
OPERATION_DELETE = "delete"

REDACTED = "********"


def couchdb_argument_spec():
    """The connection options every couchdb_* module takes."""
    return dict(
        url=dict(type="str", required=True),
        user=dict(type="str"),
        password=dict(type="str", no_log=True),
        timeout=dict(type="float", default=10),
        validate_certs=dict(type="bool", default=True),
    )


# --- errors -------------------------------------------------------------------


class CouchDBError(Exception):
    """A request CouchDB refused, or could not be made. The message never holds a credential."""

    status = None

    def __init__(self, method, path, status=None, error=None, reason=None):
        self.method = method
        self.path = path
        self.status = status if status is not None else self.status
        self.error = error
        self.reason = reason
        super().__init__(self.describe())

    def describe(self):
        text = "%s %s" % (self.method, self.path)
        if self.status is not None:
            text += " answered HTTP %s" % self.status
        if self.error or self.reason:
            text += ": %s" % ": ".join(str(part) for part in (self.error, self.reason) if part)
        return text


class ConnectionFailed(CouchDBError):
    def describe(self):
        return "%s %s failed: %s" % (self.method, self.path, self.reason)


class BadRequest(CouchDBError):
    status = 400


class Unauthorized(CouchDBError):
    status = 401


class Forbidden(CouchDBError):
    status = 403


class NotFound(CouchDBError):
    status = 404


class Conflict(CouchDBError):
    status = 409


class PreconditionFailed(CouchDBError):
    status = 412


class ServerError(CouchDBError):
    status = 500


_ERRORS_BY_STATUS = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    412: PreconditionFailed,
}


def error_for_status(method, path, status, body):
    """The exception for an HTTP error status, with CouchDB's own error and reason."""
    error = reason = None
    if isinstance(body, dict):
        error, reason = body.get("error"), body.get("reason")
    elif body:
        reason = str(body)[:200]
    cls = _ERRORS_BY_STATUS.get(status, ServerError if status >= 500 else CouchDBError)
    return cls(method, path, status=status, error=error, reason=reason)


# --- URLs and credentials -----------------------------------------------------


def quote_segment(value):
    """One path segment: database names may contain '/', which CouchDB wants as %2F."""
    return quote(value, safe="")


def strip_userinfo(url):
    """The URL without user and password, for output and comparison."""
    if not isinstance(url, str):
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = "[%s]" % host
    if parts.port is not None:
        host += ":%d" % parts.port
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def url_username(url):
    try:
        return urlsplit(url).username
    except (TypeError, ValueError):
        return None


def with_userinfo(url, user, password):
    """The URL with user and password, for servers that only read credentials there."""
    parts = urlsplit(url)
    userinfo = quote(user, safe="")
    if password is not None:
        userinfo += ":" + quote(password, safe="")
    return urlunsplit((parts.scheme, userinfo + "@" + parts.netloc, parts.path, parts.query, parts.fragment))


def check_plain_url(url):
    """Why a server or endpoint URL cannot be used, or None. The reason never repeats the URL."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return "cannot be parsed"
    if parts.scheme not in ("http", "https"):
        return "must be an http:// or https:// URL"
    if not parts.hostname:
        return "has no host"
    if parts.username is not None or parts.password is not None:
        return "must not contain credentials (use the *_user and *_password options)"
    return None


# --- client -------------------------------------------------------------------


class CouchDBClient:
    """JSON over HTTP to one CouchDB (or CouchDB-compatible) server."""

    def __init__(self, url, user=None, password=None, timeout=10, validate_certs=True):
        self.base_url = url.rstrip("/")
        self.user = user
        self.password = password
        self.timeout = timeout
        self.validate_certs = validate_certs
        self._server_info = None
        # The server's clock at its last answer (its Date header), seconds since the epoch.
        self.server_time = None

    def request(self, method, path, body=None, query=None):
        """(status, decoded body) of a request; raises CouchDBError on 4xx/5xx or no answer."""
        url = self.base_url + path
        if query:
            url += "?" + "&".join("%s=%s" % (key, quote(str(value), safe="")) for key, value in query.items())
        data = None if body is None else json.dumps(body)
        # pouchdb-server answers text/plain unless JSON is asked for.
        headers = {"Accept": "application/json", "Content-Type": "application/json"}
        try:
            response = open_url(
                url,
                data=data,
                headers=headers,
                method=method,
                timeout=self.timeout,
                validate_certs=self.validate_certs,
                url_username=self.user,
                url_password=self.password,
                force_basic_auth=self.user is not None,
                follow_redirects="none",
                use_netrc=False,
            )
            status = response.getcode()
            raw = response.read()
            self.server_time = http_date(response.headers.get("Date"))
        except HTTPError as exc:
            raw = exc.read() if exc.fp is not None else b""
            self.server_time = http_date(exc.headers.get("Date") if exc.headers else None)
            raise error_for_status(method, path, exc.code, _decode(raw)) from None
        except URLError as exc:
            raise ConnectionFailed(method, path, reason=str(exc.reason)) from None
        except (OSError, ValueError) as exc:
            raise ConnectionFailed(method, path, reason=str(exc)) from None
        return status, _decode(raw)

    def get(self, path, query=None):
        return self.request("GET", path, query=query)[1]

    def get_or_none(self, path, query=None):
        """The body, or None where the server answers 404 (absent)."""
        try:
            return self.get(path, query=query)
        except NotFound:
            return None

    def put(self, path, body=None, query=None):
        return self.request("PUT", path, body=body, query=query)[1]

    def post(self, path, body=None, query=None):
        return self.request("POST", path, body=body, query=query)[1]

    def delete(self, path, query=None):
        return self.request("DELETE", path, query=query)[1]

    # --- the server -------------------------------------------------------------

    @property
    def server_info(self):
        if self._server_info is None:
            info = self.get("/")
            self._server_info = info if isinstance(info, dict) else {}
        return self._server_info

    @property
    def flavour(self):
        return detect_flavour(self.server_info)

    @property
    def version(self):
        return parse_version(self.server_info.get("version"))


def _decode(raw):
    if not raw:
        return None
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "replace")
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def http_date(value):
    """Seconds since the epoch of an HTTP Date header, or None."""
    parsed = parsedate_tz(value) if value else None
    if parsed is None:
        return None
    return float(calendar.timegm(parsed[:9]) - (parsed[9] or 0))


def iso_time(value):
    """Seconds since the epoch of an ISO 8601 UTC time as CouchDB ("2017-04-05T19:18:15Z") and
    pouchdb-server ("2026-11-26T22:18:31.615Z") write it, or None."""
    if not isinstance(value, str) or not value.endswith("Z"):
        return None
    whole, _dot, fraction = value[:-1].partition(".")
    try:
        seconds = calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S"))
        return seconds + (float("0." + fraction) if fraction.isdigit() else 0.0)
    except ValueError:
        return None


def detect_flavour(info):
    """CouchDB says {"couchdb": "Welcome"}; pouchdb-server says {"express-pouchdb": "Welcome!"}."""
    if isinstance(info, dict) and "express-pouchdb" in info:
        return FLAVOUR_POUCHDB
    return FLAVOUR_COUCHDB


def parse_version(text):
    parts = []
    for piece in str(text or "").split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts) or (0,)


# --- comparison ---------------------------------------------------------------


def deep_sorted(value):
    """A copy where dict keys are ordered, for stable output and comparison."""
    if isinstance(value, dict):
        return {key: deep_sorted(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [deep_sorted(item) for item in value]
    return value


def differences(before, after, prefix=""):
    """Dotted names of the keys whose values differ, like community.docker's DifferenceTracker."""
    if isinstance(before, dict) and isinstance(after, dict):
        names = []
        for key in sorted(set(before) | set(after)):
            names.extend(differences(before.get(key), after.get(key), prefix + key + "."))
        return names
    if before != after:
        return [prefix.rstrip(".") or "(value)"]
    return []


# --- Mango selectors in CouchDB's normal form ------------------------------------
#
# CouchDB 3 stores a Mango selector (an index's partial_filter_selector) the way its
# mango_selector:normalize/1 rewrites it, and lists it so: {"type": "message"} comes back
# as {"type": {"$eq": "message"}}. pouchdb-server lists it as written. Comparing both
# sides in that normal form makes the comparison agree on either flavour.

# Operators whose argument is a list of selectors (norm_ops recurses into each).
_MANGO_LIST_COMBINATORS = ("$and", "$or", "$nor")
# Operators whose argument is one selector, normalised on its own (no field path pushed in).
_MANGO_SUB_SELECTORS = ("$elemMatch", "$allMatch", "$keyMapMatch")
# What negate/1 turns each comparison into.
_MANGO_NEGATED = {
    "$lt": "$gte",
    "$lte": "$gt",
    "$eq": "$ne",
    "$ne": "$eq",
    "$gte": "$lt",
    "$gt": "$lte",
    "$in": "$nin",
    "$nin": "$in",
}


def _is_operator(key):
    return isinstance(key, str) and key.startswith("$")


def _single(selector):
    """(key, value) of a one-key dict, else None."""
    if isinstance(selector, dict) and len(selector) == 1:
        return next(iter(selector.items()))
    return None


def _mango_norm_ops(selector):
    """norm_ops/1: implicit $and of several keys, a bare value as $eq, $text as $default."""
    pair = _single(selector)
    if pair is None:
        if isinstance(selector, dict) and len(selector) > 1:
            return {"$and": [_mango_norm_ops({key: value}) for key, value in selector.items()]}
        return {"$eq": selector}  # a bare value (or {}) means equality
    key, value = pair
    if key in _MANGO_LIST_COMBINATORS and isinstance(value, list):
        return {key: [_mango_norm_ops(item) for item in value]}
    if key in ("$not", *_MANGO_SUB_SELECTORS) and isinstance(value, dict):
        return {key: _mango_norm_ops(value)}
    if key == "$text":
        return {"$default": {"$text": value}}
    if _is_operator(key):
        return selector  # a terminal ($eq, $gt, $in, $exists, $regex, ...): its value as is
    return {key: _mango_norm_ops(value)}


def _mango_norm_fields(selector, path=""):
    """norm_fields/1: field names joined into dotted paths, pushed below $and/$or/$not/$nor."""
    if selector == {}:
        return {}
    key, value = _single(selector)
    if key in _MANGO_LIST_COMBINATORS:
        return {key: [_mango_norm_fields(item, path) for item in value]}
    if key == "$not":
        return {key: _mango_norm_fields(value, path)}
    if key in _MANGO_SUB_SELECTORS:
        return {path: {key: _mango_norm_fields(value)}}
    if key == "$default" and path == "":
        return selector
    if _is_operator(key):
        return {path: selector}
    return _mango_norm_fields(value, key if path == "" else path + "." + key)


def _mango_norm_negations(selector):
    """norm_negations/1: $not and $nor moved down to the terminals (De Morgan)."""
    pair = _single(selector)
    if pair is None:
        return selector
    key, value = pair
    if key == "$not":
        return _mango_negate(value)
    if key == "$nor":
        return {"$and": [_mango_negate(item) for item in value]}
    if key in ("$and", "$or"):
        return {key: [_mango_norm_negations(item) for item in value]}
    if key in _MANGO_SUB_SELECTORS:
        return {key: _mango_norm_negations(value)}
    return selector


def _mango_negate(selector):
    """negate/1."""
    key, value = _single(selector)
    if key == "$not":
        return _mango_norm_negations(value)
    if key == "$nor":
        return {"$or": [_mango_norm_negations(item) for item in value]}
    if key == "$and":
        return {"$or": [_mango_negate(item) for item in value]}
    if key == "$or":
        return {"$and": [_mango_negate(item) for item in value]}
    if key in _MANGO_NEGATED:
        return {_MANGO_NEGATED[key]: value}
    if key == "$exists" and isinstance(value, bool):
        return {"$exists": not value}
    if _is_operator(key):
        return {"$not": selector}
    return {key: _mango_negate(value)}


def mango_normal_form(selector):
    """A Mango selector as CouchDB 3 stores and lists it (mango_selector:normalize/1).

    selector: a dict as a task gives it or a server lists it; None or {} give {}. The steps
    are CouchDB's: norm_ops (several keys are an implicit $and in key order, a bare value is
    {"$eq": value}, $text becomes {"$default": {"$text": ...}}), norm_fields (nested field
    names become one dotted path, pushed below $and/$or/$not/$nor: {"a": {"b": {"$gt": 1}}}
    is {"a.b": {"$gt": 1}}; $elemMatch, $allMatch and $keyMapMatch are normalised inside on
    their own), norm_negations ($not and $nor pushed down to the terminals by De Morgan:
    {"$not": {"a": {"$gt": 1}}} is {"a": {"$lte": 1}}). A form already normal is returned
    equal, so the server's listing and the task's option can both go through it.

    Raises ValueError for what is not a selector (not a dict, an operator with an argument
    of the wrong type); CouchDB answers those with 400. Unknown operators pass unchanged.
    """
    if selector is None or selector == {}:
        return {}
    if not isinstance(selector, dict):
        raise ValueError("A Mango selector must be an object, not %s." % type(selector).__name__)
    try:
        normal = _mango_norm_ops(selector)
        normal = _mango_norm_fields(normal)
        return _mango_norm_negations(normal)
    except (TypeError, AttributeError) as exc:
        raise ValueError("Not a valid Mango selector: %s" % exc) from None


def comparable_selector(selector):
    """The normal form with the arguments of $and, $or and $nor in a fixed order: the order of
    a selector's keys changes nothing it matches, so two selectors that differ only there are
    equal. None where there is no selector (CouchDB 3 does not list an empty one)."""
    normal = mango_normal_form(selector)
    return _sorted_combinators(normal) or None


def _sorted_combinators(selector):
    pair = _single(selector)
    if pair is None:
        return selector
    key, value = pair
    if key in _MANGO_LIST_COMBINATORS and isinstance(value, list):
        parts = [_sorted_combinators(item) for item in value]
        return {key: sorted(parts, key=lambda part: json.dumps(part, sort_keys=True))}
    if key == "$not" or key in _MANGO_SUB_SELECTORS:
        return {key: _sorted_combinators(value)}
    if _is_operator(key):
        return selector  # a terminal: its value is data, not a selector
    return {key: _sorted_combinators(value)}


def poll(read, done, timeout, interval=0.5):
    """Call read() until done(value) is true or timeout seconds passed; returns (value, done)."""
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if done(value):
            return value, True
        if time.monotonic() >= deadline:
            return value, False
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))


# --- the module cycle ---------------------------------------------------------


class CouchDBModule:
    """read -> normalise -> compare -> act, specialised by each module.

    A subclass says how to read the current object (None when absent), how to turn
    it and the task's options into comparable dicts, and how to create, update and
    delete. execute() does the rest: check mode, diff, and the result.
    """

    result_key = "object"

    def __init__(self, module):
        self.module = module
        self.params = module.params
        reason = check_plain_url(self.params["url"])
        if reason:
            raise ValueError("The url option %s." % reason)
        self.client = CouchDBClient(
            self.params["url"],
            user=self.params.get("user"),
            password=self.params.get("password"),
            timeout=self.params["timeout"],
            validate_certs=self.params["validate_certs"],
        )

    # --- what a module specialises -----------------------------------------------

    def read(self):
        """The current object as the server has it, or None when it is absent."""
        raise NotImplementedError

    def normalise(self, current):
        """The comparable form of the current object: no server-managed field, no credential."""
        raise NotImplementedError

    def desired(self, current):
        """The comparable form of what the task asks for (current may help, e.g. a salt)."""
        raise NotImplementedError

    def create(self, desired):
        raise NotImplementedError

    def update(self, current, desired):
        raise NotImplementedError

    def delete(self, current):
        raise NotImplementedError

    def public(self, normalised):
        """What results and diffs show of a normalised object."""
        return normalised

    def needs_update(self, before, after):
        return before != after

    def preflight(self, operation, current):
        """Refuse an operation before anything is written, in check mode too (it predicts)."""

    def after_act(self, operation, result):
        """Work after the write (or in its place when nothing changed): waits, extra keys."""

    # --- the cycle ------------------------------------------------------------------

    def execute(self):
        current = self.read()
        before = None if current is None else self.normalise(current)
        operation = None
        after = None
        if self.params["state"] == STATE_PRESENT:
            after = self.desired(current)
            if current is None:
                operation = OPERATION_CREATE
            elif self.needs_update(before, after):
                operation = OPERATION_UPDATE
        elif current is not None:
            operation = OPERATION_DELETE

        if operation:
            self.preflight(operation, current)
        if operation and not self.module.check_mode:
            if operation == OPERATION_CREATE:
                self.create(after)
            elif operation == OPERATION_UPDATE:
                self.update(current, after)
            else:
                self.delete(current)

        result = dict(changed=operation is not None)
        if operation:
            result["operation"] = operation
        if operation == OPERATION_UPDATE:
            # Names only, from the comparable forms: a changed password shows as "credentials".
            result["differences"] = differences(before, after)
        result[self.result_key] = None if after is None else deep_sorted(self.public(after))
        if self.module._diff:
            result["diff"] = dict(
                before=deep_sorted(self.public(before)) if before is not None else {},
                after=deep_sorted(self.public(after)) if after is not None else {},
            )
        self.after_act(operation, result)
        return result


def run_module(module, module_class):
    """main() of every couchdb_* module: one fail_json for every error."""
    try:
        result = module_class(module).execute()
    except CouchDBError as exc:
        module.fail_json(
            msg=str(exc),
            status=exc.status,
            couchdb_error=exc.error,
            couchdb_reason=exc.reason,
            exception=traceback.format_exc(),
        )
    except ValueError as exc:
        module.fail_json(msg=str(exc), exception=traceback.format_exc())
    module.exit_json(**result)
