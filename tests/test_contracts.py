"""The contracts: gen/ is fresh, buf lint is clean, and the API keeps to the AIP rules
this project follows (checked on the descriptor set Envoy also reads)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from google.api import annotations_pb2, field_behavior_pb2, http_pb2, resource_pb2
from google.protobuf import descriptor_pb2

from services.kit.catalogue import SERVICES

REPO = Path(__file__).resolve().parents[1]
DESCRIPTOR_SET = REPO / "gen" / "learnflow.pb"


def _descriptor_set() -> descriptor_pb2.FileDescriptorSet:
    fds = descriptor_pb2.FileDescriptorSet()
    fds.ParseFromString(DESCRIPTOR_SET.read_bytes())
    return fds


FILES = {f.name: f for f in _descriptor_set().file}
OUR_FILES = [f for name, f in FILES.items() if name.startswith("learnflow/")]
MESSAGES = {f"{f.package}.{m.name}": m for f in FILES.values() for m in f.message_type}
METHODS = [(f"{f.package}.{s.name}", m) for f in OUR_FILES for s in f.service for m in s.method]


def _http(method: descriptor_pb2.MethodDescriptorProto) -> http_pb2.HttpRule:
    return method.options.Extensions[annotations_pb2.http]


def test_gen_is_fresh() -> None:
    result = subprocess.run(
        [sys.executable, "tools/gen.py", "--check"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_buf_lint_is_clean() -> None:
    buf = Path(sys.executable).parent / "buf"
    result = subprocess.run(
        [str(buf), "lint", f"{DESCRIPTOR_SET}#format=binpb", "--config", "buf.yaml"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_descriptor_set_lets_envoy_render_error_details() -> None:
    assert {"google/rpc/status.proto", "google/rpc/error_details.proto"} <= set(FILES)


def test_every_catalogue_service_is_defined() -> None:
    defined = {name for name, _ in METHODS}
    for spec in SERVICES:
        for full_name in spec.full_names:
            if full_name.startswith("learnflow."):
                assert full_name in defined, f"{spec.name}: {full_name} missing from proto/"


@pytest.mark.parametrize("service,method", METHODS, ids=[f"{s}/{m.name}" for s, m in METHODS])
def test_browser_rpcs_follow_aip(
    service: str, method: descriptor_pb2.MethodDescriptorProto
) -> None:
    rule = _http(method)
    verb = rule.WhichOneof("pattern")
    assert verb is not None, "every RPC here is used by browsers: it needs google.api.http"
    path = getattr(rule, verb)
    assert path.startswith("/v1/")
    request = MESSAGES[method.input_type.lstrip(".")]
    fields = {f.name for f in request.field}
    if method.name.startswith(("Get", "List")) or verb == "get":
        assert verb == "get", "Get/List are HTTP GET (AIP-131/132)"
        assert not rule.body
    if method.name.startswith("List"):
        assert {"page_size", "page_token"} <= fields, "AIP-158 pagination from the start"
        response = MESSAGES[method.output_type.lstrip(".")]
        assert "next_page_token" in {f.name for f in response.field}
    if method.name.startswith("Create"):
        resource_field = next(f for f in request.field if f.type == f.TYPE_MESSAGE).name
        assert rule.body == resource_field, "Create uses body: <resource> (AIP-133)"
    if ":" in path.rsplit("/", 1)[-1] and verb == "post":
        assert rule.body == "*", "custom methods use body: * (AIP-136)"


def test_resources_have_identifier_names() -> None:
    resources = [
        (f"{f.package}.{m.name}", m)
        for f in OUR_FILES
        for m in f.message_type
        if m.options.HasExtension(resource_pb2.resource)
    ]
    assert len(resources) >= 10
    for full_name, message in resources:
        name = next((f for f in message.field if f.name == "name"), None)
        assert name is not None and name.number == 1, f"{full_name}: `name` must be field 1"
        behaviors = list(name.options.Extensions[field_behavior_pb2.field_behavior])
        assert field_behavior_pb2.IDENTIFIER in behaviors, f"{full_name}.name is IDENTIFIER"


def test_request_fields_declare_behaviour() -> None:
    missing = []
    for _, method in METHODS:
        request = MESSAGES[method.input_type.lstrip(".")]
        for field in request.field:
            if not field.options.Extensions[
                field_behavior_pb2.field_behavior
            ] and field.name not in (
                "cohort",
                "all_students",  # the oneof scope of RecalculateMasteryRequest
            ):
                missing.append(f"{request.name}.{field.name}")
    assert not missing, f"request fields without google.api.field_behavior: {missing}"
