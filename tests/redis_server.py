"""A real ``redis-server`` for tests: started on a free port, in a temp dir, no persistence.

Every failure test of the Redis hub uses the real server (killing it, restarting
it empty on the same port); nothing depends on a Redis already running. Where
``redis-server`` is missing the tests skip with a reason that says how to install
it, except under ``CI=true``, where a missing server fails the run (``.ci/run``
installs Debian's ``redis-server``).
"""

from __future__ import annotations

import os
import shutil

import pytest

from rxconn.cli._redis import LocalRedis


__all__ = ["RedisServer", "require_redis_server"]

INSTALL_HINT = "redis-server is not installed: `apt-get install redis-server` (Debian) to run it"


def require_redis_server() -> str:
    """The path of ``redis-server``; skips the test without it (fails under ``CI=true``)."""
    path = shutil.which("redis-server")
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{INSTALL_HINT}; .ci/run installs it, so CI must have it")
        pytest.skip(INSTALL_HINT)
    return path


RedisServer = LocalRedis
"""One ``redis-server`` process on 127.0.0.1 that a test can stop and start again."""
