"""The names of kuno's containers: the one definition (Ansible filters and Python).

A container is named ``<project>-<role>`` when a project has one of it (``master``,
``proxy``) and ``<project>-<role>-<node>`` when each storage node has one (``couchdb``,
``standard``). The name is also the container's host name on the private network, so the
services' URLs are built from it. The roles and playbooks use the filters below; Python
(molecule/resources/kunomol.py, tests) imports :func:`container_name`.
"""

from __future__ import annotations

from collections.abc import Iterable

#: Roles with one container per storage node, and roles with one per project.
NODE_ROLES = ("couchdb", "standard")
PROJECT_ROLES = ("master", "proxy")


def container_name(project: str, role: str, node: str | None = None) -> str:
    """Return the container name of ``role`` (on storage node ``node``) in ``project``.

    ``container_name("kuno", "couchdb", "node1")`` is ``"kuno-couchdb-node1"``,
    ``container_name("kuno", "master")`` is ``"kuno-master"``. Raises ValueError on an
    empty project, an unknown role, a node role without a node or a project role with one.
    """
    if not project:
        raise ValueError("kuno container name: the project is empty")
    if role in NODE_ROLES:
        if not node:
            raise ValueError(f"kuno container name: a {role} container needs its storage node")
        return f"{project}-{role}-{node}"
    if role in PROJECT_ROLES:
        if node:
            raise ValueError(f"kuno container name: there is one {role} per project, not per node")
        return f"{project}-{role}"
    known = ", ".join(NODE_ROLES + PROJECT_ROLES)
    raise ValueError(f"kuno container name: unknown role {role!r} (one of {known})")


def container_names(nodes: Iterable[str], project: str, role: str) -> list[str]:
    """Return the container names of ``role`` on each of ``nodes``, in order."""
    return [container_name(project, role, node) for node in nodes]


def _filter(function):
    """``function`` as a filter: its ValueError becomes Ansible's filter error."""

    def wrapped(*args, **kwargs):
        from ansible.errors import AnsibleFilterError

        try:
            return function(*args, **kwargs)
        except ValueError as exc:
            raise AnsibleFilterError(str(exc)) from exc

    return wrapped


class FilterModule:
    """``project | kuno_container_name(role[, node])``,
    ``nodes | kuno_container_names(project, role)``."""

    def filters(self) -> dict[str, object]:
        return {
            "kuno_container_name": _filter(container_name),
            "kuno_container_names": _filter(container_names),
        }
