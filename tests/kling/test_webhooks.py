"""``verify_webhook``: every bad signature is an AuthError, a bad secret a ConfigurationError."""

from __future__ import annotations

import time

import pytest

from kling_cost import AuthError, ConfigurationError
from kling_cost.kling import sign_webhook, verify_webhook

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


@pytest.mark.parametrize("stamp", ["١٧٠٠٠٠٠٠٠٠", "1e9", "nan", "9" * 5000, " "])
def test_a_timestamp_that_is_not_a_plain_number_is_an_auth_error(stamp: str) -> None:
    headers = {**signed(), "webhook-timestamp": stamp}
    with pytest.raises(AuthError):
        verify_webhook(SECRET, headers, BODY)


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
