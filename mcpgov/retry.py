"""Retry with backoff: the one helper every loop of the enforcer that waits out a portal or an upstream uses.

Delays double from ``first`` up to ``cap``, each drawn from its upper half (jitter), so gateways that lost
the portal at the same moment do not come back at the same moment.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio

T = TypeVar("T")

log = logging.getLogger("mcpgov.retry")


class Backoff:
    """Successive delays: ``first``, ``2 * first``, … capped at ``cap``, with jitter; :meth:`reset` starts over."""

    __slots__ = ("_next", "cap", "factor", "first", "jitter")

    def __init__(
        self, first: float = 0.5, cap: float = 30.0, *, factor: float = 2.0, jitter: bool = True
    ) -> None:
        self.first = first
        self.cap = cap
        self.factor = factor
        self.jitter = jitter
        self._next = first

    def next(self) -> float:
        delay = min(self.cap, self._next)
        self._next = min(self.cap, delay * self.factor)
        return delay * (0.5 + random.random() / 2) if self.jitter else delay  # noqa: S311 (jitter, not crypto)

    def reset(self) -> None:
        self._next = self.first


async def retry(
    attempt: Callable[[], Awaitable[T]],
    *,
    what: str,
    retry_on: tuple[type[BaseException], ...] = (Exception,),
    give_up_on: tuple[type[BaseException], ...] = (),
    stop: Callable[[], bool] | None = None,
    first: float = 0.5,
    cap: float = 30.0,
    on_failure: Callable[[BaseException, float], None] | None = None,
    logger: logging.Logger = log,
) -> T | None:
    """Await ``attempt()`` until it returns, waiting out each failure in ``retry_on`` with a :class:`Backoff`.

    ``give_up_on`` exceptions (checked first) and any exception outside ``retry_on`` propagate at once.
    ``stop()`` is asked before every attempt: once true, :func:`retry` returns None without trying again.
    ``on_failure(exc, delay)`` replaces the default warning ``"<what> failed (<exc>); retrying in <delay>s"``.
    """
    backoff = Backoff(first, cap)
    while stop is None or not stop():
        try:
            return await attempt()
        except give_up_on:
            raise
        except retry_on as exc:
            delay = backoff.next()
            if on_failure is not None:
                on_failure(exc, delay)
            else:
                logger.warning("%s failed (%s); retrying in %.1fs", what, exc, delay)
            await anyio.sleep(delay)
    return None
