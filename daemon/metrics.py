"""Prometheus /metrics for musad: device gauges and vLLM-named engine metrics.

Names follow vLLM (`time_to_first_token_seconds`, `num_requests_running`, ...) under a
`musad:` prefix, labelled by `model`, so existing vLLM Grafana dashboards need only the
prefix changed. Latency histograms are fed per finished request by the engine's
RequestObserver; gauges and token counters are read at scrape time from the engines'
cheap `stats()` and from the telemetry sampler's latest device reading (a scrape never
calls a vendor library itself). An engine that measures latency itself (the vLLM child)
also hands over its own histograms, re-exported as `musad:engine_<name>` beside musad's
measurement (which includes the proxy); they too are read from the engine's latest scrape.
"""

from __future__ import annotations

import logging
from typing import Callable, Iterable

from prometheus_client import CollectorRegistry, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from .devices.base import SAMPLE_FIELDS
from .engine.api import EngineHistogram

log = logging.getLogger(__name__)

PREFIX = "musad:"
_TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0,
                 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)
_ITL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4,
                0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0)
_E2E_BUCKETS = (0.01, 0.05, 0.1, 0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0,
                30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0)

# One gauge per exported row of the device field table: musad:device_<field>.
_DEVICE_GAUGES = tuple((f.name, f.metric, f.help) for f in SAMPLE_FIELDS if f.metric)


class _EngineHistogramCollector(Collector):
    """Each model's engine-measured histograms as musad:engine_<name>{model}."""

    def __init__(self, engine_histograms: Callable[[], dict[str, tuple[EngineHistogram, ...]]]):
        self._engine_histograms = engine_histograms

    def collect(self) -> Iterable:
        families: dict[str, HistogramMetricFamily] = {}
        for model, hists in sorted(self._engine_histograms().items()):
            for h in hists:
                fam = families.get(h.name)
                if fam is None:
                    fam = families[h.name] = HistogramMetricFamily(PREFIX + "engine_" + h.name, h.doc, labels=["model"])
                fam.add_metric([model], [(floatToGoString(le), n) for le, n in h.buckets], h.sum)
        yield from families.values()


class _ScrapeCollector(Collector):
    """Reads devices and engine counters at scrape time."""

    def __init__(self, device_names: Callable[[], dict[int, str]], device_samples: Callable[[], list],
                 engine_stats: Callable[[], dict]):
        self._device_names = device_names
        self._device_samples = device_samples
        self._engine_stats = engine_stats

    def collect(self) -> Iterable:
        names = self._device_names()
        samples = self._device_samples()
        for attr, suffix, doc in _DEVICE_GAUGES:
            fam = GaugeMetricFamily(PREFIX + suffix, doc, labels=["device", "name"])
            for s in samples:
                v = getattr(s, attr, None)
                if v is not None:
                    fam.add_metric([str(s.index), names.get(s.index, "")], float(v))
            yield fam
        stats = self._engine_stats()
        running = GaugeMetricFamily(PREFIX + "num_requests_running", "Requests in the running batch.", labels=["model"])
        waiting = GaugeMetricFamily(PREFIX + "num_requests_waiting", "Requests queued.", labels=["model"])
        kv = GaugeMetricFamily(PREFIX + "kv_cache_usage_perc", "KV cache usage, 0..1 (1 = full).", labels=["model"])
        prompt = CounterMetricFamily(PREFIX + "prompt_tokens", "Prefilled prompt tokens.", labels=["model"])
        gen = CounterMetricFamily(PREFIX + "generation_tokens", "Generated tokens.", labels=["model"])
        reqs = CounterMetricFamily(PREFIX + "request_success", "Finished requests.", labels=["model"])
        preempt = CounterMetricFamily(PREFIX + "num_preemptions", "Sequences preempted for KV blocks.", labels=["model"])
        cached = CounterMetricFamily(PREFIX + "prefix_cache_hit_tokens",
                                     "Prompt tokens taken from the prefix cache instead of computed.", labels=["model"])
        for model, st in sorted(stats.items()):
            running.add_metric([model], st.running)
            waiting.add_metric([model], st.waiting)
            kv.add_metric([model], st.kv_cache_usage)
            prompt.add_metric([model], st.prompt_tokens_total)
            gen.add_metric([model], st.generation_tokens_total)
            reqs.add_metric([model], st.requests_total - st.requests_failed)
            preempt.add_metric([model], st.preemptions_total)
            cached.add_metric([model], st.prefix_cache_hit_tokens_total)
        yield from (running, waiting, kv, prompt, gen, reqs, preempt, cached)


class DaemonMetrics:
    """The daemon's Prometheus registry and its HTTP endpoint."""

    def __init__(self, device_names: Callable[[], dict[int, str]] = dict,
                 device_samples: Callable[[], list] = list, engine_stats: Callable[[], dict] = dict,
                 engine_histograms: Callable[[], dict[str, tuple[EngineHistogram, ...]]] = dict):
        self.registry = CollectorRegistry()
        hist = lambda name, doc, buckets: Histogram(  # noqa: E731
            PREFIX + name, doc, ["model"], buckets=buckets, registry=self.registry)
        self.ttft = hist("time_to_first_token_seconds", "Time to first token, s.", _TTFT_BUCKETS)
        self.itl = hist("inter_token_latency_seconds", "Gap between output tokens, s.", _ITL_BUCKETS)
        self.e2e = hist("e2e_request_latency_seconds", "Request latency from arrival to last token, s.", _E2E_BUCKETS)
        self.queue = hist("request_queue_time_seconds", "Time spent waiting before the first step, s.", _E2E_BUCKETS)
        self.registry.register(_ScrapeCollector(device_names, device_samples, engine_stats))
        self.registry.register(_EngineHistogramCollector(engine_histograms))
        self._http = None
        self._thread = None
        self.port = 0

    def observe_request(self, model: str, m) -> None:
        """One finished request (engine.api.RequestMetrics); any thread."""
        self.e2e.labels(model).observe(m.total_s)
        self.queue.labels(model).observe(m.queue_s)
        if m.completion_tokens > 0:
            self.ttft.labels(model).observe(m.ttft_s)
        itl = self.itl.labels(model)
        for gap in m.itl_s:
            itl.observe(gap)

    def forget_model(self, model: str) -> None:
        """Drops a model's histogram series (after Undeploy)."""
        for h in (self.ttft, self.itl, self.e2e, self.queue):
            try:
                h.remove(model)
            except KeyError:
                pass

    def serve(self, host: str, port: int) -> int:
        """Starts /metrics on host:port (0 = any free port); returns the bound port.

        Raises OSError when the address is in use."""
        self._http, self._thread = start_http_server(port, addr=host, registry=self.registry)
        self.port = self._http.server_port
        return self.port

    def close(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
