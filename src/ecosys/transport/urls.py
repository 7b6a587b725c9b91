"""Build a client from a URL: tcp://host:port, udp://host:port, uds:///path."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from .client import Client
from .tcp import TcpClient
from .udp import UdpClient
from .uds import UdsClient


def client_from_url(url: str, **options: Any) -> Client:
    """Return a TcpClient, UdpClient or UdsClient for *url*; options go to the client."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if "?" in url or "#" in url:
        # Dropped silently, a typo or a pasted HTTP URL would talk to some other address.
        raise ValueError(f"{url!r}: a service URL has no query or fragment")
    if scheme == "uds":
        path = (parts.netloc + parts.path) if parts.netloc else parts.path
        if not path:
            raise ValueError(f"{url!r}: a uds URL needs a path, e.g. uds:///run/app.sock")
        return UdsClient(path, **options)
    if scheme in ("tcp", "udp"):
        try:
            port = parts.port
        except ValueError:
            port = None
        if not parts.hostname or port is None:
            raise ValueError(f"{url!r}: expected {scheme}://host:port")
        if parts.path not in ("", "/") or "@" in parts.netloc:
            raise ValueError(f"{url!r}: expected {scheme}://host:port, with no path or user")
        cls = TcpClient if scheme == "tcp" else UdpClient
        return cls(parts.hostname, port, **options)
    raise ValueError(f"{url!r}: unknown scheme; use tcp://, udp:// or uds://")
