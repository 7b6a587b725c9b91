"""ecosys: message-based distributed systems over JSON on TCP, UDP and Unix sockets.

Everything public is re-exported here; other module names are internal.
"""

from .app import Application, current_app
from .cache import LRUCache
from .config import HostPort, Settings
from .errors import (
    ApplicationBusy,
    BadResponse,
    BroadcastIncomplete,
    ClientClosed,
    ClientDenied,
    ConfigurationError,
    ConnectFailed,
    ConnectionLost,
    EcosysError,
    ProcessingFailed,
    ProtocolErrorResponse,
    QueueFileError,
    Reject,
    RequestTimeout,
    ResponseError,
    TransportError,
    UnknownError,
    UnknownRoute,
    ValidationFailed,
)
from .lock import AlreadyRunning
from .protocol import Request, Response, Status, new_uid
from .queues import (
    QueuedEndpoint,
    QueuedSender,
    SenderNotOpen,
    backoff,
    queued_broadcaster,
    queued_endpoint,
    queued_sender,
)
from .routing import Endpoint, Registry, Router, default_registry, endpoint, reset_default_registry
from .sending import Broadcaster, BroadcastResult, broadcaster, sender
from .tasks import TaskKeeper, default_task_keeper, run_soon
from .telemetry import ErrorStateKeeper, StatisticsKeeper, error_states, stats
from .tracking import get_uid, set_uid, uid_scope
from .transport import (
    Client,
    TcpClient,
    TcpServer,
    UdpClient,
    UdpServer,
    UdsClient,
    UdsServer,
    client_from_url,
)

__version__ = "0.1.0"

__all__ = [
    "AlreadyRunning",
    "BroadcastIncomplete",
    "QueueFileError",
    "BroadcastResult",
    "Broadcaster",
    "broadcaster",
    "queued_broadcaster",
    "LRUCache",
    "ErrorStateKeeper",
    "StatisticsKeeper",
    "error_states",
    "stats",
    "QueuedEndpoint",
    "QueuedSender",
    "SenderNotOpen",
    "backoff",
    "queued_endpoint",
    "queued_sender",
    "Application",
    "ApplicationBusy",
    "BadResponse",
    "Client",
    "ClientClosed",
    "ClientDenied",
    "ConfigurationError",
    "ConnectFailed",
    "ConnectionLost",
    "EcosysError",
    "Endpoint",
    "HostPort",
    "ProcessingFailed",
    "ProtocolErrorResponse",
    "Registry",
    "Reject",
    "Request",
    "RequestTimeout",
    "Response",
    "ResponseError",
    "Router",
    "Settings",
    "Status",
    "TaskKeeper",
    "TcpClient",
    "TcpServer",
    "TransportError",
    "UdpClient",
    "UdpServer",
    "UdsClient",
    "UdsServer",
    "UnknownError",
    "UnknownRoute",
    "ValidationFailed",
    "__version__",
    "client_from_url",
    "current_app",
    "default_registry",
    "default_task_keeper",
    "endpoint",
    "get_uid",
    "new_uid",
    "reset_default_registry",
    "run_soon",
    "sender",
    "set_uid",
    "uid_scope",
]
