"""The daemon's long-running parts, each supervised: a part that fails is logged and restarted
with backoff (1 s doubling to `RESTART_BACKOFF_MAX`, back to 1 s after a minute of health), so
one bad component never takes the node down; a clean return ends it."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

RESTART_BACKOFF_MAX = 30.0


async def cancel_all(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def supervised(name: str, part: Callable[[], Awaitable[None]]) -> None:
    """Run one component; if it fails, log and restart it with backoff (a clean return ends it)."""
    delay = 1.0
    while True:
        started = time.monotonic()
        try:
            await part()
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s failed; restarting in %.0f s", name, delay)
        if time.monotonic() - started > 60:
            delay = 1.0
        await asyncio.sleep(delay)
        delay = min(delay * 2, RESTART_BACKOFF_MAX)
