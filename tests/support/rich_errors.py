"""Reading the google.rpc.Status a failed call carries: ErrorInfo and BadRequest."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status


def rich_error(error: grpc.RpcError) -> tuple[str, list[str]]:
    """The ErrorInfo reason and the sorted BadRequest field names of an error."""
    reason, fields, _ = _details(error)
    return reason, fields


def refusal(error: grpc.RpcError) -> tuple[str, float, str]:
    """A refusal's ErrorInfo reason, RetryInfo delay in seconds (-1 without one) and
    `retry-after` metadata ("" without it)."""
    reason, _, delay = _details(error)
    trailing = dict(error.trailing_metadata() or ())
    return reason, delay, str(trailing.get("retry-after", ""))


def _details(error: grpc.RpcError) -> tuple[str, list[str], float]:
    status = rpc_status.from_call(error)
    assert status is not None, "the error carries no google.rpc.Status"
    reason, fields, delay = "", [], -1.0
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason = info.reason
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields = sorted(v.field for v in bad.field_violations)
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            delay = retry.retry_delay.ToNanoseconds() / 1e9
    return reason, fields, delay


def error_of(call: Callable[[], object]) -> tuple[grpc.StatusCode, str, list[str]]:
    """The status code, ErrorInfo reason and BadRequest fields of a call that fails."""
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return (caught.value.code(), *rich_error(caught.value))
