"""Exceptions of HMS-FFI: one class per status code (the seed's §8.2), all under :class:`HmsError`."""
from __future__ import annotations

from typing import Dict, Optional, Type

#: gRPC's numbering, as ``hms_status_t``.
STATUS_NAMES: Dict[int, str] = {
    0: "OK", 1: "CANCELLED", 2: "UNKNOWN", 3: "INVALID_ARGUMENT", 4: "DEADLINE_EXCEEDED",
    5: "NOT_FOUND", 6: "ALREADY_EXISTS", 7: "PERMISSION_DENIED", 8: "RESOURCE_EXHAUSTED",
    9: "FAILED_PRECONDITION", 10: "ABORTED", 11: "OUT_OF_RANGE", 12: "UNIMPLEMENTED",
    13: "INTERNAL", 14: "UNAVAILABLE", 15: "DATA_LOSS", 16: "UNAUTHENTICATED",
}


class HmsError(Exception):
    """An error status from the broker, the library or a service.

    ``code`` is the status number, ``message`` what happened, ``source`` the id of the service that
    answered with the error ("" when the library or broker did), ``details`` a dict of strings.
    Raise a subclass (or ``HmsError(code=...)``) from a handler to answer with that status.
    """

    code: int = 2

    def __init__(self, message: str = "", *, code: Optional[int] = None, source: str = "",
                 details: Optional[Dict[str, str]] = None) -> None:
        if code is not None:
            self.code = int(code)
        self.message = message
        self.source = source
        self.details: Dict[str, str] = dict(details or {})
        super().__init__(message)

    @property
    def code_name(self) -> str:
        """The code's name, e.g. ``"NOT_FOUND"``."""
        return STATUS_NAMES.get(self.code, "UNKNOWN")

    def __str__(self) -> str:
        s = f"{self.code_name}: {self.message}"
        if self.source:
            s += f" (from {self.source})"
        if self.details:
            s += " " + ", ".join(f"{k}={v}" for k, v in sorted(self.details.items()))
        return s

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.message!r}, code={self.code}, source={self.source!r}, "
                f"details={self.details!r})")


class CallCancelledError(HmsError):
    """CANCELLED (named so as not to clash with asyncio's and concurrent.futures' CancelledError)."""
    code = 1


class UnknownError(HmsError):
    code = 2


class InvalidArgumentError(HmsError):
    code = 3


class DeadlineExceededError(HmsError):
    code = 4


class NotFoundError(HmsError):
    code = 5


class AlreadyExistsError(HmsError):
    code = 6


class PermissionDeniedError(HmsError):
    code = 7


class ResourceExhaustedError(HmsError):
    code = 8


class FailedPreconditionError(HmsError):
    code = 9


class AbortedError(HmsError):
    code = 10


class OutOfRangeError(HmsError):
    code = 11


class UnimplementedError(HmsError):
    code = 12


class InternalError(HmsError):
    code = 13


class UnavailableError(HmsError):
    code = 14


class DataLossError(HmsError):
    code = 15


class UnauthenticatedError(HmsError):
    code = 16


ERROR_CLASSES: Dict[int, Type[HmsError]] = {
    cls.code: cls for cls in (
        CallCancelledError, UnknownError, InvalidArgumentError, DeadlineExceededError,
        NotFoundError, AlreadyExistsError, PermissionDeniedError, ResourceExhaustedError,
        FailedPreconditionError, AbortedError, OutOfRangeError, UnimplementedError, InternalError,
        UnavailableError, DataLossError, UnauthenticatedError)
}


def error_for(code: int, message: str, source: str = "",
              details: Optional[Dict[str, str]] = None) -> HmsError:
    """The exception of the class for ``code`` (``HmsError`` with that code if none matches)."""
    cls = ERROR_CLASSES.get(code)
    if cls is None:
        return HmsError(message, code=code, source=source, details=details)
    return cls(message, source=source, details=details)
