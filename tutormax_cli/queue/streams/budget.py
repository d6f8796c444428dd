"""The bytes one batch of the worker may still read (streams.ReadBudget)."""

from __future__ import annotations

from ..envelope import MESSAGE_MAX_BYTES, Message


class ReadBudget:
    """The bytes one batch may still read (SPEC §6a: hostile input is bounded).

    Redis' COUNT bounds the entries of a read, not its bytes: 5,000 entries of up to
    MESSAGE_MAX_BYTES on each of three streams were up to 15 GB in one reply, about three
    times that once parsed, and a worker killed for its memory read the same entries again
    once restarted. So each read of a batch asks for as many entries a stream as the bytes
    left could hold, each entry taken as big as the biggest this batch has met (at least
    MESSAGE_MAX_BYTES: Redis stores entries far over the cap, which are poison, but whole),
    and never more than twice what the previous read asked for, starting from one: a read
    of entries bigger than any before it is a few of them, not 42. At least one entry is
    asked for while any byte is left; the batch stops reading once none is. A batch of
    entries at the cap reads about `total` bytes; one of small entries reads its batch
    size in a few more round trips, which cost Redis nothing more per entry (README,
    Queues). `ReadBudget()` bounds nothing: each read asks for all that is wanted."""

    def __init__(self, total: int | None = None) -> None:
        self.left = total
        self.largest = MESSAGE_MAX_BYTES  # the biggest entry met so far, or the cap
        self.step = 1  # the most the next read may ask for, a stream (doubles a read)

    def entries(self, wanted: int, streams: int = 1) -> int:
        """How many of `wanted` entries a stream one read of `streams` streams may ask for
        (0: none)."""
        if self.left is None:
            return wanted
        if self.left <= 0:
            return 0
        n = max(1, min(self.step, self.left // (self.largest * max(streams, 1))))
        self.step = 2 * n
        return min(wanted, n)

    def absorb(self, left: int | None, largest: int, step: int) -> None:
        """Where reads made in Redis by the same rule left it (bounded._READ_GROUP_LUA)."""
        self.left, self.largest, self.step = left, largest, step

    def spend(self, messages: list[Message]) -> None:
        """What `messages` took of Redis' reply: an entry cut in Redis (bounded.py) counts
        its whole size, so a batch stops reading after a few of them."""
        if self.left is not None:
            self._spent([m.size for m in messages])

    def _spent(self, sizes: list[int]) -> None:
        assert self.left is not None
        if sizes:
            self.left -= sum(sizes)
            self.largest = max(self.largest, *sizes)
