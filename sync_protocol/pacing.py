"""Pacing of the device's uploads: how much each request carries, and how long to wait.

Pure rules, no clock and no randomness of their own: exchange times come in as arguments and
jitter from the ``rng`` the caller passes. The CLI's sync client and the browser app use them
the same way:

* :class:`LinkEstimate` — the request budget: measured link speed × a target exchange time.
* :class:`BatchPlanner` — the batches of the next request, cut from the outbox by
  :func:`sync_protocol.exchange.split_into_batches` within that budget.
* :class:`Backoff` — exponential backoff with equal jitter after a failed exchange.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Final, Protocol

from sync_protocol.exchange import DEFAULT_BATCH_WIRE_BYTES, split_into_batches
from sync_protocol.messages import UploadBatch
from sync_protocol.ops import Op

__all__ = [
    "DROP_INTERVAL_SHARE",
    "MAX_BATCHES_PER_REQUEST",
    "MIN_REQUEST_BYTES",
    "MIN_TARGET_S",
    "PRIOR_DROP_EVERY_S",
    "Backoff",
    "BatchPlanner",
    "Jitter",
    "LinkEstimate",
]

#: Most batches one request carries on a fast link.
MAX_BATCHES_PER_REQUEST: Final = 8
#: The smallest request budget: even a crawling link gets a useful batch per exchange.
MIN_REQUEST_BYTES: Final = 2048
#: Once a link has dropped, its time between drops is estimated with a prior of two drops
#: seen, one per this many seconds in use (DESIGN §5's village link drops every ~20 s), so a
#: single early drop does not shrink every exchange at once.
PRIOR_DROP_EVERY_S: Final = 20.0
_PRIOR_DROPS: Final = 2
#: An exchange aims at this fraction of the link's measured time between drops: a drop costs
#: about half an exchange (and the wait after it), each exchange a round trip and the server's
#: fixed cost, and a third of the interval balances the two for intervals of 8–20 s.
DROP_INTERVAL_SHARE: Final = 1 / 3
#: The shortest exchange aimed at, however often the link drops.
MIN_TARGET_S: Final = 1.0


class Jitter(Protocol):
    """Where jitter comes from (``random.Random`` has this method)."""

    def uniform(self, a: float, b: float) -> float:
        """A number between ``a`` and ``b``."""
        ...


class Backoff:
    """Exponential backoff with jitter: attempt n waits between half and all of base·2ⁿ⁻¹.

    1 s, 2 s, 4 s … capped at ``cap_s`` (5 min); "equal jitter" keeps at least half of each
    step, so many tablets that lost the same link do not come back in lockstep, yet no retry
    comes sooner than half the schedule.
    """

    def __init__(self, base_s: float = 1.0, cap_s: float = 300.0, *, rng: Jitter) -> None:
        """``rng`` draws the jitter (``random.Random`` or a seeded one in tests)."""
        self.base_s = base_s
        self.cap_s = cap_s
        self.failures = 0
        self._rng = rng

    def next_delay(self) -> float:
        """Count one more failure and return how long to wait before the next attempt."""
        self.failures += 1
        step = min(self.cap_s, self.base_s * (2 ** (self.failures - 1)))
        return step / 2 + self._rng.uniform(0, step / 2)

    def reset(self) -> None:
        """A success: the next failure starts the schedule again."""
        self.failures = 0


class LinkEstimate:
    """How much one request should carry: measured link speed × a target exchange time.

    Speed is an exponentially weighted average of (request + reply bytes) ÷ link time (the
    exchange's time less the server's own, when the server reports it) over successful
    exchanges; the reply-to-request ratio is tracked too, because the reply (acks
    with merged states, download pages) crosses the same link. The budget is the upload bytes
    that keep a whole exchange near ``target_s``; it halves after a drop and at most doubles
    after a success, so on a link that keeps dropping it stays near the size that gets through.

    The link's time between drops is measured too (time in exchanges ÷ drops, with a prior of
    two drops, one per :data:`PRIOR_DROP_EVERY_S`): on a link that drops every few seconds an
    exchange aims at a third of that interval instead of ``target_s``, so most exchanges end
    before the next drop and a drop loses a short exchange, not a long one.
    """

    def __init__(
        self,
        *,
        target_s: float = 8.0,
        initial_bytes: int = DEFAULT_BATCH_WIRE_BYTES,
        max_bytes: int = MAX_BATCHES_PER_REQUEST * DEFAULT_BATCH_WIRE_BYTES,
        min_bytes: int = MIN_REQUEST_BYTES,
    ) -> None:
        self.target_s = target_s
        self.max_bytes = max_bytes
        self.min_bytes = min_bytes
        self.bytes_per_s: float | None = None
        self.reply_ratio = 1.0
        self._budget = initial_bytes
        #: Seconds spent in exchanges (answered or dropped) and the drops among them.
        self.link_s = 0.0
        self.drops = 0

    @property
    def drop_every_s(self) -> float | None:
        """The link's estimated time between drops while in use (with the prior), None while
        it has not dropped."""
        if not self.drops:
            return None
        prior = _PRIOR_DROPS * PRIOR_DROP_EVERY_S
        return (self.link_s + prior) / (self.drops + _PRIOR_DROPS)

    @property
    def exchange_target_s(self) -> float:
        """How long one exchange should take on the link: ``target_s``, less on a link that
        drops often."""
        every = self.drop_every_s
        if every is None:
            return self.target_s
        return min(self.target_s, max(MIN_TARGET_S, every * DROP_INTERVAL_SHARE))

    def observe(
        self,
        sent: int,
        received: int,
        elapsed_s: float,
        *,
        uploaded: bool = True,
        server_s: float | None = None,
    ) -> None:
        """Fold in one successful exchange (``uploaded``: it carried batches).

        ``server_s``: the server's own time on the exchange (its ``Server-Timing`` header),
        taken out of ``elapsed_s`` before the speed is computed. The link sat idle while the
        server worked: counting that time as link time made a loaded server look like a slow
        link, and every exchange then carried less, paid its round trip and the server's
        fixed cost again, and the sync took longer still.

        A download-only exchange (a bare hello, a big page back) says how fast the link is but
        nothing about how large the reply to an upload is, so it leaves the ratio alone.
        """
        link_s = elapsed_s - min(max(server_s or 0.0, 0.0), elapsed_s)
        if link_s <= 0 or sent <= 0:
            return
        self.link_s += elapsed_s
        speed = (sent + received) / link_s
        self.bytes_per_s = (
            speed if self.bytes_per_s is None else 0.6 * self.bytes_per_s + 0.4 * speed
        )
        if uploaded:
            self.reply_ratio = 0.6 * self.reply_ratio + 0.4 * (received / sent)
        budget = self.bytes_per_s * self.exchange_target_s / (1.0 + self.reply_ratio)
        # Grow at most twofold per success: after drops, the size that got through is the best
        # guide, and a fast link that keeps dropping must not jump straight back to the maximum.
        budget = min(budget, 2 * self._budget)
        self._budget = int(max(self.min_bytes, min(self.max_bytes, budget)))

    def failed(self, elapsed_s: float | None = None) -> None:
        """An exchange failed: carry less next time (a shorter exchange survives).

        ``elapsed_s``: the link dropped after this many seconds of the exchange (a reset, a
        timeout); counted into the time between drops. None: a failure that says nothing
        about the link (a busy server, a refused sequence).
        """
        if elapsed_s is not None and elapsed_s >= 0:
            self.link_s += elapsed_s
            self.drops += 1
        self._budget = max(self.min_bytes, self._budget // 2)

    @property
    def request_bytes(self) -> int:
        """Upload bytes (batch frames) the next request may carry."""
        return self._budget

    @property
    def batch_bytes(self) -> int:
        """Wire size of each batch: at most the protocol default (32 KiB), at most the budget."""
        return max(self.min_bytes, min(DEFAULT_BATCH_WIRE_BYTES, self._budget))


class BatchPlanner:
    """Cuts the next request's batches from the outbox, learning how big ops are on the wire.

    Only as many ops are cut as the batches can hold (from the last cut, with room to spare),
    so a long outbox is not compressed over and over beyond what goes out now.
    """

    def __init__(self, wire_bytes_per_op: float = 80.0) -> None:
        self.wire_bytes_per_op = wire_bytes_per_op

    def window(self, link: LinkEstimate) -> int:
        """How many ops the next request's batches can hold, with room to spare: read this
        many (and one more, so :meth:`plan` can tell that the window ran dry) from the outbox."""
        batch_bytes = link.batch_bytes
        count = max(1, min(MAX_BATCHES_PER_REQUEST, link.request_bytes // batch_bytes))
        return max(16, int(count * batch_bytes / self.wire_bytes_per_op * 1.25) + 8)

    def plan(
        self,
        pending: Sequence[Op],
        link: LinkEstimate,
        *,
        sender_id: str,
        allowed: Collection[int],
    ) -> list[UploadBatch]:
        """The batches of the next request, lowest seq first: as many as ``link`` allows
        (at most :data:`MAX_BATCHES_PER_REQUEST`), at least one when ``pending`` is not empty.
        ``batch_seq`` is left to the caller to number."""
        if not pending:
            return []
        batch_bytes = link.batch_bytes
        count = max(1, min(MAX_BATCHES_PER_REQUEST, link.request_bytes // batch_bytes))
        window = list(pending[: self.window(link)])
        batches = split_into_batches(
            window,
            batch_bytes,
            sender_id=sender_id,
            allowed=frozenset(allowed),
            ops_per_batch=int(batch_bytes / self.wire_bytes_per_op),
        )[:count]
        used = sum(len(b.ops) for b in batches)
        if used == len(window) and len(pending) > len(window):
            # The window ran dry before the batches were full: ops are smaller than thought.
            self.wire_bytes_per_op = max(20.0, self.wire_bytes_per_op * 0.7)
        elif used < len(window):
            # Every chosen batch was cut by size: about ``batch_bytes`` each.
            self.wire_bytes_per_op = max(20.0, len(batches) * batch_bytes / used)
        return batches
