"""Contract-driven bad inputs for every RPC, and a runner that sends them.

Everything comes from the descriptor set (`gen/learnflow.pb`) and the service catalogue,
never from a hand-kept list: which gRPC services each server registers, their methods,
`google.api.http` bindings, request fields with their types, enums, `field_behavior`
and resource-name patterns (from `google.api.resource` / `resource_definition`
annotations, the http path templates, and field comments such as
`// students/{student}`). A new RPC, field or binding is covered once `make gen` has
put it into the descriptor set.

For each method a plausible *base* request is built for a caller whose identity matches
the names in it (a student for `students/...`, a teacher of the cohort for
`cohorts/...`), so inputs get past authentication and authorisation and reach
validation. Then, one change at a time: wrong JSON types, missing required fields,
oversized strings, NUL and odd unicode, lone surrogates, malformed resource names,
forged page tokens, bad page sizes, out-of-range numbers, bad enums, bad well-known
types, raw bodies and URLs, undecodable protobuf bytes, no or bad tokens.

A change is abstract ("field X = V") and each transport encodes it: JSON over HTTP
through Envoy (into the path, the query or the body, as the binding says) and protobuf
over gRPC (to the service port, and through Envoy). A value one transport cannot carry
(a JSON string where protobuf wants an int) is simply not sent on it.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import http.client
import json
import logging
import random
import re
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from pathlib import Path
from typing import Any, Final

import grpc
from google.api import annotations_pb2, field_behavior_pb2, http_pb2, resource_pb2
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import Message

from services.kit.catalogue import SERVICES, ServiceSpec
from services.kit.config import REPO_ROOT

DESCRIPTOR_SET: Final = REPO_ROOT / "gen" / "learnflow.pb"

KiB: Final = 1024
MiB: Final = 1024 * KiB
OVER_LIMIT_CHARS: Final = 33 * KiB
"""2-byte characters: over a 64 KiB byte limit while under it in characters."""
BIG_CHARS: Final = MiB + 17
"""Above 1 MiB, below the 4 MiB gRPC message limit."""
HUGE_BYTES: Final = 5 * MiB
"""Above the gRPC message limit and any sane gateway body limit."""
MAX_URL_SENT: Final = 128 * KiB
"""Longer URLs are not sent: far past every limit, they add nothing to the inputs made to
test URL limits, and cost seconds each."""
LIST_ITEMS: Final = 10_000
DEEP: Final = 20_000
"""Nesting depth of the deeply nested JSON values (far beyond any parser's limit)."""

# Codes that mean "the service broke", not "your input is bad".
CRASH_CODES: Final = frozenset(
    {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DATA_LOSS}
)
CRASH_RPC_NUMBERS: Final = frozenset({2, 13, 15})  # google.rpc.Code in JSON error bodies
UNIMPLEMENTED_CODE: Final = 12
DEADLINE_EXCEEDED_CODE: Final = 4
RPC_CODE_NAMES: Final = {code.value[0]: code.name for code in grpc.StatusCode}

WELL_KNOWN_JSON: Final = frozenset(
    {
        "google.protobuf.Duration",
        "google.protobuf.Timestamp",
        "google.protobuf.FieldMask",
        "google.protobuf.Any",
        "google.protobuf.Struct",
        "google.protobuf.Value",
        "google.protobuf.ListValue",
        "google.protobuf.Empty",
        "google.protobuf.StringValue",
        "google.protobuf.BytesValue",
        "google.protobuf.Int32Value",
        "google.protobuf.Int64Value",
        "google.protobuf.UInt32Value",
        "google.protobuf.UInt64Value",
        "google.protobuf.BoolValue",
        "google.protobuf.DoubleValue",
        "google.protobuf.FloatValue",
    }
)
"""Types whose JSON form is not an object of their fields: never recursed into."""

_T = descriptor_pb2.FieldDescriptorProto
_KINDS: Final = {
    _T.TYPE_DOUBLE: "double",
    _T.TYPE_FLOAT: "double",
    _T.TYPE_INT64: "int64",
    _T.TYPE_SINT64: "int64",
    _T.TYPE_SFIXED64: "int64",
    _T.TYPE_UINT64: "uint64",
    _T.TYPE_FIXED64: "uint64",
    _T.TYPE_INT32: "int32",
    _T.TYPE_SINT32: "int32",
    _T.TYPE_SFIXED32: "int32",
    _T.TYPE_UINT32: "uint32",
    _T.TYPE_FIXED32: "uint32",
    _T.TYPE_BOOL: "bool",
    _T.TYPE_STRING: "string",
    _T.TYPE_BYTES: "bytes",
    _T.TYPE_ENUM: "enum",
    _T.TYPE_MESSAGE: "message",
    _T.TYPE_GROUP: "message",
}
_WIRE_TYPE: Final = {
    "double": 1,
    "int64": 0,
    "uint64": 0,
    "int32": 0,
    "uint32": 0,
    "bool": 0,
    "enum": 0,
    "string": 2,
    "bytes": 2,
    "message": 2,
}
_NAME_IN_COMMENT = re.compile(
    r"\b([a-z][A-Za-z]*/\{[a-z_]+\}(?:/[a-z][A-Za-z]*(?:/\{[a-z_]+\})?)*)"
)
_TEMPLATE_VAR = re.compile(r"\{([A-Za-z0-9_.]+)(?:=([^}]*))?\}")
_REQUEST_ID = re.compile(r"request id ([0-9A-Za-z_.:-]+)")


# --------------------------------------------------------------------------------------
# The contract
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FieldSpec:
    name: str
    json_name: str
    number: int
    kind: str
    """double, int32, int64, uint32, uint64, bool, string, bytes, enum or message."""
    repeated: bool
    type_name: str
    """Full name of the message or enum type; empty for scalars."""
    required: bool
    output_only: bool
    identifier: bool
    oneof: str | None
    pattern: str | None
    """Resource-name pattern, e.g. `students/{student}`."""
    is_map: bool


@dataclass(frozen=True, slots=True)
class MessageSpec:
    name: str
    fields: tuple[FieldSpec, ...]

    def field(self, name: str) -> FieldSpec | None:
        for candidate in self.fields:
            if candidate.name == name:
                return candidate
        return None


@dataclass(frozen=True, slots=True)
class HttpBinding:
    verb: str
    template: str
    body: str

    def variables(self) -> list[tuple[tuple[str, ...], str]]:
        """(field path, resource pattern) of every path variable."""
        found = []
        for match in _TEMPLATE_VAR.finditer(self.template):
            pattern = match.group(2) or "*"
            found.append((tuple(match.group(1).split(".")), _template_pattern(pattern)))
        return found


@dataclass(frozen=True, slots=True)
class MethodSpec:
    server: str
    """The catalogue service (server) that registers it, e.g. `mastery`."""
    service: str
    """Full gRPC service name, e.g. `learnflow.mastery.v1.MasteryService`."""
    name: str
    input_type: str
    output_type: str
    client_streaming: bool
    server_streaming: bool
    bindings: tuple[HttpBinding, ...]

    @property
    def path(self) -> str:
        return f"/{self.service}/{self.name}"

    @property
    def label(self) -> str:
        return f"{self.service.rsplit('.', 1)[-1]}/{self.name}"


def _template_pattern(pattern: str) -> str:
    """`students/*/context` -> `students/{id}/context`."""
    return "/".join("{id}" if seg in ("*", "**") else seg for seg in pattern.split("/"))


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


class Contract:
    """Services, methods, bindings, messages and enums of the served contract."""

    def __init__(
        self, descriptor_set: Path = DESCRIPTOR_SET, catalogue: Sequence[ServiceSpec] = SERVICES
    ) -> None:
        files = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set.read_bytes())
        self._pool = descriptor_pool.DescriptorPool()
        for proto_file in files.file:
            self._pool.Add(proto_file)
        self._classes: dict[str, type[Message]] = {}
        self.enums: dict[str, dict[str, int]] = {}
        self.messages: dict[str, MessageSpec] = {}
        resources: dict[str, str] = {}
        message_protos: list[tuple[str, descriptor_pb2.DescriptorProto, tuple[int, ...], str]] = []
        comments: dict[tuple[str, tuple[int, ...]], str] = {}
        for proto_file in files.file:
            for definition in proto_file.options.Extensions[resource_pb2.resource_definition]:
                if definition.pattern:
                    resources[definition.type] = definition.pattern[0]
            for location in proto_file.source_code_info.location:
                comments[(proto_file.name, tuple(location.path))] = location.leading_comments
            prefix = proto_file.package
            for index, message in enumerate(proto_file.message_type):
                self._collect(
                    proto_file.name, prefix, message, (4, index), message_protos, resources
                )
            for enum in proto_file.enum_type:
                self._add_enum(f"{prefix}.{enum.name}", enum)
        for full, message, path, file_name in message_protos:
            own = message.options.Extensions[resource_pb2.resource]
            own_pattern = own.pattern[0] if own.pattern else None
            fields = []
            for index, proto_field in enumerate(message.field):
                comment = comments.get((file_name, (*path, 2, index)), "")
                fields.append(self._field(message, proto_field, comment, own_pattern, resources))
            self.messages[full] = MessageSpec(full, tuple(fields))
        self.methods = self._methods(files, catalogue)

    def _collect(
        self,
        file_name: str,
        prefix: str,
        message: descriptor_pb2.DescriptorProto,
        path: tuple[int, ...],
        out: list[tuple[str, descriptor_pb2.DescriptorProto, tuple[int, ...], str]],
        resources: dict[str, str],
    ) -> None:
        full = f"{prefix}.{message.name}"
        out.append((full, message, path, file_name))
        own = message.options.Extensions[resource_pb2.resource]
        if own.type and own.pattern:
            resources[own.type] = own.pattern[0]
        for index, nested in enumerate(message.nested_type):
            self._collect(file_name, full, nested, (*path, 3, index), out, resources)
        for enum in message.enum_type:
            self._add_enum(f"{full}.{enum.name}", enum)

    def _add_enum(self, full: str, enum: descriptor_pb2.EnumDescriptorProto) -> None:
        self.enums[full] = {value.name: value.number for value in enum.value}

    def _field(
        self,
        message: descriptor_pb2.DescriptorProto,
        proto_field: descriptor_pb2.FieldDescriptorProto,
        comment: str,
        own_pattern: str | None,
        resources: Mapping[str, str],
    ) -> FieldSpec:
        behaviours = set(proto_field.options.Extensions[field_behavior_pb2.field_behavior])
        reference = proto_field.options.Extensions[resource_pb2.resource_reference]
        pattern = resources.get(reference.type) if reference.type else None
        if pattern is None and field_behavior_pb2.IDENTIFIER in behaviours:
            pattern = own_pattern
        if pattern is None and proto_field.type == _T.TYPE_STRING:
            found = _NAME_IN_COMMENT.search(comment)
            pattern = found.group(1) if found else None
        type_name = proto_field.type_name.lstrip(".")
        is_map = False
        if proto_field.type == _T.TYPE_MESSAGE:
            for nested in message.nested_type:
                if type_name.endswith(f".{nested.name}") and nested.options.map_entry:
                    is_map = True
        return FieldSpec(
            name=proto_field.name,
            json_name=proto_field.json_name or _camel(proto_field.name),
            number=proto_field.number,
            kind=_KINDS[proto_field.type],
            repeated=proto_field.label == _T.LABEL_REPEATED,
            type_name=type_name,
            required=field_behavior_pb2.REQUIRED in behaviours,
            output_only=field_behavior_pb2.OUTPUT_ONLY in behaviours,
            identifier=field_behavior_pb2.IDENTIFIER in behaviours,
            oneof=(
                message.oneof_decl[proto_field.oneof_index].name
                if proto_field.HasField("oneof_index") and not proto_field.proto3_optional
                else None
            ),
            pattern=pattern,
            is_map=is_map,
        )

    @staticmethod
    def _methods(
        files: descriptor_pb2.FileDescriptorSet, catalogue: Sequence[ServiceSpec]
    ) -> tuple[MethodSpec, ...]:
        server_of = {full: spec.name for spec in catalogue for full in spec.full_names}
        methods = []
        for proto_file in files.file:
            for service in proto_file.service:
                full = f"{proto_file.package}.{service.name}"
                if full not in server_of:
                    continue
                for method in service.method:
                    rule = method.options.Extensions[annotations_pb2.http]
                    bindings = [_binding(rule)]
                    bindings.extend(_binding(extra) for extra in rule.additional_bindings)
                    methods.append(
                        MethodSpec(
                            server=server_of[full],
                            service=full,
                            name=method.name,
                            input_type=method.input_type.lstrip("."),
                            output_type=method.output_type.lstrip("."),
                            client_streaming=method.client_streaming,
                            server_streaming=method.server_streaming,
                            bindings=tuple(b for b in bindings if b is not None),
                        )
                    )
        return tuple(methods)

    def message_class(self, full: str) -> type[Message]:
        if full not in self._classes:
            descriptor = self._pool.FindMessageTypeByName(full)
            self._classes[full] = message_factory.GetMessageClass(descriptor)
        return self._classes[full]

    def services(self) -> set[str]:
        return {method.service for method in self.methods}


