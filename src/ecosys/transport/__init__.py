"""Transports: one module per kind, each with its server and client."""

from .client import Client, StreamClient
from .tcp import TcpClient, TcpServer
from .udp import UdpClient, UdpServer
from .uds import UdsClient, UdsServer
from .urls import client_from_url

__all__ = [
    "Client",
    "StreamClient",
    "TcpClient",
    "TcpServer",
    "UdpClient",
    "UdpServer",
    "UdsClient",
    "UdsServer",
    "client_from_url",
]
