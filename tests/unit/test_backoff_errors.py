"""Backoff schedule and the error policy (sans-I/O)."""

from __future__ import annotations

import random

import pytest

from rxconn import Backoff, errors


def test_defaults_follow_the_contract() -> None:
    """Backoff() defaults: 0.1 s, x2, 30 s cap, 20% jitter, forever, stable after 2 s."""
    b = Backoff()
    assert (b.initial, b.factor, b.max_delay, b.jitter, b.max_attempts, b.stable_after) == (
        0.1,
        2.0,
        30.0,
        0.2,
        None,
        2.0,
    )


def test_base_delay_grows_and_caps_without_overflow() -> None:
    """Delay n = min(max_delay, initial * factor**n), even for huge n."""
    b = Backoff(initial=0.5, factor=3.0, max_delay=10.0, jitter=0.0)
    assert [b.delay(n) for n in range(5)] == [0.5, 1.5, 4.5, 10.0, 10.0]
    assert b.delay(10_000) == 10.0


def test_jitter_is_reproducible_with_a_seeded_rng() -> None:
    """The same seed gives the same schedule; every delay is within the jitter band."""
    one = Backoff(jitter=0.5, rng=random.Random(1))
    two = Backoff(jitter=0.5, rng=random.Random(1))
    first = [one.delay(n) for n in range(20)]
    assert first == [two.delay(n) for n in range(20)]
    for n, d in enumerate(first):
        base = min(30.0, 0.1 * 2.0**n)
        assert 0.5 * base <= d <= 1.5 * base


def test_max_attempts() -> None:
    """gives_up_after(n) is true for the last allowed attempt."""
    assert not Backoff().gives_up_after(10**6)
    assert Backoff(max_attempts=1).gives_up_after(0)
    assert [Backoff(max_attempts=3).gives_up_after(n) for n in range(3)] == [False, False, True]


@pytest.mark.parametrize(
    "kwargs",
    [{"initial": -1}, {"factor": 0.5}, {"jitter": 2}, {"max_attempts": 0}, {"stable_after": -1}],
)
def test_invalid_backoff_is_refused(kwargs: dict[str, float]) -> None:
    """Nonsense settings raise ValueError at once."""
    with pytest.raises(ValueError):
        Backoff(**kwargs)  # type: ignore[arg-type]


def test_retry_policy() -> None:
    """Network, timeouts and 5xx retry; 204/401/403/404, fatal marks and foreign errors do not."""
    assert errors.is_retryable(errors.ConnectionLost("ws", "reset"))
    assert errors.is_retryable(errors.OpenTimeout("ws", "slow"))
    assert errors.is_retryable(errors.TransportError("ws", "busy", status=503))
    assert errors.is_retryable(errors.SessionExpired("ws", "gone", status=410))
    for status in (204, 401, 403, 404):
        assert not errors.is_retryable(errors.TransportError("ws", "no", status=status))
    assert not errors.is_retryable(errors.ProtocolError("ws", "mismatch", fatal=True))
    assert errors.is_retryable(errors.ProtocolError("ws", "one bad frame"))
    assert not errors.is_retryable(ValueError("bug"))


def test_errors_keep_structured_fields_and_safe_text() -> None:
    """Errors expose their fields; URLs in messages lose credentials and queries."""
    e = errors.TransportError("http", "refused", status=503, retry_after=2.0)
    assert (e.transport, e.status, e.retry_after) == ("http", 503, 2.0)
    assert str(e) == "http: refused (HTTP 503)"
    assert errors.safe_url("https://u:p@h:1/x?token=1#f") == "https://h:1/x"
    exhausted = errors.RetriesExhausted(3)
    exhausted.__cause__ = e
    assert "3 failed attempts" in str(exhausted) and "refused" in str(exhausted)
    assert isinstance(errors.InvalidURL("x", "bad"), ValueError)
    assert isinstance(errors.MessageTooLarge(5, 4), ValueError)


def test_every_error_is_an_rxconn_error() -> None:
    """The whole documented tree derives from RxconnError."""
    for name in errors.__all__:
        obj = getattr(errors, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, errors.RxconnError), name
