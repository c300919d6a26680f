"""The Redis test support: where redis-server is missing, say how to install it."""

from __future__ import annotations

import pytest


def test_a_missing_redis_server_skips_locally_and_fails_under_ci(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The Redis tests say how to install redis-server; under CI=true they fail instead."""
    from tests import redis_server

    monkeypatch.setattr(redis_server.shutil, "which", lambda _: None)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install redis-server"):
        redis_server.require_redis_server()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="apt-get install redis-server"):
        redis_server.require_redis_server()
