"""A node's execution events moved into a queue, so the placer can wait on it with a timeout
(a stalled node) without cancelling the stream itself."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from orc.node.protocol.errors import NodeError
from orc.node.protocol.messages import ExecuteEvent

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StreamEnded:
    pass


@dataclass(frozen=True)
class StreamBroke:
    error: BaseException


async def pump(stream: AsyncIterator[ExecuteEvent], into: "asyncio.Queue[object]") -> None:
    """Move a node's execution events into a queue, so the reader can time out without
    cancelling the stream."""
    try:
        async for event in stream:
            into.put_nowait(event)
        into.put_nowait(StreamEnded())
    except asyncio.CancelledError:
        raise
    except (NodeError, OSError) as error:  # the peer, the connection or its messages failed
        into.put_nowait(StreamBroke(error))
    except Exception as error:  # noqa: BLE001 - task boundary: a bug must still end the reader's wait
        log.exception("reading an execution stream failed unexpectedly")
        into.put_nowait(StreamBroke(error))
    finally:
        close = getattr(stream, "aclose", None)
        if close is not None:
            await close()
