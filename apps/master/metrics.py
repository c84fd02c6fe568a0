"""The master's delivery metrics: how many nodes stored each send, and the success rate.

A send's outcome is `all` (stored on every one of the N standard nodes), `partial`
(0 < stored < N) or `none` (stored on no node: the sender got `not_stored`). The
ratios cover the master's lifetime; alert on `rate()` of `kuno_master_store_outcomes_total`
instead, which Prometheus keeps per interval.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

OUTCOMES = ("all", "partial", "none")


def outcome_of(stored: int, nodes: int) -> str:
    """`all`, `partial` or `none` for a send stored on `stored` of `nodes` nodes."""
    if stored <= 0:
        return "none"
    return "all" if stored >= nodes else "partial"


class DeliveryMetrics:
    """`observe(stored, nodes)` once per send that storage answered (not in the seed's
    rollback mode, where nothing is stored)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.outcomes = Counter(
            "kuno_master_store_outcomes",
            "Sends by how many standard nodes stored them: all (N), partial, none (0)",
            ["outcome"],
            registry=registry,
        )
        self._counts = dict.fromkeys(OUTCOMES, 0)
        for outcome in OUTCOMES:
            self.outcomes.labels(outcome)  # every series from the start, at 0
        Gauge(
            "kuno_master_delivery_success_ratio",
            "Sends stored on all N nodes over all sends since the master started",
            registry=registry,
        ).set_function(lambda: self._ratio("all"))
        Gauge(
            "kuno_master_delivery_failure_ratio",
            "Sends stored on no node over all sends since the master started",
            registry=registry,
        ).set_function(lambda: self._ratio("none"))
        self.storage_nodes = Gauge(
            "kuno_master_storage_nodes",
            "N: the standard nodes the master stores on",
            registry=registry,
        )

    def observe(self, stored: int, nodes: int) -> None:
        outcome = outcome_of(stored, nodes)
        self._counts[outcome] += 1
        self.outcomes.labels(outcome).inc()

    def _ratio(self, outcome: str) -> float:
        total = sum(self._counts.values())
        return self._counts[outcome] / total if total else float("nan")
