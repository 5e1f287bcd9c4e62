"""Request bodies that cannot hurt, and stored text that cannot break a reader.

What a caller sends is checked in this order, each step before the next can
cost anything:

1. **size** — aiohttp refuses a body above ``max_request_body_size``
   (oslo.middleware's option and default, 114688 bytes) with 413 while
   reading it, so a huge body is never buffered whole;
2. **UTF-8** — the bytes must decode strictly (no UTF-16/32 sniffing, no
   overlong or surrogate encodings);
3. **nesting** — brackets are counted (outside strings) before parsing, so a
   ``[[[[…`` body is a 400, never a ``RecursionError`` (500);
4. **JSON** — ``NaN``/``Infinity`` are not JSON and are refused;
5. **text** — every key and string value must be encodable as UTF-8 (a
   ``"\\ud800"`` escape decodes to a lone surrogate that no client can print)
   and free of the C0 control characters other than tab, CR and LF.

The other direction: a value stored by an older version may already hold a
lone surrogate. :func:`clean_json` makes any stored document safe to send
(lone surrogates become ``?``) and costs one substring test when there is
nothing to clean, which keeps the unparsed fast path of a list.
"""

from __future__ import annotations

import json
import re
from typing import Any

from netmeta.server.errors import BadRequest, invalid

MAX_REQUEST_BODY_SIZE = 114688  # oslo.middleware sizelimit's default, as Neutron serves it
MAX_DEPTH = 32
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKETS = re.compile(r"[\[\]{}]")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_NAME_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def too_deep(text: str, limit: int = MAX_DEPTH) -> bool:
    """True if arrays/objects nest deeper than ``limit`` (strings ignored)."""
    if text.count("[") + text.count("{") <= limit:
        return False
    depth = 0
    for bracket in _BRACKETS.findall(_STRINGS.sub("", text)):
        if bracket in "[{":
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


def text_problem(value: str) -> str | None:
    """Why ``value`` cannot be stored as text, or None."""
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "is not valid UTF-8 text (lone surrogate)"
    if _CONTROL.search(value):
        return "contains a control character"
    return None


def check_text(obj: Any, where: str = "body") -> None:
    """Walk a parsed body; the first bad key or string is Neutron's 400."""
    stack: list[tuple[Any, str]] = [(obj, where)]
    while stack:
        item, path = stack.pop()
        if isinstance(item, str):
            problem = text_problem(item)
            if problem:
                raise invalid(f"the value at {path} {problem}")
        elif isinstance(item, dict):
            for key, value in item.items():
                problem = text_problem(key)
                if problem:
                    raise invalid(f"a key in {path} {problem}")
                stack.append((value, f"{path}.{key}"))
        elif isinstance(item, list):
            stack.extend((value, f"{path}[{i}]") for i, value in enumerate(item))


def parse_body(raw: bytes) -> Any:
    """Bytes (already size-bounded) to a checked JSON value, or a 400."""
    if not raw:
        raise BadRequest("Malformed request body: empty body", "HTTPBadRequest")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest("Malformed request body: not UTF-8", "HTTPBadRequest") from exc
    if too_deep(text):
        raise BadRequest(f"Malformed request body: nested deeper than {MAX_DEPTH} levels", "HTTPBadRequest")
    try:
        obj = json.loads(text, parse_constant=_constant)
    except (ValueError, RecursionError) as exc:
        raise BadRequest("Malformed request body", "HTTPBadRequest") from exc
    check_text(obj)
    return obj


def check_name(value: str | None, name: str) -> None:
    """Names and host names: no control characters at all (Nova's rule)."""
    if value and _NAME_CONTROL.search(value):
        raise invalid(f"{name} contains a control character")


def _clean(obj: Any) -> Any:
    if isinstance(obj, str):
        return obj.encode("utf-8", "replace").decode("utf-8") if not obj.isascii() else obj
    if isinstance(obj, dict):
        return {_clean(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_clean(v) for v in obj]
    return obj


def clean_obj(obj: Any) -> Any:
    """A parsed stored document with every lone surrogate replaced."""
    return _clean(obj)


def clean_json(text: str) -> str:
    """Stored JSON text, safe to send: unchanged unless it escapes a surrogate.

    The store writes with ``ensure_ascii``, so a surrogate (paired or not)
    can only appear as a ``\\ud8xx``-``\\udfxx`` escape; paired ones survive
    the round trip, lone ones become ``?``.
    """
    if "\\ud" not in text:
        return text
    try:
        return json.dumps(_clean(json.loads(text)), separators=(",", ":"))
    except ValueError:
        return text
