"""The collector's own ``/metrics``, through ``prometheus_client``.

A custom collector reads the running collector's :class:`~collector.view.CollectorView` at
scrape time (the ingest counters, the nodes, the notifiers' queues, the rule groups' counters,
the spool and sinks): nothing is counted a second time for the exposition, so it can never
drift from what the API and logs say. The process's own metrics (CPU, memory, file
descriptors, GC) come from the library's standard collectors.

Families (labels in braces):

- ingest: ``fleetmon_collector_samples_total``, ``fleetmon_collector_samples_per_second``,
  ``fleetmon_collector_streams``, ``fleetmon_collector_refused_total{what}`` (stream, batch),
  ``fleetmon_collector_duplicates_total{kind}`` (batch: a replayed sequence; sample: a
  series and timestamp the store already held);
- nodes: ``fleetmon_collector_nodes{health}``, ``fleetmon_collector_accelerators{vendor,model,state}``,
  ``fleetmon_node_up{node}``, ``fleetmon_node_last_seen_timestamp_seconds{node}``,
  ``fleetmon_node_clock_skew_seconds{node}``;
- notifiers, per target: ``fleetmon_notifier_queue_length``, ``fleetmon_notifier_queue_capacity``,
  ``fleetmon_notifier_sent_total``, ``fleetmon_notifier_failed_total``,
  ``fleetmon_notifier_dropped_total``, ``fleetmon_notifier_retries_total``,
  ``fleetmon_notifier_connected``, ``fleetmon_notifier_last_success_timestamp_seconds``
  (``{notifier,target}``);
- rule groups (as Prometheus's ``prometheus_rule_group_*``): ``fleetmon_rule_group_evaluations_total``,
  ``fleetmon_rule_group_iterations_missed_total``, ``fleetmon_rule_group_last_duration_seconds``,
  ``fleetmon_rule_group_last_evaluation_timestamp_seconds``, ``fleetmon_rule_group_interval_seconds``,
  ``fleetmon_rule_group_rules``, ``fleetmon_rule_group_failing_rules`` (``{rule_group,file}``);
- spool and sinks (and whatever else the view's ``health()`` reports): ``fleetmon_spool_bytes``,
  ``fleetmon_spool_batches``, ``fleetmon_sink_lag_seconds{sink}``, ``fleetmon_sink_*_total{sink}``, …
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from collector.fleet import HEALTH_STATES, by_model, node_health
from collector.storage.base import HealthSample
from collector.view import CollectorView


def _family(name: str, doc: str, labels: Iterable[str] = ()) -> CounterMetricFamily | GaugeMetricFamily:
    """A counter when the name says so (``_total``), else a gauge."""
    if name.endswith("_total"):
        return CounterMetricFamily(name, doc, labels=list(labels))
    return GaugeMetricFamily(name, doc, labels=list(labels))


def _scalar(name: str, doc: str, value: float) -> Metric:
    fam = _family(name, doc)
    fam.add_metric([], value)
    return fam


class ViewCollector(Collector):
    """Everything a :class:`CollectorView` knows, read when Prometheus scrapes."""

    def __init__(self, view: CollectorView) -> None:
        self.view = view

    def collect(self) -> Iterator[Metric]:
        now = time.time()
        yield from self._ingest()
        yield from self._nodes(now)
        yield from self._notifiers()
        yield from self._rule_groups()
        yield from _health_families(self.view.health(), skip=_OWN)

    def _ingest(self) -> Iterator[Metric]:
        c = self.view.counters()
        yield _scalar("fleetmon_collector_samples_total", "Samples accepted from agents and stored", c.samples)
        yield _scalar("fleetmon_collector_samples_per_second", "Samples accepted per second over the last ~10 s",
                      self.view.samples_per_second())
        yield _scalar("fleetmon_collector_streams", "Agent streams open now", c.streams)
        refused = CounterMetricFamily("fleetmon_collector_refused_total",
                                      "Agent streams and batches refused (bad input, limits, identity); "
                                      "the log names the node and the reason", labels=["what"])
        refused.add_metric(["stream"], c.refused_streams)
        refused.add_metric(["batch"], c.refused_batches)
        yield refused
        dup = CounterMetricFamily("fleetmon_collector_duplicates_total",
                                  "Input already held, dropped: kind=batch a replayed sequence, kind=sample a "
                                  "series and timestamp the store already held (the first value is kept)",
                                  labels=["kind"])
        dup.add_metric(["batch"], c.duplicates)
        dup.add_metric(["sample"], c.duplicate_samples)
        yield dup

    def _nodes(self, now: float) -> Iterator[Metric]:
        rows = node_health(self.view, now)
        up = GaugeMetricFamily("fleetmon_node_up", "1 while the node's agent streams and sent a batch within "
                               "node_timeout", labels=["node"])
        seen = GaugeMetricFamily("fleetmon_node_last_seen_timestamp_seconds",
                                 "When the node's last batch arrived (unix seconds)", labels=["node"])
        skew = GaugeMetricFamily("fleetmon_node_clock_skew_seconds",
                                 "The agent's clock minus the collector's, at its last hello", labels=["node"])
        health = dict.fromkeys(HEALTH_STATES, 0)
        for n, h in rows:
            up.add_metric([n.node], 1.0 if n.up else 0.0)
            if n.last_batch_at:
                seen.add_metric([n.node], n.last_batch_at)
            if n.connected:
                skew.add_metric([n.node], n.clock_skew)
            health[h.health] += 1
        yield up
        yield seen
        yield skew
        nodes = GaugeMetricFamily("fleetmon_collector_nodes", "Nodes by health roll-up (failed: agent silent, an "
                                  "accelerator down or a critical alert firing; degraded: another alert firing "
                                  "or one pending)", labels=["health"])
        for state, count in health.items():
            nodes.add_metric([state], count)
        yield nodes
        acc = GaugeMetricFamily("fleetmon_collector_accelerators", "Accelerators by vendor and model, up or down "
                                "(their latest gpu_up)", labels=["vendor", "model", "state"])
        for m in by_model(a for n, _ in rows for a in self.view.accelerators(n.node, now, streaming=n.up)):
            acc.add_metric([m.vendor, m.model, "up"], m.up)
            acc.add_metric([m.vendor, m.model, "down"], m.total - m.up)
        yield acc

    def _notifiers(self) -> Iterator[Metric]:
        labels = ["notifier", "target"]
        fams: dict[str, CounterMetricFamily | GaugeMetricFamily] = {
            "queue": GaugeMetricFamily("fleetmon_notifier_queue_length", "Entries waiting for delivery", labels=labels),
            "capacity": GaugeMetricFamily("fleetmon_notifier_queue_capacity",
                                          "Queue bound; past it the oldest entry is dropped", labels=labels),
            "sent": CounterMetricFamily("fleetmon_notifier_sent_total",
                                        "Entries delivered (alerts, events, node statuses)", labels=labels),
            "failed": CounterMetricFamily("fleetmon_notifier_failed_total",
                                          "Entries given up on (rejected, or retries exhausted)", labels=labels),
            "dropped": CounterMetricFamily("fleetmon_notifier_dropped_total",
                                           "Entries pushed out of a full queue, never attempted", labels=labels),
            "retries": CounterMetricFamily("fleetmon_notifier_retries_total",
                                           "Failed delivery attempts that were retried", labels=labels),
            "connected": GaugeMetricFamily("fleetmon_notifier_connected",
                                           "1 while the target is reachable (its last attempt succeeded)",
                                           labels=labels),
            "success": GaugeMetricFamily("fleetmon_notifier_last_success_timestamp_seconds",
                                         "When the last delivery to the target succeeded (unix seconds)",
                                         labels=labels),
        }
        for h in self.view.notifier_health():
            key = [h.notifier, h.target]
            fams["queue"].add_metric(key, h.queued)
            fams["capacity"].add_metric(key, h.capacity)
            fams["sent"].add_metric(key, h.sent)
            fams["failed"].add_metric(key, h.failed)
            fams["dropped"].add_metric(key, h.dropped)
            fams["retries"].add_metric(key, h.retries)
            fams["connected"].add_metric(key, 1.0 if h.connected else 0.0)
            if h.last_success_at is not None:
                fams["success"].add_metric(key, h.last_success_at)
        yield from fams.values()

    def _rule_groups(self) -> Iterator[Metric]:
        labels = ["rule_group", "file"]
        evals = CounterMetricFamily("fleetmon_rule_group_evaluations_total", "Evaluations of the group",
                                    labels=labels)
        missed = CounterMetricFamily("fleetmon_rule_group_iterations_missed_total",
                                     "Evaluation slots skipped because the one before ran late", labels=labels)
        duration = GaugeMetricFamily("fleetmon_rule_group_last_duration_seconds",
                                     "How long the group's last evaluation took", labels=labels)
        last = GaugeMetricFamily("fleetmon_rule_group_last_evaluation_timestamp_seconds",
                                 "When the group was last evaluated (unix seconds)", labels=labels)
        interval = GaugeMetricFamily("fleetmon_rule_group_interval_seconds", "The group's evaluation interval",
                                     labels=labels)
        rules = GaugeMetricFamily("fleetmon_rule_group_rules", "Rules in the group", labels=labels)
        failing = GaugeMetricFamily("fleetmon_rule_group_failing_rules",
                                    "Rules of the group whose last evaluation failed (the log says why)",
                                    labels=labels)
        for g in self.view.rule_groups():
            key = [g.name, g.file]
            evals.add_metric(key, g.stats.evaluations)
            missed.add_metric(key, g.stats.missed)
            duration.add_metric(key, g.stats.last_duration)
            if g.stats.last_evaluation:
                last.add_metric(key, g.stats.last_evaluation)
            interval.add_metric(key, g.interval)
            rules.add_metric(key, g.rules)
            failing.add_metric(key, g.failing)
        yield from (evals, missed, duration, last, interval, rules, failing)


#: Families ViewCollector defines itself; ``health()`` samples of the same name are not repeated.
_OWN = frozenset({
    "fleetmon_collector_samples_total", "fleetmon_collector_samples_per_second", "fleetmon_collector_streams",
    "fleetmon_collector_refused_total", "fleetmon_collector_duplicates_total", "fleetmon_collector_nodes",
    "fleetmon_collector_accelerators", "fleetmon_node_up", "fleetmon_node_last_seen_timestamp_seconds",
    "fleetmon_node_clock_skew_seconds",
})


def _health_families(samples: Iterable[HealthSample], skip: frozenset[str]) -> Iterator[Metric]:
    """The view's extra samples (sinks, spool, limits) as families, in the order first seen."""
    fams: dict[str, CounterMetricFamily | GaugeMetricFamily] = {}
    for s in samples:
        if s.name in skip:
            continue
        fam = fams.get(s.name)
        if fam is None:
            fam = fams[s.name] = _family(s.name, _HEALTH_HELP.get(s.name, s.name.replace("_", " ")),
                                         [k for k, _ in s.labels])
        fam.add_metric([v for _, v in s.labels], s.value)
    yield from fams.values()


