"""service.metrics.BatchHistogram against prometheus_client's own Histogram: the same values,
observed a batch at a time here and one at a time there, give the same exposition."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from service.metrics import _FOLD_AT, BatchHistogram, Metrics

BUCKETS = (50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.99)


def _samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample but the ``_created`` timestamps, by name and labels."""
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if not s.name.endswith("_created")
    }


def _pair() -> tuple[CollectorRegistry, Histogram, CollectorRegistry, BatchHistogram]:
    theirs, ours = CollectorRegistry(), CollectorRegistry()
    reference = Histogram("h", "doc", ["model", "view"], buckets=BUCKETS, registry=theirs)
    batched = BatchHistogram("h", "doc", ["model", "view"], BUCKETS)
    ours.register(batched)
    return theirs, reference, ours, batched


@pytest.mark.parametrize("batch", [1, 5, 32])
def test_batches_count_as_prometheus_counts_one_value_at_a_time(batch: int) -> None:
    theirs, reference, ours, batched = _pair()
    rng = np.random.default_rng(batch)
    # every bound exactly (le: less than or equal), the ends, and values between
    values = np.concatenate([BUCKETS, [0.0, 100.0, 99.991], rng.uniform(0, 100, 200)]).astype(np.float32)
    observe = {view: batched.observer("m", view) for view in ("denoise", "encode")}
    for start in range(0, len(values), batch):
        chunk = values[start : start + batch]
        view = "denoise" if start % (2 * batch) == 0 else "encode"
        observe[view](chunk)
        for v in chunk:
            reference.labels("m", view).observe(float(v))
    ours_samples, theirs_samples = _samples(ours), _samples(theirs)
    assert ours_samples.keys() == theirs_samples.keys()
    for key, value in theirs_samples.items():
        assert ours_samples[key] == pytest.approx(value, rel=1e-9), key
    total = sum(v for (name, _), v in ours_samples.items() if name == "h_count")
    assert total == len(values)


def test_a_series_shows_from_its_first_observer_with_zero_counts() -> None:
    _, _, ours, batched = _pair()
    batched.observer("m", "denoise")
    samples = _samples(ours)
    assert samples[("h_count", (("model", "m"), ("view", "denoise")))] == 0
    assert samples[("h_bucket", (("le", "+Inf"), ("model", "m"), ("view", "denoise")))] == 0
    with pytest.raises(ValueError, match="labels"):
        batched.observer("m")


def test_observers_in_several_threads_lose_no_count() -> None:
    metrics = Metrics()
    observe = metrics.ood_observer("m", "denoise")
    assert metrics.ood_observer("m", "denoise") is observe
    values = np.linspace(0, 100, 32, dtype=np.float32)

    def work() -> None:
        for i in range(500):
            observe(values if i % 2 else values[:1])

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    samples = _samples(metrics.registry)
    assert samples[("ae_ood_percentile_count", (("model", "m"), ("view", "denoise")))] == 4 * 250 * 33


@pytest.mark.parametrize("batch", [1, 3, 32])
def test_a_nan_is_not_counted_and_leaves_the_sum_a_number(batch: int) -> None:
    _, _, ours, batched = _pair()
    observe = batched.observer("m", "denoise")
    values = np.full(batch, 60.0, np.float32)
    values[0] = np.nan
    observe(values)
    samples = _samples(ours)
    labels = (("model", "m"), ("view", "denoise"))
    assert samples[("h_count", labels)] == batch - 1
    assert samples[("h_sum", labels)] == 60.0 * (batch - 1)


def test_batches_held_are_counted_by_a_scrape_and_past_the_bound_without_one() -> None:
    theirs, reference, ours, batched = _pair()
    observe = batched.observer("m", "denoise")
    held = batched._series[("m", "denoise")].pending
    values = np.linspace(0, 100, 7, dtype=np.float32)
    for i in range(3 * _FOLD_AT + 5):
        batch = values[i % 7 :]
        observe(batch)
        for v in batch:
            reference.labels("m", "denoise").observe(float(v))
        assert len(held) < _FOLD_AT  # what a series holds stays bounded with nobody scraping
    assert len(held) == 5
    ours_samples, theirs_samples = _samples(ours), _samples(theirs)
    assert len(held) == 0  # the scrape counted them
    for key, value in theirs_samples.items():
        assert ours_samples[key] == pytest.approx(value, rel=1e-9), key
