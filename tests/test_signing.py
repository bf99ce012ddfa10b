"""``kling_cost.signing``: every bad signature is an AuthError, a bad secret a ConfigurationError,
a body or headers of the wrong type a ValidationError; the same functions serve Kling's callbacks
(``kling_cost.kling``) and the alert webhooks."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from kling_cost import AuthError, ConfigurationError, KlingCostError, ServerError, ValidationError
from kling_cost.signing import sign_webhook, verify_webhook

SECRET = "whsec_c2VjcmV0LWtleQ=="
BODY = b'{"task_id": "t1", "task_status": "succeed"}'


def signed(secret: str = SECRET, body: bytes = BODY) -> dict[str, str]:
    stamp = int(time.time())
    return {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(stamp),
        "webhook-signature": sign_webhook(secret, "msg_1", stamp, body),
    }


def test_a_good_signature_passes_among_others() -> None:
    headers = signed()
    verify_webhook(SECRET, headers, BODY)
    headers["webhook-signature"] = "v1,ünïcödé v1,AAAA " + headers["webhook-signature"]
    verify_webhook(SECRET, headers, BODY)  # one matching signature of several is enough


@pytest.mark.parametrize(
    "signature",
    ["v1,ünïcödé", "v1,签名", "v1,\udcff", "", "v1," + "A" * 10_000],
    ids=["latin", "cjk", "surrogate", "empty", "long"],
)
def test_a_signature_that_is_not_even_ascii_is_an_auth_error(signature: str) -> None:
    headers = {**signed(), "webhook-signature": signature}
    with pytest.raises(AuthError):
        verify_webhook(SECRET, headers, BODY)


@pytest.mark.parametrize(
    "stamp", ["١٧٠٠٠٠٠٠٠٠", "1e9", "nan", "9" * 5000, " ", "--5", "-", "+5", "1_700_000_000", "5²"]
)
def test_a_timestamp_that_is_not_a_plain_number_is_an_auth_error(stamp: str) -> None:
    headers = {**signed(), "webhook-timestamp": stamp}
    with pytest.raises(AuthError):
        verify_webhook(SECRET, headers, BODY)


def test_the_test_vector_of_kling_s_docs_passes_alone_and_during_a_secret_rotation() -> None:
    """KLING_API.md's addendum: a known secret, id, timestamp and body give a known signature;
    during a rotation the header holds several signatures, any one valid is enough."""
    secret = "whsec_dGVzdHNlY3JldHRlc3RzZWNyZXR0ZXN0c2VjcmV0MTI="
    body = (
        '{"id":"1234567890","status":"succeeded","message":"","create_time":1781080778802,'
        '"update_time":1781080794151}'
    )
    signature = "v1,UsKlJP00XoQyOn410NM9xv34sP+Gl0jnOO9Lcpr7NJ4="
    assert sign_webhook(secret, "9876543210", 1781080794, body) == signature
    headers = {"webhook-id": "9876543210", "webhook-timestamp": "1781080794", "webhook-signature": signature}
    for given in (body, body.encode()):
        verify_webhook(secret, headers, given, now=1781080794)
    rotating = {**headers, "webhook-signature": f"v1,b2xkLXNlY3JldA== {signature}"}
    verify_webhook(secret, rotating, body, now=1781080794 + 299)
    with pytest.raises(AuthError, match="does not match"):
        verify_webhook(secret, {**headers, "webhook-signature": "v1,b2xkLXNlY3JldA=="}, body, now=1781080794)


def test_a_tampered_body_or_another_secret_is_an_auth_error() -> None:
    with pytest.raises(AuthError, match="does not match"):
        verify_webhook(SECRET, signed(), BODY + b" ")
    with pytest.raises(AuthError, match="does not match"):
        verify_webhook("whsec_b3RoZXI=", signed(), BODY)


@pytest.mark.parametrize("secret", ["whsec_%%%", "whsec_", "whsec_abc", "whsec_=", ""])
def test_a_bad_secret_is_a_configuration_error_on_both_sides(secret: str) -> None:
    with pytest.raises(ConfigurationError):
        verify_webhook(secret, signed(), BODY)
    with pytest.raises(ConfigurationError):
        sign_webhook(secret, "msg_1", int(time.time()), BODY)


def test_the_kling_package_and_the_alert_sinks_use_the_one_implementation() -> None:
    import kling_cost.alerts.webhook as alert_webhooks
    import kling_cost.kling.webhooks as kling_webhooks
    from kling_cost import kling, signing

    for name in ("sign_webhook", "verify_webhook"):
        assert getattr(kling, name) is getattr(signing, name)
    for name in ("sign_webhook", "verify_webhook", "webhook_key", "TOLERANCE"):
        assert getattr(kling_webhooks, name) is getattr(signing, name)
    assert alert_webhooks.sign_webhook is signing.sign_webhook


def test_a_str_body_is_checked_as_its_utf8_bytes() -> None:
    text = '{"task_id": "t1", "prompt": "un renard roux, 狐狸"}'
    headers = signed(body=text.encode())
    verify_webhook(SECRET, headers, text)  # a framework that hands the body over as text
    verify_webhook(SECRET, headers, bytearray(text.encode()))
    verify_webhook(SECRET, headers, memoryview(text.encode()))
    assert sign_webhook(SECRET, "msg_1", 1, text) == sign_webhook(SECRET, "msg_1", 1, text.encode())
    with pytest.raises(AuthError, match="does not match"):
        verify_webhook(SECRET, headers, text + " ")
    with pytest.raises(AuthError, match="does not match"):  # a lone surrogate is no UTF-8 text anyone signed
        verify_webhook(SECRET, headers, text[:-1] + "\udcff")


@pytest.mark.parametrize("body", [json.loads(BODY), None, 42, ["a"]], ids=["dict", "none", "int", "list"])
def test_a_body_that_is_not_the_raw_body_is_a_validation_error(body: Any) -> None:
    with pytest.raises(ValidationError, match="raw request body") as info:
        verify_webhook(SECRET, signed(), body)
    assert isinstance(info.value, KlingCostError) and type(body).__name__ in str(info.value)
    with pytest.raises(ValidationError):
        sign_webhook(SECRET, "msg_1", int(time.time()), body)


def test_headers_may_be_asgi_bytes_in_any_case() -> None:
    raw = {k.upper().encode(): v.encode() for k, v in signed().items()}
    verify_webhook(SECRET, raw, BODY)
    raw[b"WEBHOOK-SIGNATURE"] = b"v1,AAAA"
    with pytest.raises(AuthError, match="does not match"):
        verify_webhook(SECRET, raw, BODY)
    with pytest.raises(ValidationError, match="headers"):
        verify_webhook(SECRET, {"webhook-id": 1}, BODY)  # type: ignore[dict-item]


def test_headers_may_be_the_raw_asgi_list_and_anything_else_is_a_validation_error() -> None:
    """``scope["headers"]`` of a raw ASGI app is a list of (bytes, bytes) pairs; before, it (or
    any non-mapping) raised a bare AttributeError past the error root."""
    asgi = [(k.encode(), v.encode()) for k, v in signed().items()]
    verify_webhook(SECRET, asgi, BODY)
    verify_webhook(SECRET, tuple(asgi), BODY)
    with pytest.raises(AuthError, match="does not match"):
        verify_webhook(SECRET, [*asgi[:2], (b"webhook-signature", b"v1,AAAA")], BODY)
    for bad in (None, "webhook-id: 1", b"raw", 7, [b"webhook-id"], [(b"a", b"b", b"c")]):
        with pytest.raises(ValidationError, match="headers"):
            verify_webhook(SECRET, bad, BODY)  # type: ignore[arg-type]


def test_a_stale_or_missing_timestamp_is_an_auth_error() -> None:
    headers = signed()
    stamp = int(headers["webhook-timestamp"])
    verify_webhook(SECRET, headers, BODY, now=stamp + 300)
    with pytest.raises(AuthError, match="300 s off"):
        verify_webhook(SECRET, headers, BODY, now=stamp + 301)
    with pytest.raises(AuthError, match="missing"):
        verify_webhook(SECRET, {k: v for k, v in headers.items() if k != "webhook-id"}, BODY)


@pytest.mark.parametrize(
    "body",
    [b"{", b"\xff", b"[]", b'{"task_id": "t1"}', b"[" * 100_000],
    ids=["cut", "binary", "list", "partial", "deep"],
)
def test_a_callback_that_is_not_a_kling_task_is_a_server_error(body: bytes) -> None:
    from kling_cost.kling import parse_callback

    with pytest.raises(ServerError, match="callback body"):
        parse_callback(body)
    assert parse_callback(BODY.decode()).task_id == "t1"
    with pytest.raises(ValidationError):
        parse_callback(json.loads(BODY))  # type: ignore[arg-type]


def test_the_alerts_never_import_the_kling_client() -> None:
    """Imports point from ``alerts`` to the neutral ``signing``, not sideways into ``kling``."""
    import subprocess
    import sys
    from pathlib import Path

    import kling_cost.alerts

    package = Path(kling_cost.alerts.__file__).parent
    sideways = [p.name for p in package.glob("*.py") if "from ..kling" in p.read_text(encoding="utf-8")]
    assert sideways == []
    code = "import sys, kling_cost.alerts; print(sorted(m for m in sys.modules if m.startswith('kling_cost.kling')))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"


# Kling's own test vector (KLING_API.md's addendum; tests/fixtures/kling/new/callback.json)
VECTOR_SECRET = "whsec_dGVzdHNlY3JldHRlc3RzZWNyZXR0ZXN0c2VjcmV0MTI="
VECTOR_BODY = (
    b'{"id":"1234567890","status":"succeeded","message":"","create_time":1781080778802,'
    b'"update_time":1781080794151}'
)
VECTOR_HEADERS = {
    "webhook-id": "9876543210",
    "webhook-timestamp": "1781080794",
    "webhook-signature": "v1,UsKlJP00XoQyOn410NM9xv34sP+Gl0jnOO9Lcpr7NJ4=",
}


def test_klings_test_vector_signs_and_verifies() -> None:
    assert (
        sign_webhook(VECTOR_SECRET, "9876543210", 1781080794, VECTOR_BODY)
        == VECTOR_HEADERS["webhook-signature"]
    )
    verify_webhook(VECTOR_SECRET, VECTOR_HEADERS, VECTOR_BODY, now=1781080794)
    with pytest.raises(AuthError, match="more than 300 s off"):
        verify_webhook(VECTOR_SECRET, VECTOR_HEADERS, VECTOR_BODY, now=1781080794 + 301)


@pytest.mark.parametrize("position", ["first", "last", "middle"])
def test_during_a_secret_rotation_any_one_valid_signature_is_enough(position: str) -> None:
    old = sign_webhook("whsec_b2xkLXNlY3JldC0wMQ==", "9876543210", 1781080794, VECTOR_BODY)
    new = VECTOR_HEADERS["webhook-signature"]
    order = {"first": [new, old], "last": [old, new], "middle": [old, new, "v1,AAAA"]}[position]
    headers = dict(VECTOR_HEADERS, **{"webhook-signature": " ".join(order)})
    verify_webhook(VECTOR_SECRET, headers, VECTOR_BODY, now=1781080794)
    verify_webhook("whsec_b2xkLXNlY3JldC0wMQ==", headers, VECTOR_BODY, now=1781080794)  # the old secret too
    headers["webhook-signature"] = f"{old}  v1,AAAA"  # neither is the new secret's
    with pytest.raises(AuthError, match="does not match"):
        verify_webhook(VECTOR_SECRET, headers, VECTOR_BODY, now=1781080794)


def test_parse_callback_reads_both_standards() -> None:
    from decimal import Decimal

    from kling_cost.kling import KlingTask, NewStandardTask, parse_callback

    new = parse_callback(VECTOR_BODY)
    assert isinstance(new, NewStandardTask) and new.succeeded and new.task_id == "1234567890"
    billed = parse_callback(
        b'{"id":"1","status":"succeeded","billing":[{"charge_type":"unit","amount":0.1}]}'
    )
    assert isinstance(billed, NewStandardTask) and billed.units == Decimal("0.1")
    legacy = parse_callback(BODY)
    assert isinstance(legacy, KlingTask) and legacy.succeeded
    with pytest.raises(ServerError, match="callback body"):
        parse_callback(b'{"id":"1","status":"succeeded","billing":[{"charge_type":"gift","amount":"1"}]}')