def _binding(rule: http_pb2.HttpRule) -> HttpBinding | None:
    verb = rule.WhichOneof("pattern")
    if verb is None:
        return None
    if verb == "custom":
        return HttpBinding(rule.custom.kind.upper(), rule.custom.path, rule.body)
    return HttpBinding(verb.upper(), str(getattr(rule, verb)), rule.body)


# --------------------------------------------------------------------------------------
# Values
# --------------------------------------------------------------------------------------


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


MISSING: Final = _Missing()
"""The field is left out."""


@dataclass(frozen=True, slots=True)
class RawJSON:
    """JSON text put verbatim where a value goes (numbers no float can hold, nesting)."""

    text: str


@dataclass(frozen=True, slots=True)
class Dual:
    """A value written differently in JSON and in protobuf (well-known types)."""

    json: Any
    proto: Any


class NotEncodableError(Exception):
    """The transport cannot carry this value."""


@dataclass(frozen=True, slots=True)
class Identity:
    """Who sends the inputs: a student and a teacher of the student's cohort."""

    student: str
    cohort: str
    student_auth: str
    teacher_auth: str
    other_student_auth: str
    """A valid token of a different student (authorisation must say no, not crash)."""

    def ids(self) -> dict[str, str]:
        return {"students": self.student, "cohorts": self.cohort}


def fill(pattern: str, ids: Mapping[str, str]) -> str:
    """A name matching `pattern`: the identity's ids for students and cohorts, a
    syntactically valid id of a resource that does not exist elsewhere."""
    out: list[str] = []
    previous = ""
    for segment in pattern.split("/"):
        if segment.startswith("{") or segment in ("*", "**"):
            out.append(ids.get(previous, "fz0"))
        else:
            out.append(segment)
        previous = segment
    return "/".join(out)


def _today() -> dict[str, int]:
    today = datetime.now(UTC).date()
    return {"year": today.year, "month": today.month, "day": today.day}


def _wkt_base(type_name: str) -> Any:
    if type_name == "google.protobuf.Duration":
        return Dual("1s", {"seconds": 1})
    if type_name == "google.protobuf.Timestamp":
        return Dual("2024-01-01T00:00:00Z", {"seconds": 1_704_067_200})
    if type_name == "google.protobuf.FieldMask":
        return Dual("", {})
    if type_name == "google.type.Date":
        return _today()
    return MISSING


def short(value: Any, limit: int = 48) -> str:
    """A readable label for a value (big ones by size)."""
    if isinstance(value, Dual):
        value = value.json
    if isinstance(value, RawJSON):
        text = value.text
    elif isinstance(value, str):
        text = json.dumps(value)
    elif value is MISSING:
        return "<missing>"
    else:
        try:
            text = json.dumps(value)
        except (TypeError, ValueError):
            text = repr(value)
    if len(text) > limit:
        return f"{text[: limit - 16]}...<{len(text):,} chars>"
    return text


# --------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Change:
    """One bad input: set `path` in the base request to `value` (or drop it)."""

    kind: str
    label: str
    path: tuple[str | int, ...]
    value: Any


HttpRequest = tuple[str, bytes | None]
"""Target (path and query, percent-encoded as sent) and body."""


@dataclass(frozen=True, slots=True)
class HttpCase:
    """One JSON request through the gateway; built when sent (bodies can be megabytes)."""

    method: MethodSpec
    kind: str
    label: str
    verb: str
    build: Callable[[], HttpRequest]
    authorization: str | None
    content_type: str | None = "application/json"
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class GrpcCase:
    """One protobuf request; `build` raises NotEncodableError when protobuf cannot carry it."""

    method: MethodSpec
    kind: str
    label: str
    build: Callable[[], bytes]
    authorization: str | None
    metadata: tuple[tuple[str, str], ...] = ()
    deadline: float | None = None
    """A gRPC deadline (seconds) instead of the runner's usual one."""


@dataclass
class Plan:
    http: list[HttpCase] = field(default_factory=list)
    grpc: list[GrpcCase] = field(default_factory=list)
    methods: list[MethodSpec] = field(default_factory=list)


