"""The errors a call can fail with.

Every error is an :class:`RpcError`. Errors the server answered carry its status code
(PROTOCOL.md section 7) in :attr:`RpcError.status`; errors found on this side (connection
lost, protocol violations, refused locally) have ``status = None``. Each error also says
how far the call got (:class:`Outcome`, section 7.1), which decides whether it may be
sent again.
"""

from __future__ import annotations

import enum
from typing import Any, Dict, Optional, Type

from . import protocol as p


class Outcome(enum.Enum):
    """How far a failed call got (PROTOCOL.md section 7.1)."""

    #: It never left the client.
    NOT_SENT = "not_sent"
    #: The server received it and ran no handler.
    NOT_STARTED = "not_started"
    #: It may or may not have run.
    UNKNOWN = "unknown"
    #: A handler ran and did not finish normally.
    STARTED = "started"
    #: A handler ran to its end.
    COMPLETED = "completed"

    def may_retry(self, idempotent: bool) -> bool:
        """Whether a call with this outcome may be sent again without asking its caller
        (section 7.1): only if it never ran, or if it is idempotent and did not complete."""
        if self in (Outcome.NOT_SENT, Outcome.NOT_STARTED):
            return True
        return idempotent and self is not Outcome.COMPLETED


class RpcError(Exception):
    """A failed call: ``status`` is the server's status code (``None`` for an error found
    on this side), ``message`` a text for humans (never parse it)."""

    #: The status code this class stands for, if any.
    STATUS: Optional[int] = None
    #: The outcome when the error was answered by the server (section 7.1).
    OUTCOME: Outcome = Outcome.UNKNOWN

    def __init__(
        self, status: Optional[int], message: str = "", *, outcome: Optional[Outcome] = None
    ) -> None:
        super().__init__(status, message)
        self.status = status
        self.message = message
        self.outcome = outcome if outcome is not None else self.OUTCOME

    def __str__(self) -> str:
        if self.status is None:
            return self.message
        return f"{p.status_name(self.status)} ({self.status}): {self.message}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status={self.status!r}, message={self.message!r})"


class ApplicationError(RpcError):
    """The method returned its error type (status 1, APPLICATION_ERROR): ``error`` is the
    decoded JSON value of ``E`` in ``-> Result<T, E>``."""

    STATUS = p.STATUS_APPLICATION_ERROR
    OUTCOME = Outcome.COMPLETED

    def __init__(self, error: Any, message: Optional[str] = None) -> None:
        super().__init__(self.STATUS, message if message is not None else repr(error))
        self.error = error

    def __repr__(self) -> str:
        return f"ApplicationError(error={self.error!r})"


class UnknownService(RpcError):
    """Status 2: the server hosts no service of that name."""

    STATUS = p.STATUS_UNKNOWN_SERVICE
    OUTCOME = Outcome.NOT_STARTED


class UnknownMethod(RpcError):
    """Status 3: the service has no method of that name."""

    STATUS = p.STATUS_UNKNOWN_METHOD
    OUTCOME = Outcome.NOT_STARTED


class InvalidArguments(RpcError):
    """Status 4: the arguments did not decode as the method's parameters (also: a
    client-streaming method called with JSON, section 21)."""

    STATUS = p.STATUS_INVALID_ARGUMENTS
    OUTCOME = Outcome.NOT_STARTED


class DeadlineExceeded(RpcError):
    """The call's deadline passed: status 5 from the server, or the client's own timeout
    (``status`` is then ``None``; a CANCEL was sent)."""

    STATUS = p.STATUS_DEADLINE_EXCEEDED
    OUTCOME = Outcome.UNKNOWN


class HandlerPanicked(RpcError):
    """Status 6: the handler (or the server's code around it) panicked."""

    STATUS = p.STATUS_HANDLER_PANICKED
    OUTCOME = Outcome.STARTED


class ShuttingDown(RpcError):
    """The server is shutting down: status 7 (the call did not run), or refused locally
    after a GO_AWAY (``status`` ``None``; not sent), or a call the server had not received
    when its draining connection closed (section 15)."""

    STATUS = p.STATUS_SHUTTING_DOWN
    OUTCOME = Outcome.NOT_STARTED


class ResponseTooLarge(RpcError):
    """Status 8: the answer would exceed the max frame size this client announced."""

    STATUS = p.STATUS_FRAME_TOO_LARGE
    OUTCOME = Outcome.COMPLETED


class ResponseEncodeFailed(RpcError):
    """Status 9: the server failed to encode the return value."""

    STATUS = p.STATUS_ENCODE_FAILED
    OUTCOME = Outcome.COMPLETED


