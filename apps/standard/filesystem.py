"""Free disk as metrics: the filesystem the node and its CouchDB write to.

No node_exporter runs beside kuno, so the standard node measures the filesystem at
``KUNO_FILESYSTEM_PATH`` (default ``/``: in a container, the Docker host's data filesystem
that also holds CouchDB's named volume on a default Docker set-up) at each scrape, with
``os.statvfs``. The names follow node_exporter's ``node_filesystem_avail_bytes`` and
``node_filesystem_size_bytes`` so that the alert rule (roles/monitoring,
``KunoDiskFreeLow``) reads the same way as one written against node_exporter.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector


class FilesystemCollector(Collector):
    """``kuno_filesystem_avail_bytes`` and ``kuno_filesystem_size_bytes`` (bytes, labelled
    ``mountpoint``) of one path, read at each scrape. A path that cannot be read exports
    nothing (the rule then sees no series, and the scrape itself still succeeds)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            stat = os.statvfs(self.path)
        except OSError:
            return
        avail = GaugeMetricFamily(
            "kuno_filesystem_avail_bytes",
            "Bytes free to unprivileged users on the filesystem (statvfs f_bavail x f_frsize)",
            labels=["mountpoint"],
        )
        size = GaugeMetricFamily(
            "kuno_filesystem_size_bytes",
            "Size of the filesystem in bytes (statvfs f_blocks x f_frsize)",
            labels=["mountpoint"],
        )
        avail.add_metric([self.path], stat.f_bavail * stat.f_frsize)
        size.add_metric([self.path], stat.f_blocks * stat.f_frsize)
        yield avail
        yield size
