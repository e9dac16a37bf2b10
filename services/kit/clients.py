"""Channels for calling other LearnFlow services from inside a handler.

The client interceptor carries the current call along: the caller's remaining deadline
caps the outgoing call's timeout (a request never outlives the one that caused it), and
the caller's token and request id are forwarded so the next service authorises the
same principal and the logs join up.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any

import grpc

from services.kit.auth import TENANT_METADATA
from services.kit.errors import DeadlineExceeded
from services.kit.interceptors import REQUEST_ID_KEY, maybe_current_call

DEFAULT_TIMEOUT_SECONDS = 5.0


class _ClientCallDetails(
    collections.namedtuple(
        "_ClientCallDetails",
        ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression"),
    ),
    grpc.ClientCallDetails,  # type: ignore[misc]
):
    pass


def propagated_details(details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
    """The call details with the current RPC's deadline, token and request id applied."""
    timeout: float | None = details.timeout
    metadata = list(details.metadata or [])
    call = maybe_current_call()
    if call is not None:
        remaining = call.time_remaining()
        if remaining is not None:
            if remaining <= 0:
                raise DeadlineExceeded(
                    f"deadline of {call.method} passed before calling {details.method}"
                )
            timeout = remaining if timeout is None else min(timeout, remaining)
        keys = {key for key, _ in metadata}
        if call.authorization and "authorization" not in keys:
            metadata.append(("authorization", call.authorization))
        if REQUEST_ID_KEY not in keys:
            metadata.append((REQUEST_ID_KEY, call.request_id))
        principal = call.principal
        # An operator acting in another tenant: the next service acts there too.
        acting_elsewhere = principal is not None and principal.tenant != principal.home_tenant
        if acting_elsewhere and principal is not None and TENANT_METADATA not in keys:
            metadata.append((TENANT_METADATA, principal.tenant))
    if timeout is None:
        timeout = DEFAULT_TIMEOUT_SECONDS
    return _ClientCallDetails(
        details.method,
        timeout,
        metadata,
        details.credentials,
        details.wait_for_ready,
        details.compression,
    )


class PropagatingInterceptor(
    grpc.UnaryUnaryClientInterceptor,  # type: ignore[misc]
    grpc.UnaryStreamClientInterceptor,  # type: ignore[misc]
):
    def intercept_unary_unary(
        self, continuation: Callable[..., Any], details: grpc.ClientCallDetails, request: Any
    ) -> Any:
        return continuation(propagated_details(details), request)

    def intercept_unary_stream(
        self, continuation: Callable[..., Any], details: grpc.ClientCallDetails, request: Any
    ) -> Any:
        return continuation(propagated_details(details), request)


def service_channel(target: str) -> grpc.Channel:
    """An insecure channel inside the mesh (mTLS is the service mesh's job in a cluster)."""
    channel = grpc.insecure_channel(target, options=[("grpc.keepalive_time_ms", 60_000)])
    return grpc.intercept_channel(channel, PropagatingInterceptor())
