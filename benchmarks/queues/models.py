"""The request every queue benchmark case sends, shared by the servers and the runner."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

GROUPS = 8  # groups of the sequenced queued sender
NOTE = "benchmark order; " * 4  # pads the request to a typical small-message size


class Order(BaseModel):
    """A small business message: what the queued endpoint stores and the senders deliver."""

    seq: int
    account: str
    amount: float
    note: str


def order(seq: int) -> dict[str, Any]:
    """The request data for sequence number *seq*."""
    return {"seq": seq, "account": f"acct-{seq % 100_000:06d}", "amount": 1234.5, "note": NOTE}
