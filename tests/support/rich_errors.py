"""Reading the google.rpc.Status a failed call carries: ErrorInfo and BadRequest."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status


def rich_error(error: grpc.RpcError) -> tuple[str, list[str]]:
    """The ErrorInfo reason and the sorted BadRequest field names of an error."""
    status = rpc_status.from_call(error)
    assert status is not None, "the error carries no google.rpc.Status"
    reason, fields = "", []
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason = info.reason
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields = sorted(v.field for v in bad.field_violations)
    return reason, fields


def error_of(call: Callable[[], object]) -> tuple[grpc.StatusCode, str, list[str]]:
    """The status code, ErrorInfo reason and BadRequest fields of a call that fails."""
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return (caught.value.code(), *rich_error(caught.value))
