"""Metrics exposition: exact reference names, gin-style path templates, no client-library extras."""

from __future__ import annotations

import pytest

from workspace_server.observability.metrics import (
    CONTENT_TYPE,
    HttpMetrics,
    build_registry,
    method_label,
    render,
    route_template,
)

NAMES = (
    "go_goroutines",
    "go_memstats_alloc_bytes",
    "go_memstats_sys_bytes",
    "go_memstats_heap_inuse_bytes",
    "go_gc_duration_seconds_total",
    "molecule_http_requests_total",
    "molecule_http_request_duration_seconds_total",
    "molecule_websocket_connections_active",
)


@pytest.mark.parametrize(
    ("fastapi_path", "gin_path"),
    [
        ("/health", "/health"),
        ("/workspaces/{id}", "/workspaces/:id"),
        ("/workspaces/{id}/tokens/{tokenId}", "/workspaces/:id/tokens/:tokenId"),
        ("/cp/{path:path}", "/cp/*path"),
        ("/things/{n:int}", "/things/:n"),
    ],
)
def test_route_template(fastapi_path: str, gin_path: str) -> None:
    assert route_template(fastapi_path) == gin_path


def test_unknown_methods_are_folded() -> None:
    assert method_label("GET") == "GET"
    assert method_label("FOO") == "OTHER"


def test_help_and_type_printed_even_without_samples() -> None:
    text = render(build_registry(HttpMetrics(), lambda: 0)).decode()
    for name in NAMES:
        assert f"# HELP {name} " in text
        kind = "counter" if name.endswith("_total") else "gauge"
        assert f"# TYPE {name} {kind}\n" in text
    assert "_created" not in text
    assert "molecule_http_requests_total{" not in text
    assert CONTENT_TYPE == "text/plain; version=0.0.4; charset=utf-8"


def test_http_counters_and_websocket_gauge() -> None:
    http = HttpMetrics()
    http.observe("GET", "/workspaces/:id", 200, 0.25)
    http.observe("GET", "/workspaces/:id", 200, 0.5)
    http.observe("POST", "unmatched", 404, 0.125)
    text = render(build_registry(http, lambda: 7)).decode()
    assert 'molecule_http_requests_total{method="GET",path="/workspaces/:id",status="200"} 2.0' in text
    assert 'molecule_http_requests_total{method="POST",path="unmatched",status="404"} 1.0' in text
    assert (
        'molecule_http_request_duration_seconds_total{method="GET",path="/workspaces/:id",status="200"} 0.75'
        in text
    )
    assert "molecule_websocket_connections_active 7.0" in text
    assert "_created" not in text


def test_process_gauges_are_positive() -> None:
    text = render(build_registry(HttpMetrics(), lambda: 0)).decode()
    values = {
        line.split()[0]: float(line.split()[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }
    assert values["go_memstats_alloc_bytes"] > 0
    assert values["go_memstats_sys_bytes"] >= values["go_memstats_alloc_bytes"]
    assert values["go_goroutines"] >= 1
    assert values["go_gc_duration_seconds_total"] >= 0
