"""The metrics module in one process: tallies, the node's view and what
``/v1/stats`` reads from it. Several workers: tests/e2e/test_workers.py."""
from __future__ import annotations

import threading

from prometheus_client import generate_latest

from edge.observe import metrics




class Memory:
    bytes_used = 4096

    def __len__(self) -> int:
        return 2


def test_the_view_shows_the_shared_tier_in_the_same_families_as_the_memory_tier():
    metrics.publish(Memory())
    text = generate_latest(metrics.NodeView(lambda: {"disk": (3, None)})).decode()
    assert text.count("# TYPE edge_cache_entries gauge") == 1 and text.count("# TYPE edge_cache_bytes gauge") == 1
    assert 'edge_cache_entries{tier="memory"} 2.0' in text and 'edge_cache_entries{tier="disk"} 3.0' in text
    assert 'edge_cache_bytes{tier="memory"} 4096.0' in text
    assert 'edge_cache_bytes{tier="disk"}' not in text  # unknown: left out, not 0


def test_requests_counted_on_the_hit_path_are_in_the_view_and_the_stats():
    for status, cache in ((200, "hit"), (404, "none"), (200, "hit")):
        metrics.record_request("tallied", status, cache, 10)
    labels = {"tenant": "tallied", "status": "2xx", "cache": "hit"}
    assert metrics.REGISTRY.get_sample_value("edge_requests_total", labels) == 2
    assert metrics.REGISTRY.get_sample_value("edge_response_bytes_total", {"tenant": "tallied"}) == 30
    stats = metrics.node_stats(metrics.NodeView(lambda: {"disk": (3, 300)}).collect())
    assert stats.requests["tallied"] == 3
    assert stats.tiers["disk"] == {"entries": 3, "bytes": 300}


def test_a_publish_from_another_thread_loses_no_count():
    t = metrics.tally(metrics.PURGES, "tally-threads")
    done = threading.Event()

    def publisher() -> None:
        while not done.is_set():
            metrics.publish()

    thread = threading.Thread(target=publisher)
    thread.start()
    try:
        for _ in range(200_000):
            t.inc()
    finally:
        done.set()
        thread.join()
    metrics.publish()
    assert metrics.REGISTRY.get_sample_value("edge_purges_total", {"tenant": "tally-threads"}) == 200_000
