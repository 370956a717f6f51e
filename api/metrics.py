"""Prometheus metrics of one app, in its own CollectorRegistry (never the process-global one)."""

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from chunkcache.types import Answer, SchedulerStats

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class StoreCollector:
    """Reads the KV store's counters at scrape time: per-tier hit ratio, hits, misses, bytes."""

    def __init__(self, stats: Callable[[], object]):
        self._stats = stats

    def describe(self):
        return []  # computed at scrape time; nothing to check at registration

    def collect(self):
        stats = self._stats()
        ratio = GaugeMetricFamily("chunkcache_cache_hit_ratio", "KV store hit ratio per tier (hits / lookups)", labels=["tier"])
        hits = CounterMetricFamily("chunkcache_cache_hits", "KV store hits per tier", labels=["tier"])
        misses = CounterMetricFamily("chunkcache_cache_misses", "KV store misses per tier", labels=["tier"])
        entries = GaugeMetricFamily("chunkcache_cache_entries", "entries held per tier", labels=["tier"])
        size = GaugeMetricFamily("chunkcache_cache_bytes", "bytes held per tier", labels=["tier"])
        evictions = CounterMetricFamily("chunkcache_cache_evictions", "evictions per tier", labels=["tier"])
        errors = CounterMetricFamily("chunkcache_cache_tier_errors", "tier calls that failed and were served as a miss (e.g. Redis down)", labels=["tier"])
        for tier in stats.tiers:
            ratio.add_metric([tier.name], tier.hit_rate)
            hits.add_metric([tier.name], tier.hits)
            misses.add_metric([tier.name], tier.misses)
            entries.add_metric([tier.name], tier.entries)
            size.add_metric([tier.name], tier.bytes)
            evictions.add_metric([tier.name], tier.evictions)
            errors.add_metric([tier.name], tier.errors)
        lookups = stats.hits + stats.misses
        ratio.add_metric(["all"], stats.hits / lookups if lookups else 0.0)
        corrupt = CounterMetricFamily("chunkcache_cache_corrupt_entries", "stored entries that failed their checks")
        corrupt.add_metric([], stats.corrupt)
        failures = CounterMetricFamily("chunkcache_cache_write_failures", "KV store writes or deletes that failed (the answer went on)")
        failures.add_metric([], stats.write_failures)
        no_space = CounterMetricFamily("chunkcache_cache_no_space_failures", "KV store writes that failed because the disk was full")
        no_space.add_metric([], stats.no_space_failures)
        yield from (ratio, hits, misses, entries, size, evictions, errors, corrupt, failures, no_space)


class ServiceMetrics:
    """Request counts and latency per route, TTFT, recompute ratio, queue depth, store counters."""

    def __init__(self, store_stats: Callable[[], object], queue_depth: Callable[[], int], queue_busy: Callable[[], int],
                 scheduler_stats: Callable[[], SchedulerStats] | None = None):
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        self.requests = Counter("chunkcache_http_requests", "HTTP requests by route, method and status", ["route", "method", "status"], registry=r)
        self.latency = Histogram("chunkcache_http_request_duration_seconds", "HTTP request latency by route", ["route"], buckets=LATENCY_BUCKETS, registry=r)
        self.ttft = Histogram("chunkcache_ttft_seconds", "time to first token of answers by mode", ["mode"], buckets=LATENCY_BUCKETS, registry=r)
        self.queue_wait = Histogram("chunkcache_queue_wait_seconds", "time model work waited for a worker", buckets=LATENCY_BUCKETS, registry=r)
        self.context_tokens = Counter("chunkcache_context_tokens", "context (passage) tokens of answers", ["mode"], registry=r)
        self.recomputed_tokens = Counter("chunkcache_recomputed_tokens", "context tokens recomputed by answers", ["mode"], registry=r)
        self.recompute_ratio = Histogram("chunkcache_recomputed_token_ratio", "per answer: recomputed / context tokens", ["mode"],
                                         buckets=(0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0), registry=r)
        self.passages = Counter("chunkcache_passages", "passages of answers by KV cache outcome: exact (chain entry), hit (placed and blended), miss (computed), not_used (full)", ["result"], registry=r)
        self.exact_prompts = Counter("chunkcache_exact_prompts", "answers whose whole prompt but its last token came from chain entries (a repeat of the prompt)", registry=r)
        self.not_stored = Counter("chunkcache_passages_not_stored", "passages whose computed KV could not be stored", registry=r)
        self.generated_tokens = Counter("chunkcache_generated_tokens", "tokens generated", registry=r)
        depth = Gauge("chunkcache_queue_depth", "model requests waiting for a worker", registry=r)
        depth.set_function(queue_depth)
        busy = Gauge("chunkcache_queue_busy_workers", "model workers running a request", registry=r)
        busy.set_function(queue_busy)
        r.register(StoreCollector(store_stats))
        if scheduler_stats is not None:
            for name, doc, field in (
                    ("chunkcache_scheduler_steps", "scheduler steps (forwards) taken", "steps"),
                    ("chunkcache_scheduler_rows", "token rows of those steps (decode, repair and prompt rows)", "rows"),
                    ("chunkcache_scheduler_prompt_rows", "prompt rows run in pieces beside the decodes", "prompt_rows"),
                    ("chunkcache_working_cache_bytes", "working-cache memory of the requests admitted now", "working_cache_bytes"),
                    ("chunkcache_working_cache_capacity_bytes", "working-cache memory the scheduler admits at most",
                     "working_cache_capacity_bytes"),
                    ("chunkcache_waiting_for_memory", "requests waiting for working-cache memory", "waiting_for_memory")):
                Gauge(name, doc, registry=r).set_function(lambda f=field: getattr(scheduler_stats(), f))

    def observe_answer(self, answer: Answer) -> None:
        self.ttft.labels(answer.mode).observe(answer.ttft_s)
        self.context_tokens.labels(answer.mode).inc(answer.context_tokens)
        self.recomputed_tokens.labels(answer.mode).inc(answer.recomputed_tokens)
        if answer.context_tokens:
            self.recompute_ratio.labels(answer.mode).observe(answer.recomputed_tokens / answer.context_tokens)
        misses = answer.cache_misses
        self.passages.labels("exact").inc(answer.exact_passages)
        self.passages.labels("hit").inc(answer.cache_hits - answer.exact_passages)
        self.passages.labels("miss").inc(misses)
        self.passages.labels("not_used").inc(len(answer.passages) - answer.cache_hits - misses)
        if answer.question_exact:
            self.exact_prompts.inc()
        if not answer.kv_stored:
            self.not_stored.inc(misses)
        self.generated_tokens.inc(answer.generated_tokens)

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def render(self) -> bytes:
        """The Prometheus text exposition (blocking: reads store stats; call off the loop)."""
        return generate_latest(self.registry)
