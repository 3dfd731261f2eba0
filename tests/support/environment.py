"""Where the project lives and which services a test run may require: the
repository root, whether missing services fail instead of skipping
(IOLINKER_REQUIRE_SERVICES=1), and the Redis a test may use."""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent.parent


REQUIRE_SERVICES = os.environ.get("IOLINKER_REQUIRE_SERVICES") == "1"


def redis_url_or_reason() -> tuple[str | None, str]:
    url = (
        os.environ.get("IOLINKER_TEST_REDIS_URL")
        or os.environ.get("REDIS_URL")
        or "redis://127.0.0.1:6379/15"
    )
    try:
        import redis

        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    except Exception as exc:  # noqa: BLE001
        return None, f"Redis is not reachable at {url}: {exc}"
    return url, ""
