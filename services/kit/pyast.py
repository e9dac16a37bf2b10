"""`ast.parse` that is safe to call from many threads at once.

CPython 3.11 keeps the AST-to-object conversion's recursion depth in shared state:
two threads building syntax trees at once can fail with "SystemError: AST constructor
recursion depth mismatch" (cpython#106905). Every server here handles requests on a
thread pool, and `make run` puts all services in one process, so every parse of
student code goes through this one lock. (`compile()` to bytecode never builds Python
AST objects and is not affected.)
"""

from __future__ import annotations

import ast
import threading

_LOCK = threading.Lock()


def parse_module(source: str, filename: str = "<unknown>") -> ast.Module:
    """ast.parse under the process-wide lock; raises SyntaxError/ValueError as it does."""
    with _LOCK:
        return ast.parse(source, filename=filename)
