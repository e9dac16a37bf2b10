"""Which module builds each service; imported lazily so one service loads only its code."""

from __future__ import annotations

import importlib
from collections.abc import Callable

from services.kit.catalogue import SERVICES_BY_NAME
from services.kit.runtime import Runtime
from services.kit.server import ServiceParts

Builder = Callable[[Runtime], ServiceParts]


def builder(service: str) -> Builder:
    if service not in SERVICES_BY_NAME:
        raise KeyError(f"unknown service {service!r}; one of {', '.join(SERVICES_BY_NAME)}")
    module = importlib.import_module(f"services.{service}.main")
    build: Builder = module.build
    return build
