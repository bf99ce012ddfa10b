"""Kling's authentication, server side: HS256 JWTs signed with the secret key, or API keys."""

from __future__ import annotations

from collections.abc import Callable

import jwt

from ..kling.auth import claims_problem
from .errors import SimError

__all__ = ["Authenticator"]


class Authenticator:
    """Checks ``Authorization: Bearer ...`` like Kling: 1001 empty, 1002 invalid (bad signature,
    issuer or algorithm; ``exp``, ``nbf`` or ``iat`` not a finite number, e.g. a string), 1003 not
    yet valid, 1004 expired. ``clock`` gives Unix seconds (the real time unless a test injects one).

    New-standard paths take the API key only (``api_key_only``): an AK/SK token there is refused
    with 1000 (authentication failed), whether or not it is valid; anything else unknown is 1002.
    :meth:`check` answers who called: the API key's name, or the access key of a token."""

    def __init__(
        self,
        access_key: str,
        secret_key: str,
        api_keys: tuple[str, ...],
        clock: Callable[[], float],
        key_names: tuple[str, ...] = (),
    ) -> None:
        self.access_key = access_key
        self.secret_key = secret_key
        self.api_keys = api_keys
        self.clock = clock
        self.key_names = key_names

    def name_of(self, api_key: str) -> str:
        index = self.api_keys.index(api_key)
        return self.key_names[index] if index < len(self.key_names) else f"api-key-{index + 1}"

    def check(self, header: str | None, *, api_key_only: bool = False) -> str:
        if not header or not header.strip():
            raise SimError(1001, "Authorization header is empty")
        scheme, _, token = header.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise SimError(1002, "Authorization must be 'Bearer <token>'")
        if token in self.api_keys:
            return self.name_of(token)
        if api_key_only:
            if token.count(".") == 2:
                raise SimError(
                    1000,
                    "authentication failed: this API takes the API key (Bearer <API_KEY>), "
                    "not an AK/SK token",
                )
            raise SimError(1002, "the API key is invalid")
        try:
            header_fields = jwt.get_unverified_header(token)
            claims = jwt.decode(
                token,
                self.secret_key,
                algorithms=["HS256"],
                options={"verify_exp": False, "verify_nbf": False, "require": ["iss", "exp"]},
            )
        except jwt.InvalidSignatureError:
            raise SimError(1002, "token signature is invalid") from None
        except jwt.PyJWTError as exc:
            raise SimError(1002, f"token is invalid: {exc}") from None
        if header_fields.get("alg") != "HS256":
            raise SimError(1002, "token must be signed with HS256")
        if claims.get("iss") != self.access_key:
            raise SimError(1002, "token issuer is not a known access key")
        problem = claims_problem(claims, self.clock())
        if problem is not None:
            raise SimError(*problem)
        return self.access_key
