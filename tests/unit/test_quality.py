"""The link-quality estimator: RFC 3550-style smoothing, missed heartbeats, reset per link."""

from __future__ import annotations

import pytest

from rxconn.quality import LinkQuality, QualityEstimator, RoundTrip


def test_the_first_sample_sets_the_average_then_it_moves_an_eighth_of_the_way() -> None:
    """avg += (rtt - avg) / 8 and jitter += (|rtt - avg| - jitter) / 16, per sample."""
    estimator = QualityEstimator("websocket")
    assert estimator.add(RoundTrip(0.100)) == LinkQuality("websocket", 0.100, 0.100, 0.0, 0)
    second = estimator.add(RoundTrip(0.180))
    assert second is not None
    assert second.rtt == 0.180
    assert second.rtt_avg == pytest.approx(0.110)
    assert second.jitter == pytest.approx(0.005)


def test_missed_heartbeats_are_counted_and_reset_with_the_link() -> None:
    """A missed heartbeat counts without moving the average; a new link starts over."""
    estimator = QualityEstimator("http")
    assert estimator.add(RoundTrip(None)) is None  # nothing answered yet: no quality
    quality = estimator.add(RoundTrip(0.050))
    assert quality is not None and quality.missed == 1 and quality.rtt_avg == 0.050
    missed = estimator.add(RoundTrip(None))
    assert missed is not None and missed.missed == 2 and missed.rtt_avg == 0.050
    estimator.reset("longpoll")
    fresh = estimator.add(RoundTrip(0.200))
    assert fresh == LinkQuality("longpoll", 0.200, 0.200, 0.0, 0)
