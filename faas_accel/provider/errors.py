"""Every error the provider raises, in one tree; each carries the HTTP status it is rendered with.

    ProviderError                 500
    ├── InvalidRequest            400  bad JSON, a bad name, namespace, quantity or query
    ├── FunctionNotFound          404  no such function
    ├── FunctionExists            409  POST of a function that is already deployed
    ├── SecretNotFound            404  no such secret
    ├── SecretExists              409  POST of a secret that already exists
    ├── QueueFull                 429  the async queue holds as many calls as it may
    ├── PayloadTooLarge           413  an async call's body is over the limit
    ├── NoEndpoints               503  the function has no running instance to proxy to
    └── RuntimeFailed             500  the container runtime refused or failed (its reason)
        ├── PullFailed            500  the image could not be pulled
        └── NotReady              500  the container exited or its health check never passed

Bodies are plain text, as faasd writes them with `http.Error`. Third-party exceptions
(subprocess, the docker SDK) are mapped into this tree in the runtime modules.
"""

from __future__ import annotations


class ProviderError(Exception):
    """Base of every error the provider raises."""

    status = 500


class InvalidRequest(ProviderError):
    """The request cannot be understood: bad JSON, name, namespace, quantity or query."""

    status = 400


class FunctionNotFound(ProviderError):
    """The function is not deployed."""

    status = 404


class FunctionExists(ProviderError):
    """A create (POST) named a function that is already deployed; use PUT to update it."""

    status = 409


class SecretNotFound(ProviderError):
    """The secret does not exist."""

    status = 404


class SecretExists(ProviderError):
    """A create (POST) named a secret that already exists; use PUT to update it."""

    status = 409


class QueueFull(ProviderError):
    """The async queue is full; the caller may retry later."""

    status = 429


class PayloadTooLarge(ProviderError):
    """A request body is larger than the provider keeps in memory."""

    status = 413


class NoEndpoints(ProviderError):
    """The function has no running instance (unknown, or scaled to zero)."""

    status = 503


class RuntimeFailed(ProviderError):
    """The container runtime refused or failed; the message quotes its reason."""


class PullFailed(RuntimeFailed):
    """The runtime could not pull the image; the message quotes the runtime's reason."""


class NotReady(RuntimeFailed):
    """The container exited, or its health check did not pass in time."""