class Generator:
    """Builds every input for every method of the contract."""

    def __init__(
        self,
        contract: Contract,
        identity: Identity,
        page_tokens: Sequence[str] = (),
        extra_auth: Sequence[tuple[str, str]] = (),
    ) -> None:
        self.contract = contract
        self.identity = identity
        self.page_tokens = list(page_tokens)
        self.extra_auth = list(extra_auth)

    # -- base requests ------------------------------------------------------------------

    def path_patterns(self, method: MethodSpec) -> dict[tuple[str, ...], str]:
        patterns: dict[tuple[str, ...], str] = {}
        for binding in method.bindings[:1]:
            for path, pattern in binding.variables():
                patterns[path] = pattern
        return patterns

    def base(self, method: MethodSpec) -> dict[str, Any]:
        """A plausible request: required fields and every named resource set."""
        ids = self.identity.ids()
        request = self._base_message(method.input_type, ids, depth=0)
        for path, pattern in self.path_patterns(method).items():
            _set(request, path, fill(pattern, ids))
        return request

    def _base_message(self, type_name: str, ids: Mapping[str, str], depth: int) -> dict[str, Any]:
        spec = self.contract.messages[type_name]
        request: dict[str, Any] = {}
        for item in spec.fields:
            value = self._base_field(item, ids, depth)
            if value is not MISSING:
                request[item.name] = value
        return request

    def _base_field(self, item: FieldSpec, ids: Mapping[str, str], depth: int) -> Any:
        if item.output_only or item.identifier or item.oneof is not None:
            return MISSING  # an identifier the method needs is a path variable, set later
        if item.pattern and (item.required or item.kind == "string"):
            if not item.required and not item.name.endswith(("parent", "name")):
                return MISSING  # optional references (filters) stay unset in the base
            value = fill(item.pattern, ids)
            return [value] if item.repeated else value
        if not item.required:
            return MISSING
        if item.repeated:
            return []
        if item.kind == "message":
            wkt = _wkt_base(item.type_name)
            if wkt is not MISSING or item.type_name in WELL_KNOWN_JSON:
                return wkt
            if depth >= 3:
                return {}
            return self._base_message(item.type_name, ids, depth + 1)
        return {
            "string": "x = 1",
            "bytes": "eA==",
            "bool": True,
            "double": 1.0,
            "enum": self._first_enum_value(item),
        }.get(item.kind, 1)

    def _first_enum_value(self, item: FieldSpec) -> int:
        numbers = sorted(n for n in self.contract.enums.get(item.type_name, {}).values() if n)
        return numbers[0] if numbers else 0

    def authorization(self, method: MethodSpec) -> str:
        """The caller that may act on the names in the base request: the resource in the
        path decides (a student's own data, or a cohort their teacher sees)."""
        patterns = list(self.path_patterns(method).values()) or self._patterns(method.input_type)
        for pattern in patterns:
            if pattern.startswith("students/"):
                return self.identity.student_auth
            if pattern.startswith("cohorts/"):
                return self.identity.teacher_auth
        return self.identity.student_auth

    def _patterns(self, type_name: str, depth: int = 0) -> list[str]:
        found = []
        for item in self.contract.messages[type_name].fields:
            if item.pattern and (item.required or item.name in ("name", "parent")):
                found.append(item.pattern)
            if (
                item.kind == "message"
                and item.required
                and item.type_name in self.contract.messages
                and item.type_name not in WELL_KNOWN_JSON
                and depth < 2
            ):
                found.extend(self._patterns(item.type_name, depth + 1))
        return found

    # -- changes --------------------------------------------------------------------------

    def changes(self, method: MethodSpec, base: Mapping[str, Any]) -> Iterator[Change]:
        spec = self.contract.messages[method.input_type]
        yield Change("base", "the base request", (), MISSING)
        yield Change("missing-required", "empty request", ("*",), MISSING)
        yield from self._walk(spec, (), base, depth=0)
        yield from self._once_per_method(spec)

    def _walk(
        self,
        spec: MessageSpec,
        prefix: tuple[str | int, ...],
        base: Mapping[str, Any],
        depth: int,
    ) -> Iterator[Change]:
        for item in spec.fields:
            path = (*prefix, item.name)
            current = _get(base, path)
            yield from self._field_changes(item, path, current)
            if (
                item.kind == "message"
                and not item.output_only
                and not item.is_map
                and item.type_name not in WELL_KNOWN_JSON
                and item.type_name in self.contract.messages
                and depth < 2
            ):
                nested = self.contract.messages[item.type_name]
                if item.repeated:
                    element = (*path, 0)
                    yield from self._walk(nested, element, base, depth + 1)
                else:
                    yield from self._walk(nested, path, base, depth + 1)
        oneofs: dict[str, list[FieldSpec]] = {}
        for item in spec.fields:
            if item.oneof is not None:
                oneofs.setdefault(item.oneof, []).append(item)
        for name, members in oneofs.items():
            if len(members) > 1:
                values = {m.name: self._plausible(m) for m in members}
                for member_name, value in values.items():
                    yield Change(
                        "oneof", f"{name}: {member_name} set", (*prefix, member_name), value
                    )
                yield Change("oneof", f"{name}: every member set", (*prefix, "**"), values)

    def _plausible(self, item: FieldSpec) -> Any:
        if item.pattern:
            return fill(item.pattern, self.identity.ids())
        return {"string": "x", "bool": True, "double": 1.0, "message": {}}.get(item.kind, 1)

    def _field_changes(
        self, item: FieldSpec, path: tuple[str | int, ...], current: Any
    ) -> Iterator[Change]:
        name = ".".join(str(p) for p in path)
        if item.output_only:
            # Ignored by servers; one value of the right type, one of a wrong type.
            yield Change("output-only", f"{name} set", path, self._extreme(item))
            yield Change("wrong-type", f"{name}={{}}", path, {"zz": 1})
            return
        if current is not MISSING:
            yield Change(
                "missing-required" if item.required else "missing",
                f"{name} left out",
                path,
                MISSING,
            )
        if item.repeated and not item.is_map:
            yield from self._repeated_changes(item, path, current)
            return
        if item.is_map:
            yield Change("wrong-type", f"{name}=[]", path, RawJSON("[]"))
            yield Change("wrong-type", f'{name}="x"', path, "x")
            return
        for kind, label, value in self.values(item, current):
            yield Change(kind, f"{name}={label}", path, value)

    def _repeated_changes(
        self, item: FieldSpec, path: tuple[str | int, ...], current: Any
    ) -> Iterator[Change]:
        name = ".".join(str(p) for p in path)
        element = current[0] if isinstance(current, list) and current else MISSING
        yield Change("wrong-type", f"{name}=<scalar instead of list>", path, self._plausible(item))
        yield Change("wrong-type", f"{name}=[null]", path, [None])
        yield Change("wrong-type", f"{name}=[[]]", path, [[]])
        many = [element if element is not MISSING else self._plausible(item)] * LIST_ITEMS
        yield Change("oversized", f"{name}=<{LIST_ITEMS:,} items>", path, many)
        if item.kind == "message":
            return  # the element's fields are walked like a message's
        for kind, label, value in self.values(item, element):
            if value is MISSING or (kind == "wrong-type" and isinstance(value, list)):
                continue
            yield Change(kind, f"{name}=[{label}]", path, [value])

    def _extreme(self, item: FieldSpec) -> Any:
        if item.kind == "message":
            return {}
        return {
            "string": "x\x00" + "🐍" * 8,
            "bytes": "AAAA",
            "bool": True,
            "double": -1e308,
            "enum": 2**31 - 1,
            "int32": -(2**31),
            "uint32": 2**32 - 1,
            "int64": str(-(2**63)),
            "uint64": str(2**64 - 1),
        }[item.kind]

    # -- values per type ------------------------------------------------------------------

    def values(self, item: FieldSpec, current: Any) -> Iterator[tuple[str, str, Any]]:
        """(kind, label, value) of every bad value for one (non-repeated) field."""
        kind = item.kind
        if kind == "string":
            if item.name == "page_token":
                yield from self._page_tokens()
            if item.pattern:
                valid = (
                    current
                    if isinstance(current, str) and current
                    else fill(item.pattern, self.identity.ids())
                )
                yield from _name_values(valid)
            elif item.name != "page_token":
                yield from _TEXT_VALUES
            yield from _string_values(current if isinstance(current, str) else "")
        elif kind in ("int32", "int64", "uint32", "uint64"):
            yield from _int_values(kind, "page-size" if item.name == "page_size" else "int-range")
        elif kind == "enum":
            yield from self._enum_values(item)
        elif kind == "bool":
            bad_bools: tuple[Any, ...] = ("true", 2, "yes", [], {})
            for value in bad_bools:
                yield "wrong-type", short(value), value
        elif kind == "double":
            yield from _double_values()
        elif kind == "bytes":
            yield "wrong-type", "not base64", "!!not base64!!"
            yield "oversized", "<1 MiB of base64>", "QUFB" * (MiB // 3)
            yield "wrong-type", "123", 123
        elif kind == "message":
            yield from _message_values(item.type_name)

    def _enum_values(self, item: FieldSpec) -> Iterator[tuple[str, str, Any]]:
        values = self.contract.enums.get(item.type_name, {})
        top = max(values.values(), default=0)
        for number in (top + 1, 99, -1, 2**31 - 1, -(2**31)):
            yield "bad-enum", str(number), number
        named = sorted((n for n, v in values.items() if v), key=lambda n: values[n])
        yield "bad-enum", '"NOPE"', "NOPE"
        if named:
            yield "bad-enum", f'"{named[0].lower()}"', named[0].lower()
        others: tuple[Any, ...] = ("", "99", 2**31, 1.5, True, [], {})
        for value in others:
            plain = isinstance(value, str | int) and not isinstance(value, bool)
            yield "bad-enum" if plain else "wrong-type", short(value), value

    def _page_tokens(self) -> Iterator[tuple[str, str, Any]]:
        for value in ("!!!", "not-a-token", "====", "é", "\x00", "A" * 100_000):
            yield "page-token", short(value), value
        templates = [t for t in (_decode_token(token) for token in self.page_tokens) if t]
        if not templates:
            templates = [{"o": 1}]
        numbers = [
            "1e400",
            str(2**63),
            str(2**64),
            "-1",
            "1.5",
            "NaN",
            "Infinity",
            "1" * 5000,
            '"1"',
            "null",
            "[]",
        ]
        seen: set[str] = set()
        for template in templates[:1]:
            numeric = [key for key, value in template.items() if isinstance(value, int)] or ["o"]
            for key in numeric:
                for number in numbers:
                    text = _with_raw(template, key, number)
                    if text in seen:
                        continue
                    seen.add(text)
                    yield "page-token", f"forged {key}={number[:24]}", _b64(text)
        for text in (
            "[" * DEEP + "]" * DEEP,
            '{"o":' * 2000 + "1" + "}" * 2000,
            "null",
            "[]",
            '"x"',
            "{}",
        ):
            yield "page-token", f"b64 of {short(text, 24)}", _b64(text)
        yield "page-token", "b64 of invalid utf-8", _b64_bytes(b"\xff\xfe{\x00")

    def _once_per_method(self, spec: MessageSpec) -> Iterator[Change]:
        strings = _string_paths(spec, self.contract)
        if strings:
            path = strings[-1]
            label = f"{'.'.join(path)}=<{HUGE_BYTES:,} chars>"
            yield Change("oversized", label, path, _HUGE)
        target = next((item for item in spec.fields if not item.output_only), None)
        if target is not None:
            deep = RawJSON("[" * DEEP + "]" * DEEP)
            yield Change(
                "deep-nesting", f"{target.name}=<{DEEP:,} nested arrays>", (target.name,), deep
            )
        yield Change("unknown-field", "zzUnknownField=1", ("zzUnknownField",), 1)

    # -- the plan ---------------------------------------------------------------------------

    def plan(self) -> Plan:
        plan = Plan()
        for method in self.contract.methods:
            plan.methods.append(method)
            base = self.base(method)
            auth = self.authorization(method)
            for change in self.changes(method, base):
                request = apply(base, change)
                plan.grpc.append(
                    GrpcCase(
                        method,
                        change.kind,
                        change.label,
                        self._proto_builder(method, request),
                        auth,
                    )
                )
                for binding in method.bindings:
                    plan.http.extend(self._http_cases(method, binding, change, base, request, auth))
            plan.grpc.extend(self._raw_grpc(method, base, auth))
            plan.grpc.extend(self._auth_grpc(method, base))
            plan.grpc.extend(self._call_grpc(method, base, auth))
            for binding in method.bindings:
                plan.http.extend(self._raw_http(method, binding, base, auth))
                plan.http.extend(self._auth_http(method, binding, base))
                plan.http.extend(self._call_http(method, binding, base, auth))
        self._reserved_headers(plan)
        return plan

    def _call_grpc(
        self, method: MethodSpec, base: Mapping[str, Any], auth: str
    ) -> Iterator[GrpcCase]:
        """The base request with odd call metadata and deadlines."""
        build = self._proto_builder(method, base)
        for label, metadata in _ODD_METADATA:
            yield GrpcCase(method, "metadata", label, build, auth, metadata=metadata)
        for label, seconds in (("1 ms deadline", 0.001), ("deadline of 30 years", 1e9)):
            yield GrpcCase(method, "deadline", label, build, auth, deadline=seconds)

    def _call_http(
        self, method: MethodSpec, binding: HttpBinding, base: Mapping[str, Any], auth: str
    ) -> Iterator[HttpCase]:
        contract = self.contract

        def build() -> HttpRequest:
            return http_request(contract, method, binding, base)

        headers = [
            *_ODD_METADATA,
            ("UTF-8 in a header", (("x-request-id", "\u00e9\u00e8".encode().decode("latin-1")),)),
            ("x-request-id with a tab", (("x-request-id", "a\tb"),)),
        ]
        for label, extra in headers:
            yield HttpCase(method, "metadata", label, binding.verb, build, auth, headers=extra)

    def _reserved_headers(self, plan: Plan) -> None:
        """Headers gRPC itself reads (grpc-timeout, grpc-encoding, ...) sent by a JSON
        caller: for one unary and one streaming route of each server (the route, not the
        method, decides what Envoy forwards), each followed by a plain request on the same
        route, which shows whether the odd header broke the connection behind it."""
        chosen: dict[tuple[str, bool], MethodSpec] = {}
        for method in self.contract.methods:
            if method.bindings:
                chosen.setdefault((method.server, method.server_streaming), method)
        contract = self.contract
        for method in chosen.values():
            binding = method.bindings[0]
            auth = self.authorization(method)

            def build(m: MethodSpec = method, b: HttpBinding = binding) -> HttpRequest:
                return http_request(contract, m, b, self.base(m))

            for label, extra in _RESERVED_HEADERS:
                plan.http.append(
                    HttpCase(
                        method, "reserved-header", label, binding.verb, build, auth, headers=extra
                    )
                )
                plan.http.append(
                    HttpCase(
                        method,
                        "reserved-header",
                        f"a plain request right after {label!r}",
                        binding.verb,
                        build,
                        auth,
                    )
                )

    def _proto_builder(self, method: MethodSpec, request: Mapping[str, Any]) -> Callable[[], bytes]:
        contract = self.contract
        return lambda: to_proto(contract, method.input_type, request)

    def _http_cases(
        self,
        method: MethodSpec,
        binding: HttpBinding,
        change: Change,
        base: Mapping[str, Any],
        request: Mapping[str, Any],
        auth: str,
    ) -> Iterator[HttpCase]:
        contract = self.contract
        yield HttpCase(
            method,
            change.kind,
            change.label,
            binding.verb,
            lambda: http_request(contract, method, binding, request),
            auth,
        )
        variables = {path[0] for path, _ in binding.variables()}
        if change.path and change.path[0] in variables and change.value is not MISSING:
            # The same value outside the path: a query parameter (or the body) overrides a
            # path variable through the transcoder.
            where = "body" if binding.body == "*" else "query"
            yield HttpCase(
                method,
                change.kind,
                f"{change.label} (in the {where})",
                binding.verb,
                lambda: http_request(contract, method, binding, request, path_from=base),
                auth,
            )

    def _auth_variants(self) -> list[tuple[str, str | None]]:
        return [
            ("no token", None),
            ("'Bearer' alone", "Bearer"),
            ("garbage token", "Bearer x.y.z"),
            ("basic auth", "Basic Zm9vOmJhcg=="),
            ("8 KiB token", "Bearer " + "a" * 8 * KiB),
            ("another student's token", self.identity.other_student_auth),
            *self.extra_auth,
        ]

    def _auth_grpc(self, method: MethodSpec, base: Mapping[str, Any]) -> Iterator[GrpcCase]:
        build = self._proto_builder(method, base)
        for label, authorization in self._auth_variants():
            yield GrpcCase(method, "auth", label, build, authorization)

    def _auth_http(
        self, method: MethodSpec, binding: HttpBinding, base: Mapping[str, Any]
    ) -> Iterator[HttpCase]:
        contract = self.contract
        for label, authorization in self._auth_variants():
            yield HttpCase(
                method,
                "auth",
                label,
                binding.verb,
                lambda: http_request(contract, method, binding, base),
                authorization,
            )

    def _raw_grpc(
        self, method: MethodSpec, base: Mapping[str, Any], auth: str
    ) -> Iterator[GrpcCase]:
        try:
            prefix = to_proto(self.contract, method.input_type, base)
        except NotEncodableError:
            prefix = b""
        spec = self.contract.messages[method.input_type]
        for label, payload in _undecodable(prefix, spec, self.contract):
            yield GrpcCase(method, "undecodable-bytes", label, _const(payload), auth)
        yield GrpcCase(
            method, "oversized", f"<{HUGE_BYTES:,} bytes of garbage>", _huge_garbage, auth
        )

    def _raw_http(
        self, method: MethodSpec, binding: HttpBinding, base: Mapping[str, Any], auth: str
    ) -> Iterator[HttpCase]:
        target, body = http_request(self.contract, method, binding, base)
        spec = self.contract.messages[method.input_type]
        verb = binding.verb

        def raw(
            kind: str,
            label: str,
            new_target: str,
            new_body: bytes | None,
            content_type: str | None = "application/json",
            new_verb: str = verb,
        ) -> HttpCase:
            return HttpCase(
                method, kind, label, new_verb, _const((new_target, new_body)), auth, content_type
            )

        if binding.body:
            text = body or b"{}"
            key = _first_json_string_key(spec, binding, self.contract) or "zz"
            inner = text[1:] if text.startswith(b"{") and text != b"{}" else b"}"
            joiner = b"," if inner != b"}" else b""

            def with_key(raw_value: bytes) -> bytes:
                return b'{"' + key.encode() + b'":' + raw_value + joiner + inner

            for label, raw_body in (
                ("empty body", b""),
                ("truncated JSON", b'{"'),
                ("JSON null", b"null"),
                ("JSON array", b"[]"),
                ("JSON string", b'"x"'),
                ("JSON number 1e400", b"1e400"),
                ("trailing garbage", text + b"}}"),
                ("comment", b"/* c */" + text),
                ("invalid UTF-8 string", with_key(b'"\xc3\x28\xff\xfe"')),
                ("CESU-8 surrogate bytes", with_key(b'"\xed\xa0\x80"')),
                ("JSON-escaped lone surrogate", with_key(b'"\\udc00x"')),
                ("JSON-escaped NUL", with_key(b'"\\u0000"')),
                ("duplicate key", with_key(b'"a"')[:-1] + b',"' + key.encode() + b'":"b"}'),
                ("UTF-8 BOM", b"\xef\xbb\xbf" + text),
                ("UTF-16 body", text.decode("utf-8", "replace").encode("utf-16")),
                (f"{DEEP:,} nested arrays", with_key(b"[" * DEEP + b"]" * DEEP)),
                (f"{DEEP:,} nested objects", with_key(b'{"a":' * DEEP + b"1" + b"}" * DEEP)),
                (
                    "10,000 unknown keys",
                    b"{" + b",".join(b'"k%d":1' % i for i in range(10_000)) + b"}",
                ),
                ("number with 5,000 digits", with_key(b"1" * 5000)),
            ):
                yield raw("raw-json", label, target, raw_body)
            yield raw("raw-json", "text/plain body", target, text, "text/plain")
            yield raw(
                "raw-json", "form body", target, b"a=b&c=%00", "application/x-www-form-urlencoded"
            )
            yield raw("raw-json", "no content-type", target, text, None)
            yield raw("raw-json", "gRPC content-type with JSON", target, text, "application/grpc")
        path, _, query = target.partition("?")
        joiner_q = "&" if query else "?"
        yield raw("raw-url", "unknown query parameter", f"{target}{joiner_q}zzUnknown=1", body)
        yield raw("raw-url", "NUL query key", f"{target}{joiner_q}%00=1", body)
        yield raw("raw-url", "invalid UTF-8 query", f"{target}{joiner_q}%ff%fe=%ed%a0%80", body)
        yield raw("oversized", "70 KiB query", f"{target}{joiner_q}a={'b' * 70 * KiB}", body)
        yield raw("raw-url", "trailing slash", f"{path}/" + (f"?{query}" if query else ""), body)
        yield raw("raw-url", "dot-dot segment", f"{path}/../{path.rsplit('/', 1)[-1]}", body)
        yield raw("raw-url", "encoded dot-dot", f"{path}/%2e%2e/x", body)
        yield raw("raw-url", "double slashes", path.replace("/", "//"), body)
        other = {"GET": "POST", "POST": "GET", "PATCH": "PUT", "DELETE": "GET", "PUT": "PATCH"}
        yield raw(
            "raw-url",
            f"{other.get(verb, 'GET')} instead of {verb}",
            target,
            body,
            new_verb=other.get(verb, "GET"),
        )
        variables = binding.variables()
        if variables:
            first = variables[0][0]
            for label, segment in (
                ("%2F in the path variable", "a%2Fb"),
                ("%00 in the path variable", "a%00b"),
                ("%ff in the path variable", "a%ffb"),
                ("CESU surrogate in the path variable", "%ed%a0%80"),
                ("%2e%2e path variable", "%2e%2e"),
                ("empty path variable", ""),
                ("100 KiB path variable", "a" * 100 * KiB),
            ):
                texts = {first: segment}
                new_path = render_template(self.contract, binding, base, texts)
                yield raw("raw-url", label, new_path + (f"?{query}" if query else ""), body)


def _get(root: Any, path: Sequence[str | int]) -> Any:
    node = root
    for key in path:
        if isinstance(key, int):
            if not isinstance(node, list) or len(node) <= key:
                return MISSING
            node = node[key]
        else:
            if not isinstance(node, dict) or key not in node:
                return MISSING
            node = node[key]
    return node


def _set(root: dict[str, Any], path: Sequence[str | int], value: Any) -> None:
    """Set (or drop, for MISSING) the value at `path`, creating parents."""
    node: Any = root
    for index, key in enumerate(path[:-1]):
        following = path[index + 1]
        empty: Any = [] if isinstance(following, int) else {}
        if isinstance(key, int):
            while len(node) <= key:
                node.append({})
            if not isinstance(node[key], dict | list):
                node[key] = empty
            node = node[key]
        else:
            if not isinstance(node.get(key), dict | list):
                node[key] = empty
            node = node[key]
    last = path[-1]
    if isinstance(last, int):
        while len(node) <= last:
            node.append({})
        node[last] = value
    elif value is MISSING:
        node.pop(last, None)
    else:
        node[last] = value


def apply(base: Mapping[str, Any], change: Change) -> dict[str, Any]:
    if change.path == ("*",):
        return {}
    request = copy.deepcopy(dict(base))
    if not change.path:
        return request
    if change.path[-1] == "**":
        for key, value in change.value.items():
            _set(request, (*change.path[:-1], key), value)
        return request
    _set(request, change.path, change.value)
    return request


def _name_values(valid: str) -> Iterator[tuple[str, str, Any]]:
    segments = valid.split("/")
    last = len(segments) - 1
    while last > 0 and segments[last] == segments[last].lower() and last % 2 == 0:
        last -= 1  # singleton suffixes such as `/context` are literals
    own = segments[last]

    def with_id(new: str) -> str:
        changed = list(segments)
        changed[last] = new
        return "/".join(changed)

    collection = "/".join(segments[:last])
    yield from (
        ("malformed-name", "<collection only>/", collection + "/"),
        ("malformed-name", "<collection only>", collection),
        ("malformed-name", "<extra segment>", valid + "/x"),
        ("malformed-name", "<trailing slash>", valid + "/"),
        ("malformed-name", "<leading slash>", "/" + valid),
        ("malformed-name", "<double slash>", valid.replace("/", "//", 1)),
        ("malformed-name", "<id ..>", with_id("..")),
        ("malformed-name", "<traversal>", with_id("../../" + own)),
        ("malformed-name", "<id %2F>", with_id("a%2Fb")),
        ("malformed-name", "<id %00>", with_id("%00")),
        ("malformed-name", "<id *>", with_id("*")),
        ("malformed-name", "<id ->", with_id("-")),
        ("malformed-name", "<id with space>", with_id("a b")),
        ("malformed-name", "<id with ?#>", with_id(own + "?x=1#y")),
        ("malformed-name", "<id with newline>", with_id("a\nb")),
        ("malformed-name", "<upper-case collection>", valid.upper()),
        ("malformed-name", "<unknown collection>", "zz/" + own),
        ("malformed-name", "<another user's id>", with_id("someone-else")),
        ("nul", "<NUL in id>", with_id(own + "\x00")),
        ("odd-unicode", "<fullwidth id>", with_id("\uff53" + own)),
        ("odd-unicode", "<RTL override id>", with_id("\u202e" + own)),
        ("odd-unicode", "<emoji id>", with_id("🐍")),
        ("lone-surrogate", "<lone surrogate id>", with_id("\ud800")),
        ("oversized", "<id 257 chars>", with_id("a" * 257)),
        ("oversized", "<id 100k chars>", with_id("a" * 100_000)),
    )


_BIG = "x" * BIG_CHARS
_OVER_LIMIT = "é" * OVER_LIMIT_CHARS


_TEXT_VALUES: Final[tuple[tuple[str, str, Any], ...]] = (
    # Free text in this API is mostly Python code, questions about it, and tracebacks:
    # texts that parsers, linters and compilers choke on.
    ("tricky-text", "3,000 nested brackets", "x = " + "[" * 3000 + "]" * 3000),
    ("tricky-text", "5,000-digit literal", "x = " + "9" * 5000),
    ("tricky-text", "bogus coding cookie", "# -*- coding: bogus -*-\nx = 1\n"),
    ("tricky-text", "CR line endings", "x = 1\rif x:\r    print(x)\r"),
    ("tricky-text", "tabs and spaces", "if 1:\n\tx = 1\n        y = 2\n"),
    ("tricky-text", "unknown \\N escape", 'x = "\\N{NO SUCH NAME}"\n'),
    ("tricky-text", "15,000 lines", "x=1\n" * 15_000),
    (
        "tricky-text",
        "traceback with a 5,000-digit line number",
        f'Traceback (most recent call last):\n  File "main.py", line {"9" * 5000}, in <module>\n'
        "    x()\nValueError: boom\n",
    ),
    (
        "tricky-text",
        "traceback with a 30-digit line number",
        'Traceback (most recent call last):\n  File "main.py", line '
        + "9" * 30
        + ", in <module>\n    x()\nValueError: boom\n",
    ),
    (
        "tricky-text",
        "traceback chained 100 times",
        (
            "Traceback (most recent call last):\n"
            '  File "main.py", line 1, in <module>\n'
            "KeyError: 1\n\n"
            "During handling of the above exception, another exception occurred:\n\n"
        )
        * 100
        + "Traceback (most recent call last):\nValueError: end\n",
    ),
)


def _string_values(current: str) -> Iterator[tuple[str, str, Any]]:
    seed = current or "x"
    yield from (
        ("nul", "NUL", "\x00"),
        ("nul", "<value>+NUL", seed + "\x00"),
        ("nul", "NUL inside", "a\x00b" * 3),
        ("odd-unicode", "RTL override", "\u202e" + seed + "\u202c"),
        ("odd-unicode", "zero-width", seed + "\u200b\u200c\u200d\u2060\ufeff"),
        ("odd-unicode", "emoji", "🐍👩‍💻🏳️‍🌈" * 32),
        ("odd-unicode", "combining flood", "a" + "\u0301" * 4000),
        ("odd-unicode", "non-characters", "\uffff\ufffe\U0010ffff\U0001fffe"),
        ("odd-unicode", "line separators", "a\u2028b\u2029c\u0085d\r\ne"),
        ("odd-unicode", "control chars", "\x1b[31m\x07\x08\x7f"),
        ("odd-unicode", "whitespace only", " \t\n\u3000\u00a0"),
        ("lone-surrogate", "lone high surrogate", "\ud800"),
        ("lone-surrogate", "lone low surrogate", seed + "\udfff"),
        ("oversized", f"<{OVER_LIMIT_CHARS:,} 2-byte chars>", _OVER_LIMIT),
        ("oversized", f"<{BIG_CHARS:,} chars>", _BIG),
        ("wrong-type", "123", 123),
        ("wrong-type", "1.5", 1.5),
        ("wrong-type", "true", True),
        ("wrong-type", "null", None),
        ("wrong-type", "[]", []),
        ("wrong-type", '["x"]', ["x"]),
        ("wrong-type", "{}", {}),
    )


def _int_values(kind: str, label_kind: str) -> Iterator[tuple[str, str, Any]]:
    bits = 64 if kind.endswith("64") else 32
    unsigned = kind.startswith("u")
    low = 0 if unsigned else -(2 ** (bits - 1))
    high = 2**bits - 1 if unsigned else 2 ** (bits - 1) - 1
    in_range = {-1, low, high, low + 1, 2**31 - 1} if not unsigned else {low, high, 2**31 - 1}
    for number in sorted(n for n in in_range if low <= n <= high):
        # int64 travels as a JSON string (proto3 JSON); protobuf takes the int.
        value = Dual(str(number), number) if bits == 64 else number
        yield label_kind, str(number), value
    for value in (
        high + 1,
        low - 1,
        2**64,
        RawJSON("1e400"),
        RawJSON("-1e400"),
        1.5,
        "abc",
        "",
        "0x10",
        "1e3",
        True,
        None,
        [],
        {},
    ):
        kind_of = (
            label_kind if isinstance(value, int | RawJSON) and value is not True else "wrong-type"
        )
        yield kind_of, short(value), value


def _double_values() -> Iterator[tuple[str, str, Any]]:
    yield "float-special", "NaN", Dual("NaN", float("nan"))
    yield "float-special", "Infinity", Dual("Infinity", float("inf"))
    yield "float-special", "-Infinity", Dual("-Infinity", float("-inf"))
    yield "float-special", "-1e308", -1e308
    yield "float-special", "1e400", RawJSON("1e400")
    wrong: tuple[Any, ...] = ("abc", "", True, [], {})
    for value in wrong:
        yield "wrong-type", short(value), value


def _message_values(type_name: str) -> Iterator[tuple[str, str, Any]]:
    wrong: tuple[Any, ...] = ("x", 1, [], True)
    for value in wrong:
        yield "wrong-type", short(value), value
    yield "bad-message", "null", None
    yield "bad-message", "{}", {}
    yield "bad-message", "unknown field", {"zzUnknownField": 1}
    if type_name == "google.protobuf.Duration":
        for text in ("-1s", "315576000001s", "1e400s", "0.0000000001s", "abc", "1.5", "-0s"):
            yield "bad-wkt", text, text
        for proto in (
            {"seconds": -1},
            {"seconds": 2**63 - 1},
            {"seconds": -(2**63)},
            {"nanos": -1},
            {"nanos": 10**9},
            {"seconds": 1, "nanos": -1},
            {"seconds": 315_576_000_001},
        ):
            yield "bad-wkt", f"proto {short(proto)}", Dual(RawJSON('"0s"'), proto)
    elif type_name == "google.protobuf.Timestamp":
        for text in ("0000-01-01T00:00:00Z", "10000-01-01T00:00:00Z", "2024-02-30T00:00:00Z", "x"):
            yield "bad-wkt", text, text
        for proto in ({"seconds": 2**63 - 1}, {"seconds": -(2**62)}, {"nanos": -1}):
            yield "bad-wkt", f"proto {short(proto)}", Dual(RawJSON('"1970-01-01T00:00:00Z"'), proto)
    elif type_name == "google.protobuf.FieldMask":
        for text in ("nope", "a..b", "a,,b", "\x00", "🐍", ",".join(["x"] * 1000)):
            yield "bad-wkt", short(text), Dual(text, {"paths": [text]})
        yield "bad-wkt", "proto empty path", Dual(RawJSON('""'), {"paths": [""]})


def _b64(text: str) -> str:
    return _b64_bytes(text.encode())


def _b64_bytes(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_token(token: str) -> dict[str, Any] | None:
    """A page token's structure when it is base64 JSON (to forge look-alikes)."""
    try:
        decoded = json.loads(base64.urlsafe_b64decode(token.encode() + b"=="))
    except (ValueError, TypeError):
        return None
    return decoded if isinstance(decoded, dict) else None


def _with_raw(template: Mapping[str, Any], key: str, raw: str) -> str:
    parts = []
    for name, value in {**template, key: None}.items():
        parts.append(json.dumps(name) + ":" + (raw if name == key else json.dumps(value)))
    return "{" + ",".join(parts) + "}"


_HUGE = "x" * HUGE_BYTES

_RESERVED_HEADERS: Final[tuple[tuple[str, tuple[tuple[str, str], ...]], ...]] = (
    ("grpc-timeout of 1 ns", (("grpc-timeout", "1n"),)),
    ("grpc-timeout of 99,999,999 hours", (("grpc-timeout", "99999999H"),)),
    ("garbage grpc-timeout", (("grpc-timeout", "soon"),)),
    ("unknown grpc-encoding", (("grpc-encoding", "bogus"),)),
    ("grpc-encoding gzip on plain data", (("grpc-encoding", "gzip"),)),
    ("unknown grpc-accept-encoding", (("grpc-accept-encoding", "bogus"),)),
    ("content-encoding gzip on plain data", (("content-encoding", "gzip"),)),
)
_ODD_METADATA: Final[tuple[tuple[str, tuple[tuple[str, str], ...]], ...]] = (
    ("garbage traceparent", (("traceparent", "not-a-traceparent"),)),
    ("all-zero traceparent", (("traceparent", f"00-{'0' * 32}-{'0' * 16}-01"),)),
    ("future-version traceparent", (("traceparent", f"ff-{'a' * 32}-{'b' * 16}-ff-extra"),)),
    ("4 KiB traceparent", (("traceparent", "00-" + "a" * 4 * KiB),)),
    ("4 KiB x-request-id", (("x-request-id", "r" * 4 * KiB),)),
    ("x-request-id with spaces", (("x-request-id", "a b c"),)),
    ("repeated authorization", (("authorization", "Bearer x.y.z"),)),
)


def _string_paths(spec: MessageSpec, contract: Contract) -> list[tuple[str, ...]]:
    """Paths of the string fields a request may carry: top level, then one level down."""
    found: list[tuple[str, ...]] = []
    for item in spec.fields:
        if item.output_only or item.repeated:
            continue
        if item.kind == "string":
            found.append((item.name,))
        elif (
            item.kind == "message"
            and item.type_name in contract.messages
            and item.type_name not in WELL_KNOWN_JSON
        ):
            for nested in contract.messages[item.type_name].fields:
                if nested.kind == "string" and not nested.repeated and not nested.output_only:
                    found.append((item.name, nested.name))
    return found


def _first_json_string_key(spec: MessageSpec, binding: HttpBinding, contract: Contract) -> str:
    """The JSON key of a string field that goes into the body of `binding`."""
    body_spec = spec
    if binding.body not in ("", "*"):
        item = spec.field(binding.body)
        if item is None or item.type_name not in contract.messages:
            return ""
        body_spec = contract.messages[item.type_name]
    in_path = {path[-1] for path, _ in binding.variables()}
    for item in body_spec.fields:
        usable = item.kind == "string" and not item.repeated and not item.output_only
        if usable and item.name not in in_path:
            return item.json_name
    return ""


def _const(value: Any) -> Callable[[], Any]:
    return lambda: value


def _huge_garbage() -> bytes:
    return b"\x0a" + _varint(HUGE_BYTES) + b"\xff" * HUGE_BYTES


# --------------------------------------------------------------------------------------
# Protobuf encoding
# --------------------------------------------------------------------------------------


def _varint(number: int) -> bytes:
    number &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = number & 0x7F
        number >>= 7
        if number:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _tag(number: int, wire_type: int) -> bytes:
    return _varint((number << 3) | wire_type)


def _delimited(number: int, payload: bytes) -> bytes:
    return _tag(number, 2) + _varint(len(payload)) + payload


def _undecodable(
    prefix: bytes, spec: MessageSpec, contract: Contract
) -> Iterator[tuple[str, bytes]]:
    """Protobuf bytes no parser should accept (or must survive): after a valid prefix."""
    yield "0xff x 16", b"\xff" * 16
    yield "length past the end", prefix + b"\x0a\xff\xff\xff\xff\x0f"
    yield "truncated field", prefix + b"\x0a\x05ab"
    yield "11-byte varint", prefix + b"\x08" + b"\xff" * 10 + b"\x01"
    yield "unterminated group", prefix + b"\x0b"
    yield "stray end-group", prefix + b"\x0c"
    yield "wire type 7", prefix + b"\x0f\x00"
    yield "field number 0", prefix + b"\x00\x01"
    depth = 200
    yield (
        f"{depth} nested unknown groups",
        prefix + _tag(999, 3) * depth + _tag(999, 4) * depth,
    )
    for path, number_path, kind in _leaf_paths(spec, contract):
        label = ".".join(path)
        if kind == "string":
            yield f"invalid UTF-8 in {label}", prefix + _nest(number_path, b"\xc3\x28\xff\xfe")
            yield f"CESU-8 surrogate in {label}", prefix + _nest(number_path, b"\xed\xa0\x80")
            yield f"overlong NUL in {label}", prefix + _nest(number_path, b"\xc0\x80")
        elif kind == "message":
            yield f"garbage inside {label}", prefix + _nest(number_path, b"\xff\xff\xff")
        wire = _WIRE_TYPE.get(kind, 2)
        wrong = 5 if wire != 5 else 0
        *parents, last = number_path
        payload = _tag(last, wrong) + (b"\x00" * 4 if wrong == 5 else b"\x01")
        for number in reversed(parents):
            payload = _delimited(number, payload)
        yield f"wrong wire type for {label}", prefix + payload


def _nest(number_path: Sequence[int], leaf: bytes) -> bytes:
    payload = _delimited(number_path[-1], leaf)
    for number in reversed(number_path[:-1]):
        payload = _delimited(number, payload)
    return payload


def _leaf_paths(
    spec: MessageSpec, contract: Contract, depth: int = 0
) -> Iterator[tuple[tuple[str, ...], tuple[int, ...], str]]:
    for item in spec.fields:
        yield (item.name,), (item.number,), item.kind
        if (
            item.kind == "message"
            and depth < 1
            and item.type_name in contract.messages
            and not item.is_map
        ):
            for path, numbers, kind in _leaf_paths(
                contract.messages[item.type_name], contract, depth + 1
            ):
                yield (item.name, *path), (item.number, *numbers), kind


def to_proto(contract: Contract, type_name: str, request: Mapping[str, Any]) -> bytes:
    """The request as protobuf bytes; NotEncodableError when protobuf cannot carry a value."""
    message = contract.message_class(type_name)()
    _assign(message, request)
    return message.SerializeToString()


def _assign(message: Message, values: Mapping[str, Any]) -> None:
    descriptor = message.DESCRIPTOR
    for key, raw in values.items():
        value = raw.proto if isinstance(raw, Dual) else raw
        if value is MISSING:
            continue
        item = descriptor.fields_by_name.get(key)
        if item is None or value is None or isinstance(value, RawJSON):
            raise NotEncodableError(key)
        try:
            if item.message_type is not None:
                if item.message_type.GetOptions().map_entry:
                    raise NotEncodableError(key)
                target = getattr(message, key)
                if item.is_repeated:
                    if not isinstance(value, list):
                        raise NotEncodableError(key)
                    for element in value:
                        inner = element.proto if isinstance(element, Dual) else element
                        if not isinstance(inner, dict):
                            raise NotEncodableError(key)
                        _assign(target.add(), inner)
                else:
                    if not isinstance(value, dict):
                        raise NotEncodableError(key)
                    target.SetInParent()
                    _assign(target, value)
            elif item.is_repeated:
                if not isinstance(value, list):
                    raise NotEncodableError(key)
                getattr(message, key).extend(_scalar(item, v) for v in value)
            else:
                setattr(message, key, _scalar(item, value))
        except NotEncodableError:
            raise
        except (TypeError, ValueError, AttributeError, UnicodeError, OverflowError) as exc:
            raise NotEncodableError(f"{key}: {exc}") from None


def _scalar(item: Any, raw: Any) -> Any:
    value = raw.proto if isinstance(raw, Dual) else raw
    kind = _KINDS[item.type]
    if isinstance(value, RawJSON) or value is None or value is MISSING:
        raise NotEncodableError(item.name)
    if kind == "enum":
        if isinstance(value, str):
            found = item.enum_type.values_by_name.get(value)
            if found is None:
                raise NotEncodableError(item.name)
            return found.number
        if isinstance(value, bool) or not isinstance(value, int):
            raise NotEncodableError(item.name)
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise NotEncodableError(item.name)
        return value
    if kind in ("int32", "int64", "uint32", "uint64"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise NotEncodableError(item.name)
        return value
    if kind == "double":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise NotEncodableError(item.name)
        return float(value)
    if kind == "bytes":
        if not isinstance(value, str):
            raise NotEncodableError(item.name)
        try:
            return base64.b64decode(value, validate=True)
        except ValueError:
            raise NotEncodableError(item.name) from None
    if not isinstance(value, str):
        raise NotEncodableError(item.name)
    value.encode()  # a lone surrogate cannot be UTF-8: UnicodeError -> NotEncodableError
    return value


# --------------------------------------------------------------------------------------
# JSON / HTTP encoding (what a browser sends through the transcoder)
# --------------------------------------------------------------------------------------


def _json(value: Any, item: FieldSpec | None, contract: Contract) -> str:
    if isinstance(value, Dual):
        value = value.json
    if isinstance(value, RawJSON):
        return value.text
    if isinstance(value, dict):
        spec = (
            contract.messages.get(item.type_name)
            if item is not None and item.kind == "message"
            else None
        )
        return _json_object(value, spec, contract)
    if isinstance(value, list):
        return "[" + ",".join(_json(v, item, contract) for v in value) + "]"
    if isinstance(value, str):
        try:
            value.encode()
        except UnicodeEncodeError:
            return json.dumps(value)  # lone surrogates as \\ud800 escapes
        return json.dumps(value, ensure_ascii=False)
    return json.dumps(value)


def _json_object(values: Mapping[str, Any], spec: MessageSpec | None, contract: Contract) -> str:
    parts = []
    for key, value in values.items():
        if value is MISSING:
            continue
        item = spec.field(key) if spec is not None else None
        name = item.json_name if item is not None else key
        parts.append(json.dumps(name) + ":" + _json(value, item, contract))
    return "{" + ",".join(parts) + "}"


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


_UNRESERVED = re.compile(rb"[A-Za-z0-9_.~-]*")


def _quote(data: bytes, safe: str = "") -> str:
    """urllib's quote, with a fast path for long runs of plain characters."""
    if _UNRESERVED.fullmatch(data):
        return data.decode("ascii")
    return urllib.parse.quote(data, safe=safe)


def _path_text(value: Any) -> str:
    if isinstance(value, Dual):
        value = value.json
    if value is MISSING or value is None:
        return ""
    if isinstance(value, RawJSON):
        text = value.text
    elif isinstance(value, str):
        text = value
    else:
        text = json.dumps(value)
    return _quote(_utf8(text), safe="/")


def _pop(request: dict[str, Any], path: Sequence[str]) -> Any:
    node: Any = request
    for key in path[:-1]:
        node = node.get(key) if isinstance(node, dict) else None
        if node is None:
            return MISSING
    if not isinstance(node, dict):
        return MISSING
    return node.pop(path[-1], MISSING)


def render_template(
    contract: Contract,
    binding: HttpBinding,
    request: Mapping[str, Any],
    raw_texts: Mapping[tuple[str, ...], str] | None = None,
) -> str:
    """The URL path of `binding` for `request` (variables from it, or given raw)."""
    raw_texts = raw_texts or {}
    values = copy.deepcopy(dict(request))

    def replace(match: re.Match[str]) -> str:
        path = tuple(match.group(1).split("."))
        if path in raw_texts:
            return raw_texts[path]
        return _path_text(_pop(values, path))

    return _TEMPLATE_VAR.sub(replace, binding.template)


def http_request(
    contract: Contract,
    method: MethodSpec,
    binding: HttpBinding,
    request: Mapping[str, Any],
    path_from: Mapping[str, Any] | None = None,
) -> HttpRequest:
    """Target and body for `request` through `binding`. With `path_from`, the path comes
    from that request and every field of `request` goes in the body or the query."""
    spec = contract.messages[method.input_type]
    remaining = copy.deepcopy(dict(request))
    if path_from is None:
        path = render_template(contract, binding, remaining)
        for variable, _ in binding.variables():
            _pop(remaining, variable)
    else:
        path = render_template(contract, binding, path_from)
    body: bytes | None = None
    if binding.body == "*":
        body = _utf8(_json_object(remaining, spec, contract))
        remaining = {}
    elif binding.body:
        value = remaining.pop(binding.body, MISSING)
        body = b"" if value is MISSING else _utf8(_json(value, spec.field(binding.body), contract))
    query = _query(remaining, spec, contract)
    target = path + ("?" + query if query else "")
    if len(target) > MAX_URL_SENT:
        # Far past every URL limit: the inputs made to test those limits (a 70 KiB query,
        # a 100 KiB path variable) already say what happens; megabytes more say nothing.
        raise NotEncodableError(f"a {len(target):,}-character URL")
    return (target, body)


def _query(values: Mapping[str, Any], spec: MessageSpec, contract: Contract) -> str:
    pairs: list[tuple[str, str]] = []

    def walk(value: Any, item: FieldSpec | None, key: str) -> None:
        if isinstance(value, Dual):
            value = value.json
        if value is MISSING or value is None:
            return
        if isinstance(value, dict):
            nested = contract.messages.get(item.type_name) if item is not None else None
            for name, inner in value.items():
                sub = nested.field(name) if nested is not None else None
                walk(inner, sub, f"{key}.{sub.json_name if sub else name}")
        elif isinstance(value, list):
            for inner in value:
                walk(inner, item, key)
        elif isinstance(value, RawJSON):
            pairs.append((key, value.text))
        elif isinstance(value, bool):
            pairs.append((key, "true" if value else "false"))
        elif isinstance(value, str):
            pairs.append((key, value))
        else:
            pairs.append((key, json.dumps(value)))

    for name, value in values.items():
        item = spec.field(name)
        walk(value, item, item.json_name if item is not None else name)
    return "&".join(_quote(_utf8(k), safe=".") + "=" + _quote(_utf8(v)) for k, v in pairs)


# --------------------------------------------------------------------------------------
# Sending
# --------------------------------------------------------------------------------------

JSON_ENVOY: Final = "json/envoy"
GRPC_DIRECT: Final = "grpc/direct"
GRPC_ENVOY: Final = "grpc/envoy"
TRANSPORTS: Final = (JSON_ENVOY, GRPC_DIRECT, GRPC_ENVOY)
ENVOY_GRPC_KINDS: Final = frozenset({"base", "auth", "undecodable-bytes", "oversized"})
ENVOY_GRPC_SAMPLE: Final = 2
ALONE_KINDS: Final = frozenset({"reserved-header"})
ENVOY_FAILURES: Final = (
    "upstream connect error",
    "no healthy upstream",
    "upstream request timeout",
)


@dataclass(frozen=True, slots=True)
class Outcome:
    transport: str
    method: str
    kind: str
    label: str
    status: str
    """gRPC code name, or `HTTP <status> <rpc code name>`, or NO_ANSWER / TIMEOUT."""
    detail: str
    offending: bool
    seconds: float


class ServerErrors(logging.Handler):
    """Unhandled server exceptions (the mesh runs in this process), by request id, so a
    report shows the exception behind an opaque INTERNAL."""

    LOGGERS: Final = ("learnflow", "grpc")

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self._lock_ = threading.Lock()
        self.by_request: dict[str, str] = {}
        self.unattributed: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            text = f"{type(exc).__module__}.{type(exc).__qualname__}: {exc}"
        else:
            text = record.getMessage()
        text = " ".join(text.split())[:240]
        request_id = getattr(record, "request_id", None)
        with self._lock_:
            if isinstance(request_id, str) and request_id != "-":
                self.by_request[request_id] = text
            else:
                self.unattributed[text] += 1

    def explain(self, *request_ids: str | None) -> str | None:
        with self._lock_:
            for request_id in request_ids:
                if request_id and request_id in self.by_request:
                    return self.by_request[request_id]
        return None

    def install(self) -> None:
        for name in self.LOGGERS:
            logging.getLogger(name).addHandler(self)

    def uninstall(self) -> None:
        for name in self.LOGGERS:
            logging.getLogger(name).removeHandler(self)


def _excerpt(text: str, limit: int = 160) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


class Runner:
    """Sends cases on every transport, a few at a time, and judges each answer."""

    def __init__(
        self,
        gateway: tuple[str, int],
        ports: Mapping[str, int],
        errors: ServerErrors,
        *,
        workers: int = 6,
        timeout: float = 30.0,
        stream_seconds: float = 4.0,
    ) -> None:
        self._gateway = gateway
        self._ports = dict(ports)
        self._errors = errors
        self._workers = workers
        self._timeout = timeout
        self._stream_seconds = stream_seconds
        self._local = threading.local()
        self._seen: set[tuple[str, str, int]] = set()
        self._seen_lock = threading.Lock()
        self._counter = 0
        self.skipped: Counter[str] = Counter()
        options = [("grpc.max_receive_message_length", 64 * MiB), ("grpc.enable_retries", 0)]
        self._channels = {
            name: grpc.insecure_channel(f"127.0.0.1:{port}", options=options)
            for name, port in self._ports.items()
        }
        self._envoy_channel = grpc.insecure_channel(f"{gateway[0]}:{gateway[1]}", options=options)

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()
        self._envoy_channel.close()

    def run(self, plan: Plan, seed: int = 20240601) -> list[Outcome]:
        jobs: list[tuple[str, HttpCase | GrpcCase]] = [(JSON_ENVOY, case) for case in plan.http]
        per_kind: Counter[tuple[str, str]] = Counter()
        for grpc_case in plan.grpc:
            try:
                grpc_case.build()
            except NotEncodableError:
                self.skipped[GRPC_DIRECT] += 1
                self.skipped[GRPC_ENVOY] += 1
                continue
            jobs.append((GRPC_DIRECT, grpc_case))
            # Envoy passes protobuf through untouched: what it can change is framing,
            # sizes and metadata. Every such input goes through it, and a sample of the
            # others (the first few of each kind, per method).
            key = (grpc_case.method.path, grpc_case.kind)
            per_kind[key] += 1
            if grpc_case.kind in ENVOY_GRPC_KINDS or per_kind[key] <= ENVOY_GRPC_SAMPLE:
                jobs.append((GRPC_ENVOY, grpc_case))
            else:
                self.skipped[GRPC_ENVOY] += 1
        # Headers gRPC reads itself can break a whole upstream connection, and so the
        # requests of others sharing it: they go last, one at a time, each followed by a
        # plain request on the same route, so every failure is pinned on its cause.
        alone = [job for job in jobs if job[1].kind in ALONE_KINDS]
        together = [job for job in jobs if job[1].kind not in ALONE_KINDS]
        # Interleave methods so slow ones (sandbox runs) do not queue behind each other.
        random.Random(seed).shuffle(together)
        with ThreadPoolExecutor(self._workers, thread_name_prefix="fuzz") as pool:
            results = list(pool.map(lambda job: self._one(*job), together))
        results.extend(self._one(*job) for job in alone)
        return [r for r in results if r is not None]

    # -- one case ---------------------------------------------------------------------------

    def _first_time(self, transport: str, method: str, key: bytes) -> bool:
        digest = (transport, method, hash(key))
        if key.startswith(b"alone:"):
            return True
        with self._seen_lock:
            if digest in self._seen:
                return False
            self._seen.add(digest)
            return True

    def _request_id(self) -> str:
        with self._seen_lock:
            self._counter += 1
            return f"fuzz-{self._counter:06d}"

    def _one(self, transport: str, case: HttpCase | GrpcCase) -> Outcome | None:
        if isinstance(case, HttpCase):
            try:
                target, body = case.build()
            except NotEncodableError:
                self.skipped[transport] += 1
                return None
            key = b"\0".join(
                [
                    b"alone:" if case.kind in ALONE_KINDS else b"",
                    case.verb.encode(),
                    _utf8(target),
                    body or b"-",
                    _utf8(case.authorization or "-"),
                    _utf8(case.content_type or "-"),
                    _utf8(repr(case.headers)),
                ]
            )
            if not self._first_time(transport, case.method.path, key):
                self.skipped[transport] += 1
                return None
            return self._http(case, target, body)
        try:
            payload = case.build()
        except NotEncodableError:
            self.skipped[transport] += 1
            return None
        key = b"\0".join(
            [payload, _utf8(case.authorization or "-"), _utf8(repr((case.metadata, case.deadline)))]
        )
        if not self._first_time(transport, case.method.path, key):
            self.skipped[transport] += 1
            return None
        return self._grpc(transport, case, payload)

    def _connection(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = http.client.HTTPConnection(*self._gateway, timeout=self._timeout)
            self._local.conn = conn
        return conn

    def _drop_connection(self) -> None:
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
        self._local.conn = None

    def _http(self, case: HttpCase, target: str, body: bytes | None) -> Outcome:
        request_id = self._request_id()
        headers = {"x-request-id": request_id}
        if case.authorization is not None:
            headers["authorization"] = case.authorization
        if body is not None and case.content_type is not None:
            headers["content-type"] = case.content_type
        headers.update(case.headers)
        started = time.monotonic()

        def outcome(status: str, detail: str, offending: bool) -> Outcome:
            return Outcome(
                JSON_ENVOY,
                case.method.label,
                case.kind,
                case.label,
                status,
                _excerpt(detail),
                offending,
                time.monotonic() - started,
            )

        for attempt in range(2):
            conn = self._connection()
            try:
                # The gateway may answer (413) before it has read the whole body.
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    conn.request(case.verb, target, body=body, headers=headers)
                response = conn.getresponse()
                status = response.status
                content_type = response.getheader("content-type", "")
                raw = self._read(conn, response)
            except TimeoutError:
                self._drop_connection()
                return outcome("TIMEOUT", f"no answer within {self._timeout}s", False)
            except ValueError as exc:  # http.client refused to send it (a header value)
                self._drop_connection()
                return outcome("NOT_SENT", f"{type(exc).__name__}: {exc}", False)
            except (http.client.HTTPException, OSError) as exc:
                self._drop_connection()
                if attempt == 0 and isinstance(exc, http.client.RemoteDisconnected):
                    continue  # a kept-alive connection the gateway had closed: retry once
                return outcome("NO_ANSWER", f"{type(exc).__name__}: {exc}", True)
            break
        code, message = _rpc_status_of(raw, content_type)
        status_text = f"HTTP {status}" + (
            f" {RPC_CODE_NAMES.get(code, code)}" if code is not None else ""
        )
        # 501 with UNIMPLEMENTED is the contract's own answer for a declared RPC that a
        # server does not implement yet (google.rpc.Code 12 -> HTTP 501), not a crash.
        declared_only = status == HTTPStatus.NOT_IMPLEMENTED and code == UNIMPLEMENTED_CODE
        # 504 with DEADLINE_EXCEEDED answers a caller who set a deadline (grpc-timeout)
        # too short for the work: the caller's choice, answered as documented.
        own_deadline = (
            status == HTTPStatus.GATEWAY_TIMEOUT
            and code == DEADLINE_EXCEEDED_CODE
            and any(name == "grpc-timeout" for name, _ in case.headers)
        )
        offending = (
            status >= HTTPStatus.INTERNAL_SERVER_ERROR and not (declared_only or own_deadline)
        ) or code in CRASH_RPC_NUMBERS
        detail = message or raw[:200].decode("utf-8", "replace")
        if offending:
            server = self._errors.explain(request_id, *_REQUEST_ID.findall(detail))
            if server:
                detail = f"{detail} | server: {server}"
        return outcome(status_text, detail, offending)

    def _read(self, conn: http.client.HTTPConnection, response: http.client.HTTPResponse) -> bytes:
        """The body, bounded in time and size (an event stream may never end)."""
        chunks: list[bytes] = []
        size = 0
        deadline = time.monotonic() + self._stream_seconds
        streaming = "event-stream" in (response.getheader("content-type") or "")
        try:
            while size < MiB:
                if streaming and conn.sock is not None:
                    # A socket that timed out once cannot be read again: wait at most
                    # until the deadline, then stop reading this stream.
                    conn.sock.settimeout(max(0.01, deadline - time.monotonic()))
                try:
                    chunk = response.read1(64 * KiB)
                except TimeoutError:
                    if not streaming:
                        raise
                    break
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
                if streaming and time.monotonic() > deadline:
                    break
        finally:
            if conn.sock is not None:
                conn.sock.settimeout(self._timeout)
        if not response.isclosed():
            self._drop_connection()  # not read to the end: this connection is unusable
        elif response.will_close:
            self._drop_connection()
        return b"".join(chunks)

    def _grpc(self, transport: str, case: GrpcCase, payload: bytes) -> Outcome:
        request_id = self._request_id()
        metadata: list[tuple[str, str]] = [("x-request-id", request_id)]
        if case.authorization is not None:
            metadata.append(("authorization", case.authorization))
        metadata.extend(case.metadata)
        channel = (
            self._envoy_channel if transport == GRPC_ENVOY else self._channels[case.method.server]
        )
        method = case.method
        started = time.monotonic()
        # Direct calls carry no deadline (a client may leave it out); the client still
        # gives up after its own timeout. Calls through Envoy carry one.
        deadline = self._timeout if transport == GRPC_ENVOY else None
        if case.deadline is not None:
            deadline = case.deadline
        status, detail = "OK", ""
        try:
            if method.server_streaming or method.client_streaming:
                status, detail = self._grpc_stream(channel, method, payload, metadata, deadline)
            else:
                call = channel.unary_unary(method.path)
                future = call.future(payload, timeout=deadline, metadata=metadata)
                try:
                    future.result(timeout=self._timeout)
                except grpc.FutureTimeoutError:
                    future.cancel()
                    status, detail = "TIMEOUT", f"no answer within {self._timeout}s"
        except grpc.RpcError as exc:
            code = exc.code()
            status = code.name if isinstance(code, grpc.StatusCode) else str(code)
            detail = str(exc.details() or "")
        except ValueError as exc:  # the client library refused to send it (metadata)
            status, detail = "NOT_SENT", f"{type(exc).__name__}: {exc}"
        offending = status in {code.name for code in CRASH_CODES} or (
            # Envoy's own UNAVAILABLE (it could not get an answer from a running service:
            # the service reset the stream or sent something Envoy could not forward).
            status == "UNAVAILABLE" and detail.startswith(ENVOY_FAILURES)
        )
        if offending:
            server = self._errors.explain(request_id, *_REQUEST_ID.findall(detail))
            if server:
                detail = f"{detail} | server: {server}"
        return Outcome(
            transport,
            method.label,
            case.kind,
            case.label,
            status,
            _excerpt(detail),
            offending,
            time.monotonic() - started,
        )

    def _grpc_stream(
        self,
        channel: grpc.Channel,
        method: MethodSpec,
        payload: bytes,
        metadata: list[tuple[str, str]],
        deadline: float | None,
    ) -> tuple[str, str]:
        limit = self._stream_seconds if deadline is None else min(deadline, self._stream_seconds)
        if method.client_streaming and method.server_streaming:
            responses: Any = channel.stream_stream(method.path)(
                iter([payload]), timeout=limit, metadata=metadata
            )
        elif method.server_streaming:
            responses = channel.unary_stream(method.path)(payload, timeout=limit, metadata=metadata)
        else:
            channel.stream_unary(method.path)(iter([payload]), timeout=limit, metadata=metadata)
            return "OK", ""
        received = 0
        try:
            for _ in responses:
                received += 1
                if received >= 500:
                    responses.cancel()
                    break
        except grpc.RpcError as exc:
            if exc.code() is grpc.StatusCode.DEADLINE_EXCEEDED and received:
                return "OK", f"stream still open after {received} messages"
            raise
        return "OK", f"{received} messages"


def _rpc_status_of(raw: bytes, content_type: str) -> tuple[int | None, str]:
    """The google.rpc code and message of a JSON error body, or of an error inside an
    event stream."""
    candidates: list[bytes] = []
    if "event-stream" in content_type:
        candidates = [line[5:].strip() for line in raw.splitlines() if line.startswith(b"data:")]
    elif "json" in content_type:
        candidates = [raw]
    for text in candidates:
        try:
            decoded = json.loads(text)
        except ValueError:
            continue
        items = decoded if isinstance(decoded, list) else [decoded]
        for item in items:
            if isinstance(item, dict) and isinstance(item.get("code"), int) and "message" in item:
                return int(item["code"]), str(item.get("message", ""))
    return None, ""


# --------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------

_NOISE = re.compile(r"\b(?:[0-9a-f]{8,}|fuzz-\d+|fz[0-9a-z-]+)\b")


def failure_classes(outcomes: Iterable[Outcome]) -> list[str]:
    """One line per (method, transport, kind, status, message): every offending class,
    with how many inputs hit it and a few of them."""
    groups: dict[tuple[str, str, str, str, str], list[str]] = {}
    for outcome in outcomes:
        if not outcome.offending:
            continue
        message = _NOISE.sub("…", outcome.detail)
        key = (outcome.method, outcome.transport, outcome.kind, outcome.status, message)
        groups.setdefault(key, []).append(outcome.label)
    lines = []
    for (method, transport, kind, status, message), labels in sorted(groups.items()):
        examples = "; ".join(dict.fromkeys(labels[:3]))
        lines.append(
            f"{method} | {transport} | {kind} | {status} | x{len(labels)} | {message}"
            f" | e.g. {examples}"
        )
    return lines


def summary(outcomes: Sequence[Outcome], skipped: Mapping[str, int]) -> str:
    tried = Counter(o.transport for o in outcomes)
    bad = Counter(o.transport for o in outcomes if o.offending)
    timeouts = Counter(o.transport for o in outcomes if o.status == "TIMEOUT")
    parts = [
        f"{t}: {tried[t]} tried, {bad[t]} offending, {timeouts[t]} timed out, "
        f"{skipped.get(t, 0)} not sent (duplicate or not expressible)"
        for t in TRANSPORTS
    ]
    methods = len({o.method for o in outcomes})
    return f"robustness: {sum(tried.values())} inputs over {methods} methods; " + "; ".join(parts)


__all__ = [
    "GRPC_DIRECT",
    "GRPC_ENVOY",
    "JSON_ENVOY",
    "TRANSPORTS",
    "Contract",
    "Generator",
    "Identity",
    "Outcome",
    "Plan",
    "Runner",
    "ServerErrors",
    "failure_classes",
    "summary",
]
