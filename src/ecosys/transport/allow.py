"""Which network peers may talk to a TCP or UDP server (the allowlist behind status 200)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Allowlist:
    """Peer addresses allowed to send requests; everyone else is denied.

    Built from addresses or networks (``"10.0.0.0/8"``, ``"127.0.0.1"``,
    ``"::1"``). UDS peers are on the same machine and are not filtered.
    """

    def __init__(self, networks: Iterable[str | Network]) -> None:
        self.networks: list[Network] = [
            n if isinstance(n, ipaddress.IPv4Network | ipaddress.IPv6Network)
            else ipaddress.ip_network(str(n).strip(), strict=False)
            for n in networks
        ]

    def allows(self, host: str) -> bool:
        """True when *host* (an IP address string) is in one of the networks."""
        try:
            address = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self.networks)

    def __repr__(self) -> str:
        return f"Allowlist({', '.join(str(n) for n in self.networks)})"