class Internal(RpcError):
    """Status 10: the service ended the call without answering."""

    STATUS = p.STATUS_INTERNAL
    OUTCOME = Outcome.COMPLETED


class Unauthenticated(RpcError):
    """Status 11: credentials missing or invalid."""

    STATUS = p.STATUS_UNAUTHENTICATED
    OUTCOME = Outcome.NOT_STARTED


class PermissionDenied(RpcError):
    """Status 12: the caller may not make this call."""

    STATUS = p.STATUS_PERMISSION_DENIED
    OUTCOME = Outcome.NOT_STARTED


class Overloaded(RpcError):
    """Status 13 (the server shed the call), or a handshake refused with
    TOO_MANY_CONNECTIONS (``status`` ``None``). Safe to retry."""

    STATUS = p.STATUS_OVERLOADED
    OUTCOME = Outcome.NOT_STARTED


class Aborted(RpcError):
    """Status 14: the handler's stream ended with an error."""

    STATUS = p.STATUS_ABORTED
    OUTCOME = Outcome.STARTED


class Interrupted(RpcError):
    """Status 15: the server stopped the handler before it finished (shutdown past its
    grace period)."""

    STATUS = p.STATUS_INTERRUPTED
    OUTCOME = Outcome.STARTED


class ConnectionClosed(RpcError):
    """The connection ended (EOF, a socket error, :meth:`Client.close`, or a GO_AWAY that
    fails calls) before the call's answer arrived. Status ``None``."""

    OUTCOME = Outcome.UNKNOWN

    def __init__(self, message: str = "the connection is closed", **kwargs: Any) -> None:
        super().__init__(None, message, **kwargs)


class GoAway(ConnectionClosed):
    """The server sent GO_AWAY with a code that fails every call (1 PROTOCOL_ERROR,
    2 FRAME_TOO_LARGE, or an unknown code; section 8). ``code`` is the go-away code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"GO_AWAY {p.go_away_name(code)} ({code}): {message}")
        self.code = code
        self.reason = message


class KeepaliveTimeout(ConnectionClosed):
    """The server did not answer a keepalive PING in time; the connection was closed
    (section 20)."""


class ConnectFailed(RpcError):
    """The TCP connection could not be opened, or the handshake did not finish within
    the connect timeout. Status ``None``; the cause is chained."""

    OUTCOME = Outcome.NOT_SENT

    def __init__(self, message: str) -> None:
        super().__init__(None, message)


class ProtocolError(RpcError):
    """The peer broke the protocol (a malformed frame or handshake, or an answer that
    does not fit the call). Status ``None``."""

    OUTCOME = Outcome.UNKNOWN

    def __init__(self, message: str, **kwargs: Any) -> None:
        super().__init__(None, message, **kwargs)


class VersionMismatch(ProtocolError):
    """The server does not speak protocol version 4 (section 2.4): ``server_version`` is
    the version it announced."""

    OUTCOME = Outcome.NOT_SENT

    def __init__(self, server_version: int, message: str) -> None:
        super().__init__(message)
        self.server_version = server_version


class CodecUnsupported(RpcError):
    """The server does not offer JSON payloads in its CODECS setting (section 21)."""

    OUTCOME = Outcome.NOT_SENT

    def __init__(self, message: str) -> None:
        super().__init__(None, message)


class FrameTooLarge(RpcError):
    """Refused locally: the request would exceed the server's max frame size (section 3).
    Nothing was sent and the connection stays usable."""

    OUTCOME = Outcome.NOT_SENT

    def __init__(self, message: str) -> None:
        super().__init__(None, message)


class DecodeError(RpcError):
    """An OK or APPLICATION_ERROR payload (or a stream item) was not valid JSON."""

    OUTCOME = Outcome.COMPLETED

    def __init__(self, message: str) -> None:
        super().__init__(None, message)


_BY_STATUS: Dict[int, Type[RpcError]] = {
    cls.STATUS: cls
    for cls in (
        UnknownService,
        UnknownMethod,
        InvalidArguments,
        DeadlineExceeded,
        HandlerPanicked,
        ShuttingDown,
        ResponseTooLarge,
        ResponseEncodeFailed,
        Internal,
        Unauthenticated,
        PermissionDenied,
        Overloaded,
        Aborted,
        Interrupted,
    )
    if cls.STATUS is not None
}


def error_for_status(status: int, message: str) -> RpcError:
    """The error for a RESPONSE with a status other than OK and APPLICATION_ERROR: the
    class of that status, or a plain :class:`RpcError` for a reserved one (16-255, whose
    outcome is unknown)."""
    cls = _BY_STATUS.get(status)
    if cls is None:
        return RpcError(status, message, outcome=Outcome.UNKNOWN)
    return cls(status, message)
