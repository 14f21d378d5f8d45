"""Prometheus metrics under the reference's exact names (spec 06 §4).

The reference is a Go server, so its process metrics are Go runtime names. We keep the names (dashboards
and alerts key on them) and fill them with the nearest Python facts:

- go_goroutines                 = asyncio tasks on the serving loop + live OS threads
- go_memstats_alloc_bytes       = process RSS (bytes of memory actually in use)
- go_memstats_heap_inuse_bytes  = process RSS (CPython has no separate heap-span figure)
- go_memstats_sys_bytes         = process VMS (total address space obtained from the OS)
- go_gc_duration_seconds_total  = summed wall time of CPython's cyclic GC runs (via gc.callbacks)

A custom collector yields the families itself, so prometheus-client adds no `_created` series and
renames nothing.
"""

from __future__ import annotations

import asyncio
import gc
import re
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import psutil
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
UNMATCHED = "unmatched"

# Clients choose the method string; an unknown one is folded so the label set stays bounded.
_KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE"})

_PARAM = re.compile(r"\{([^}:]+)(?::([^}]+))?\}")


def route_template(path: str) -> str:
    """FastAPI `/workspaces/{id}` → gin `/workspaces/:id`; `{p:path}` → `*p` (gin's catch-all)."""

    def repl(m: re.Match[str]) -> str:
        return ("*" if m.group(2) == "path" else ":") + m.group(1)

    return _PARAM.sub(repl, path)


def method_label(method: str) -> str:
    return method if method in _KNOWN_METHODS else "OTHER"


class HttpMetrics:
    """Request counts and summed latency keyed by (method, route template, status)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str, str], int] = {}
        self._seconds: dict[tuple[str, str, str], float] = {}

    def observe(self, method: str, path: str, status: int, seconds: float) -> None:
        key = (method_label(method), path or UNMATCHED, str(status))
        with self._lock:
            self._counts[key] = self._counts.get(key, 0) + 1
            self._seconds[key] = self._seconds.get(key, 0.0) + seconds

    def snapshot(self) -> tuple[dict[tuple[str, str, str], int], dict[tuple[str, str, str], float]]:
        with self._lock:
            return dict(self._counts), dict(self._seconds)


class _GcTimer:
    """Process-wide: CPython has one collector, so one callback pair is installed once."""

    def __init__(self) -> None:
        self.total_seconds = 0.0
        self._started: float | None = None
        self._installed = False
        self._lock = threading.Lock()

    def install(self) -> None:
        with self._lock:
            if not self._installed:
                gc.callbacks.append(self._callback)
                self._installed = True

    def _callback(self, phase: str, _info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        elif phase == "stop" and self._started is not None:
            self.total_seconds += time.perf_counter() - self._started
            self._started = None


GC_TIMER = _GcTimer()
_PROCESS = psutil.Process()


def _task_count() -> int:
    try:
        return len(asyncio.all_tasks())
    except RuntimeError:  # scraped from a thread without a running loop
        return 0


class MoleculeCollector:
    def __init__(self, http: HttpMetrics, ws_active: Callable[[], int]) -> None:
        self._http = http
        self._ws_active = ws_active

    def collect(self) -> Iterable[Metric]:
        yield from self._process_families()
        yield from self._http_families()
        ws = GaugeMetricFamily(
            "molecule_websocket_connections_active", "Number of active WebSocket connections."
        )
        ws.add_metric([], self._ws_active())
        yield ws

    def _process_families(self) -> Iterable[Metric]:
        mem = _PROCESS.memory_info()
        tasks = _task_count() + threading.active_count()
        gauges = (
            ("go_goroutines", "Number of asyncio tasks plus OS threads.", tasks),
            ("go_memstats_alloc_bytes", "Resident set size of the process in bytes.", mem.rss),
            ("go_memstats_sys_bytes", "Virtual memory size of the process in bytes.", mem.vms),
            ("go_memstats_heap_inuse_bytes", "Resident set size of the process in bytes.", mem.rss),
        )
        for name, doc, value in gauges:
            g = GaugeMetricFamily(name, doc)
            g.add_metric([], value)
            yield g
        gc_total = CounterMetricFamily("go_gc_duration_seconds", "Cumulative garbage-collection time.")
        gc_total.add_metric([], GC_TIMER.total_seconds)
        yield gc_total

    def _http_families(self) -> Iterable[Metric]:
        counts, seconds = self._http.snapshot()
        yield _http_counter(
            "molecule_http_requests", "Total HTTP requests served, by method, path, and status.", counts
        )
        yield _http_counter(
            "molecule_http_request_duration_seconds", "Cumulative HTTP request duration in seconds.", seconds
        )


def _http_counter(name: str, doc: str, values: dict[tuple[str, str, str], Any]) -> CounterMetricFamily:
    """One HTTP family: a counter a (method, path, status), as HttpMetrics keys them."""
    family = CounterMetricFamily(name, doc, labels=["method", "path", "status"])
    for key, value in values.items():
        family.add_metric(list(key), value)
    return family


def build_registry(http: HttpMetrics, ws_active: Callable[[], int]) -> CollectorRegistry:
    """One registry per app (not the global one), so several apps in one process don't collide."""
    GC_TIMER.install()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MoleculeCollector(http, ws_active))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
