"""Send a few messages to the outbox, then show its queued sender's state.

Run it:  python examples/queued_sender/send_some.py [tcp://127.0.0.1:8810] [messages per customer]

Messages are sent one after the other, so the outbox stores them (and the inbox will
receive each customer's messages) in this order: alice #1, bob #1, carol #1, alice #2, ...
"""

from __future__ import annotations

import asyncio
import json
import sys

from ecosys import ResponseError, TransportError, client_from_url

URL = sys.argv[1] if len(sys.argv) > 1 else "tcp://127.0.0.1:8810"
PER_CUSTOMER = int(sys.argv[2]) if len(sys.argv) > 2 else 3
CUSTOMERS = ("alice", "bob", "carol")


async def main() -> int:
    async with client_from_url(URL, timeout=5.0) as outbox:
        try:
            for seq in range(1, PER_CUSTOMER + 1):
                for customer in CUSTOMERS:
                    message = {"customer": customer, "seq": seq, "text": f"message {seq} for {customer}"}
                    answer = await outbox.request("outbox.send", message)
                    print(f"queued {customer} #{seq} as uid {answer['uid']} "
                          f"({answer['pending']} waiting)")
            state = await outbox.request("eco.queued_sender.data", {"queue_route_key": "to_inbox"})
            states = await outbox.request("eco.error_states.get")
        except (TransportError, ResponseError) as exc:
            print(f"cannot use the outbox at {URL}: {exc}")
            return 1
    print(f"eco.queued_sender.data: {json.dumps(state, sort_keys=True)}")
    for name, info in states.items():
        print(f"error state {name}: {info['description']}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
