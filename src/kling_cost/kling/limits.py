"""What a Kling-compatible server accepts as a request body, before it looks inside.

Shared by the simulator and the proxy, so both refuse the same bodies with the same Kling
answers (``code`` and HTTP status on the raised :class:`~kling_cost.errors.InvalidRequest`):

* larger than ``max_bytes`` (default 64 MiB): **1200, HTTP 413**. Refused from the declared
  ``Content-Length`` before a byte is read, else as soon as the streamed body passes it. The
  default fits Kling's largest documented body: multi-image-to-video's four images of up to
  10 MB, base64-encoded (about 54 MB), plus the other fields. Kling does not publish its own
  limit, so it is a setting.
* not JSON (bad syntax, not UTF-8, ``NaN``/``Infinity``, a number too big to be one):
  **1200, HTTP 400**.
* nested deeper than ``max_depth`` (default 32; Kling's deepest body, image-to-video's
  ``dynamic_masks[].trajectories[]``, has 4 levels): **1200, HTTP 400**. Never a 500, however
  deep (the parser's own recursion limit is caught too).
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterable
from dataclasses import dataclass

from ..errors import ConfigurationError, InvalidRequest

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_JSON_DEPTH",
    "BodyLimits",
    "parse_json_body",
    "read_body",
    "read_json_body",
]

MAX_BODY_BYTES = 64 * 1024 * 1024
MAX_JSON_DEPTH = 32
INVALID_REQUEST = 1200


@dataclass(frozen=True)
class BodyLimits:
    """The largest body (bytes) and the deepest JSON nesting a server accepts."""

    max_bytes: int = MAX_BODY_BYTES
    max_depth: int = MAX_JSON_DEPTH

    def __post_init__(self) -> None:
        for name in ("max_bytes", "max_depth"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigurationError(f"{name} must be a whole number of at least 1, not {value!r}")


def _too_large(limits: BodyLimits) -> InvalidRequest:
    mib, rest = divmod(limits.max_bytes, 1024 * 1024)
    size = f"{mib} MiB" if mib and not rest else f"{limits.max_bytes} bytes"
    return InvalidRequest(f"request body is larger than {size}", code=INVALID_REQUEST, http_status=413)


async def read_json_body(
    chunks: AsyncIterable[bytes], *, content_length: str | None = None, limits: BodyLimits | None = None
) -> object:
    """Read a streamed body (e.g. Starlette's ``request.stream()``) within ``limits`` and parse it."""
    limits = limits or BodyLimits()
    return parse_json_body(await read_body(chunks, content_length=content_length, limits=limits), limits)


async def read_body(
    chunks: AsyncIterable[bytes], *, content_length: str | None = None, limits: BodyLimits | None = None
) -> bytes:
    """A streamed body's bytes, refused (1200, HTTP 413) from the declared ``Content-Length``
    before a byte is read, else as soon as it passes ``limits.max_bytes``: never held whole first."""
    limits = limits or BodyLimits()
    declared = (content_length or "").strip()
    if declared.isascii() and declared.isdigit() and int(declared) > limits.max_bytes:
        raise _too_large(limits)
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limits.max_bytes:
            raise _too_large(limits)
        parts.append(chunk)
    return b"".join(parts)


def _finite(text: str) -> float:
    """A JSON number with a fraction in a Kling request body (``cfg_scale``, ``strength``), read
    as Kling's own JSON does: a float, refused when not finite. Never an amount of money: prices
    come from the catalog (integer durations and counts), exact Decimals from there on."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:20]} is out of range")
    return value


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def parse_json_body(raw: bytes, limits: BodyLimits | None = None) -> object:
    """Parse a whole body within ``limits`` (see the module); raises :class:`InvalidRequest`."""
    limits = limits or BodyLimits()
    if len(raw) > limits.max_bytes:
        raise _too_large(limits)
    try:
        value = json.loads(raw, parse_float=_finite, parse_constant=_no_constant)
    except RecursionError:
        raise _too_deep(limits) from None
    except ValueError:  # includes UnicodeDecodeError and int() digit limits
        raise InvalidRequest(
            "request body is not valid JSON", code=INVALID_REQUEST, http_status=400
        ) from None
    if _depth_exceeds(value, limits.max_depth):
        raise _too_deep(limits)
    return value


def _too_deep(limits: BodyLimits) -> InvalidRequest:
    return InvalidRequest(
        f"request body nests deeper than {limits.max_depth} levels", code=INVALID_REQUEST, http_status=400
    )


def _depth_exceeds(value: object, max_depth: int) -> bool:
    """True when arrays/objects nest deeper than ``max_depth`` (iterative: no recursion)."""
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else None
        if children is None:
            continue
        if depth > max_depth:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False