_HEALTH_HELP = {
    "fleetmon_spool_bytes": "Bytes of acked batches waiting in the spool for the external sinks",
    "fleetmon_spool_batches": "Acked batches waiting in the spool for the external sinks",
    "fleetmon_spool_waiting_batches": "Batches held before their ack because the spool is full (back-pressure)",
    "fleetmon_sink_lag_seconds": "How long the oldest batch the sink has not confirmed has been waiting for it "
                                 "(0: caught up)",
    "fleetmon_sink_dropped_points_total": "Points and events a sink refused for good (4xx), dropped",
    # Alert state across collectors (collector/handover.py, collector/alertstate.py).
    "fleetmon_collector_nodes_adopted_total": "Nodes this collector took on (start, restart, fail-over, return), "
                                              "their alert state and windows read back from history",
    "fleetmon_collector_alerts_restored_total": "Alerts whose for state came back from ALERTS_FOR_STATE on adoption",
    "fleetmon_collector_alerts_taken_over_total":
        "Alerts a node's previous collector had that were over: resolved here",
    "fleetmon_collector_nodes_handed_over_total": "Nodes that left for another collector, their alerts handed over",
    "fleetmon_collector_alerts_handed_over_total": "Alerts dropped here without a resolve: another collector owns them",
    "fleetmon_collector_warmed_samples_total": "Samples read back from history into the windows of adopted nodes",
    "fleetmon_collector_history_errors_total": "Adoptions whose history a source (TSDB, local store) could not give",
    "fleetmon_collector_last_adoption_seconds": "From the stream's start to the alerts restored, for the last adoption",
    "fleetmon_collector_alert_state_samples_total": "ALERTS and ALERTS_FOR_STATE samples sent to the shared TSDB",
}


def build_registry(view: CollectorView) -> CollectorRegistry:
    """A registry of its own per collector (tests run several in one process)."""
    registry = CollectorRegistry()
    registry.register(ViewCollector(view))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


def exposition(registry: CollectorRegistry, accept: str) -> tuple[bytes, str]:
    """The body and content type Prometheus asked for (OpenMetrics or the classic text format)."""
    encoder, content_type = choose_encoder(accept)
    return encoder(registry), content_type
