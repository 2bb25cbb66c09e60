"""An asyncio client for the native wire protocol of the traitrpc framework (protocol version
4, JSON payloads), written from ``docs/PROTOCOL.md``. Standard library only.

.. code-block:: python

    import traitrpc_client

    async with await traitrpc_client.connect("127.0.0.1", 7070) as client:
        print(await client.call("Calculator", "add", {"a": 1, "b": 2}))     # 3
        async for n in client.server_stream("Calculator", "count", {"to": 3, "every_ms": 0}):
            print(n)                                                      # 1, 2, 3

See ``README.md`` for what is supported and how it maps to the protocol's sections.
"""

from . import protocol
from .calls import Args
from .client import Client
from .connect import connect
from .stream import ServerStream
from .errors import (
    Aborted,
    ApplicationError,
    CodecUnsupported,
    ConnectFailed,
    ConnectionClosed,
    DeadlineExceeded,
    DecodeError,
    FrameTooLarge,
    GoAway,
    HandlerPanicked,
    Internal,
    Interrupted,
    InvalidArguments,
    KeepaliveTimeout,
    Outcome,
    Overloaded,
    PermissionDenied,
    ProtocolError,
    ResponseEncodeFailed,
    ResponseTooLarge,
    RpcError,
    ShuttingDown,
    Unauthenticated,
    UnknownMethod,
    UnknownService,
    VersionMismatch,
    error_for_status,
)

__version__ = "0.1.0"

__all__ = [
    "protocol",
    "Args",
    "Client",
    "ServerStream",
    "connect",
    "Aborted",
    "ApplicationError",
    "CodecUnsupported",
    "ConnectFailed",
    "ConnectionClosed",
    "DeadlineExceeded",
    "DecodeError",
    "FrameTooLarge",
    "GoAway",
    "HandlerPanicked",
    "Internal",
    "Interrupted",
    "InvalidArguments",
    "KeepaliveTimeout",
    "Outcome",
    "Overloaded",
    "PermissionDenied",
    "ProtocolError",
    "ResponseEncodeFailed",
    "ResponseTooLarge",
    "RpcError",
    "ShuttingDown",
    "Unauthenticated",
    "UnknownMethod",
    "UnknownService",
    "VersionMismatch",
    "error_for_status",
]
