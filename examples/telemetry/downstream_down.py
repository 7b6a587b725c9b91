"""A downstream service is down, then comes up: the queued sender's error state follows it.

    python examples/telemetry/downstream_down.py

Our application stores notes for a downstream service with a queued sender named
"notes". Nothing listens at the downstream address yet, so every delivery fails: the
sender raises the error state ``queued_sender.notes.unreachable`` and keeps retrying.
An operator asking ``eco.error_states.get`` (what ``eco errors get`` does) sees it.
Then the downstream service starts: the next retry gets through, the note is delivered
and the state clears itself.
"""

from __future__ import annotations

import asyncio
import json
import socket
import tempfile

from pydantic import BaseModel

from ecosys import Application, Registry, Router, TcpClient, TcpServer, backoff, endpoint, queued_sender


class Note(BaseModel):
    text: str


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def main() -> None:
    port = free_port()

    # The downstream service: one endpoint, not started yet.
    downstream = Registry()

    @endpoint("notes.store", registry=downstream)
    async def store(note: Note) -> None:
        print(f"downstream: stored {note.text!r}")

    # Our application: a queued sender to it, retrying every 0.2 s.
    ours = Registry()
    target = TcpClient("127.0.0.1", port, retries=0, timeout=1)

    @queued_sender(target, "notes.store", name="notes", registry=ours, backoff=backoff.constant(0.2))
    def send_note(text: str) -> Note:
        return Note(text=text)

    with tempfile.TemporaryDirectory() as tmp:
        app = Application("downstream_down", instance="1", registry=ours,
                          config={"tcp": "127.0.0.1:0", "queue_dir": tmp, "default_dir": tmp})
        await app.start()
        # What an operator uses: the standard endpoints of our application.
        ops = TcpClient("127.0.0.1", app.servers[0].port)
        server = TcpServer(Router(downstream), "127.0.0.1", port)
        try:
            await send_note("hello")  # stored on disk; delivery is attempted in the background
            await asyncio.sleep(1)
            states = await ops.request("eco.error_states.get")
            print("while the downstream service is down:")
            print(json.dumps(states, indent=2))

            await server.start()
            for _ in range(50):  # the next retry gets through and clears the state
                states = await ops.request("eco.error_states.get")
                if not states:
                    break
                await asyncio.sleep(0.1)
            print("once it is up again:", json.dumps(states))
            sender = await ops.request("eco.queued_sender.data", {"queue_route_key": "notes"})
            print(f"sender: delivered={sender['delivered']} pending={sender['pending']}")
        finally:
            await ops.close()
            await app.stop()
            await server.close(1)
            await target.close()


if __name__ == "__main__":
    asyncio.run(main())
