"""etcd-style series on the node's ``/metrics`` (beside the runner's ``pnyx_*`` ones).

Computed when scraped (nothing is counted per request here, except by the counters the
server keeps anyway): leader state, proposals committed / applied / pending / failed,
leader changes, WAL fsync latency (the runner's histogram under etcd's name), the data
size, watch streams and gRPC requests by method and code
(``grpc_server_handled_total``, counted by the server).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from pnyx.services.etcd.server import EtcdServer


class EtcdCollector(Collector):
    """The etcd series of one server (register on its runner's registry)."""

    def __init__(self, server: EtcdServer) -> None:
        self.server = server

    def collect(self) -> Iterator[Metric]:
        server = self.server
        status = server.status()
        leader = status.get("leader")
        yield _gauge("etcd_server_has_leader", "Whether a leader is known.", leader is not None)
        yield _gauge(
            "etcd_server_is_leader", "Whether this member leads.", leader == server.config.node_id
        )
        yield _gauge(
            "etcd_server_proposals_committed_total",
            "The committed Raft index.",
            status.get("commit_index", 0),
        )
        yield _gauge(
            "etcd_server_proposals_applied_total",
            "The applied Raft index.",
            status.get("applied_index", 0),
        )
        yield _gauge(
            "etcd_server_proposals_pending",
            "Writes of this member waiting for the log.",
            server.gateway.pending,
        )
        yield _counter(
            "etcd_server_proposals_failed",
            "Writes of this member that failed (timed out or refused).",
            server.proposals_failed,
        )
        changes = _total(server.runner.metrics.leader_changes.collect())
        yield _counter("etcd_server_leader_changes_seen", "Leader changes seen.", changes)
        yield _gauge("etcd_mvcc_db_total_size_in_bytes", "Estimated data size.", server.db_size())
        yield _gauge("etcd_debugging_mvcc_watch_stream_total", "Open watch streams.",
                     len(server.watch_streams))  # fmt: skip
        yield from _renamed(
            server.runner.metrics.fsync_seconds.collect(),
            "pnyx_fsync_seconds",
            "etcd_disk_wal_fsync_duration_seconds",
        )


def _gauge(name: str, documentation: str, value: Any) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=float(value))


def _counter(name: str, documentation: str, value: Any) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, value=float(value))


def _total(families: Iterable[Metric]) -> float:
    """The ``_total`` sample of a counter's own families (read without the registry,
    which is collecting this very collector)."""
    for family in families:
        for sample in family.samples:
            if sample.name.endswith("_total"):
                return float(sample.value)
    return 0.0


def _renamed(families: Iterable[Metric], old: str, new: str) -> Iterator[Metric]:
    for family in families:
        renamed = Metric(new, family.documentation, family.type)
        for sample in family.samples:
            renamed.add_sample(sample.name.replace(old, new, 1), sample.labels, sample.value)
        yield renamed


__all__ = ["EtcdCollector"]
