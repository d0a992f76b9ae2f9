"""The Kubernetes API's answers as exceptions (re-exported by clusterd.adapters.kube)."""

from __future__ import annotations


class ApiError(Exception):
    """The API server answered a call with an error status (``status`` 0: no answer at all)."""

    def __init__(self, status: int, reason: str, message: str = "") -> None:
        super().__init__(f"{status} {reason}: {message}" if message else f"{status} {reason}")
        self.status = status
        self.reason = reason
        self.message = message


class Conflict(ApiError):
    """409: the object changed since it was read; plan again from the fresh copy."""


class Gone(ApiError):
    """404: the object (or its kind) does not exist."""


class Unreachable(ApiError):
    """No answer: the API server is down, unreachable, or the call timed out."""
