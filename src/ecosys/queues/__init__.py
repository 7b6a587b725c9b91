"""Durable queues: the SQLite store, queued endpoints, queued senders and sequencing."""

from .backoff import constant, exponential
from .broadcast import queued_broadcaster
from .endpoint import QueuedEndpoint, queued_endpoint
from .sender import QueuedSender, SenderNotOpen, queued_sender
from .store import DurableQueue, Entry

__all__ = [
    "DurableQueue",
    "Entry",
    "QueuedEndpoint",
    "QueuedSender",
    "SenderNotOpen",
    "constant",
    "exponential",
    "queued_broadcaster",
    "queued_endpoint",
    "queued_sender",
]
