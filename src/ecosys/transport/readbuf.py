"""One receive buffer per thread, shared by every stream connection of that thread.

asyncio's plain ``Protocol`` reads with ``recv(256 KiB)``: each read allocates
a fresh 256 KiB block (mmap), shrinks it to what arrived (mremap) and frees it
later (munmap), three system calls per read. A ``BufferedProtocol`` receives
into memory it supplies instead. Reads on one event loop never overlap (the
loop reads, then calls ``buffer_updated``, which copies the bytes out before
returning), so one buffer per thread serves all connections.

Only asyncio's own selector loop gains from it: uvloop already reads into a
buffer of its own, and would pay two Python calls per read for ours.
"""

from __future__ import annotations

import asyncio
import threading
from asyncio.selector_events import BaseSelectorEventLoop

RECEIVE_BUFFER_SIZE = 256 * 1024

_local = threading.local()


def receive_buffer() -> memoryview:
    """This thread's receive buffer (created on first use)."""
    view: memoryview | None = getattr(_local, "view", None)
    if view is None:
        view = _local.view = memoryview(bytearray(RECEIVE_BUFFER_SIZE))
    return view


def loop_reads_into_fresh_memory(loop: asyncio.AbstractEventLoop) -> bool:
    """True for event loops whose plain protocols get a fresh allocation per read (asyncio's)."""
    return isinstance(loop, BaseSelectorEventLoop)


class ReceivesIntoSharedBuffer:
    """Mixin for a protocol with ``data_received``: list it before the protocol and
    add ``asyncio.BufferedProtocol`` last, and the loop receives into the shared buffer."""

    def get_buffer(self, sizehint: int) -> memoryview:
        """The shared receive buffer."""
        return receive_buffer()

    def buffer_updated(self, nbytes: int) -> None:
        """Copy the bytes out (the buffer is shared) and handle them as a plain read."""
        self.data_received(receive_buffer()[:nbytes].tobytes())  # type: ignore[attr-defined]

