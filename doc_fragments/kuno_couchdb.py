# Copyright (c) 2026, the kuno authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    """The connection options every couchdb_* module takes (module_utils/couchdb.py)."""

    DOCUMENTATION = r"""
options:
  url:
    description: Base URL of the server, without credentials, for example V(http://127.0.0.1:5984).
    type: str
    required: true
  user:
    description: User name for HTTP basic authentication.
    type: str
  password:
    description: Password of O(user). Never logged or returned.
    type: str
  timeout:
    description: Seconds to wait for each HTTP request.
    type: float
    default: 10
  validate_certs:
    description: Verify the server's TLS certificate.
    type: bool
    default: true
"""
