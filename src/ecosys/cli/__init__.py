"""``eco``: the operations command-line tool of ecosys.

Ask any running service for its statistics, error states and queues, manage
its durable queues, send it any request, and export its numbers to
Prometheus. See docs/cli.md and docs/prometheus.md.
"""

from .commands import app, main

__all__ = ["app", "main"]
