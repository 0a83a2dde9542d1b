"""The Prometheus registries durable exports, and what they hold besides the event metrics.

* :data:`REGISTRY` holds every ``durable_*`` metric (the event metrics of
  :mod:`durable.metrics`, the queue collector, ``durable_build_info``). It is not
  prometheus_client's global registry, and it can be bridged into it
  (``prometheus_client.REGISTRY.register(durable.metrics.REGISTRY)``) without a name clash.
* :data:`SERVED_REGISTRY` is what ``/metrics`` serves (the dispatcher,
  ``engine.start_metrics_server()``, :func:`durable.metrics.metrics_text`): REGISTRY plus
  the standard process, platform and GC collectors (``process_*``, ``python_info``,
  ``python_gc_*``) of prometheus_client.

Neither exports ``*_created`` series. They are dropped by the registries themselves
(:class:`NoCreatedRegistry`), so prometheus_client's process-wide switch
(``disable_created_metrics()``) is left alone and an application's own default registry keeps
whatever it had.
"""

from __future__ import annotations

import platform
from importlib import metadata
from typing import Iterable

from prometheus_client import CollectorRegistry, Gauge, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.metrics_core import Metric

__all__ = ["NoCreatedRegistry", "REGISTRY", "SERVED_REGISTRY", "BUILD_INFO", "durable_version"]


class NoCreatedRegistry(CollectorRegistry):
    """A registry whose collect() drops the ``*_created`` samples of counters, histograms
    and summaries (their creation timestamps: one extra series per labelled child that
    dashboards never use)."""

    def collect(self) -> Iterable[Metric]:
        for family in super().collect():
            if not any(s.name.endswith("_created") for s in family.samples):
                yield family
                continue
            kept = Metric(family.name, family.documentation, family.type, family.unit)
            kept.samples = [s for s in family.samples if not s.name.endswith("_created")]
            yield kept


def durable_version() -> str:
    """The installed distribution's version ('unknown' when running from a bare checkout)."""
    try:
        return metadata.version("durable")
    except metadata.PackageNotFoundError:
        return "unknown"


REGISTRY = NoCreatedRegistry(auto_describe=True)
"""The registry holding every durable metric. Not prometheus_client's global registry."""

BUILD_INFO = Gauge(
    "durable_build_info", "Always 1; the labels say which durable and Python this process runs.",
    ("version", "python"), registry=REGISTRY,
)
BUILD_INFO.labels(durable_version(), platform.python_version()).set(1)

SERVED_REGISTRY = NoCreatedRegistry(auto_describe=False)
"""What /metrics serves: :data:`REGISTRY` plus the process, platform and GC collectors."""
SERVED_REGISTRY.register(REGISTRY)  # a registry is a collector
ProcessCollector(registry=SERVED_REGISTRY)
PlatformCollector(registry=SERVED_REGISTRY)
GCCollector(registry=SERVED_REGISTRY)
