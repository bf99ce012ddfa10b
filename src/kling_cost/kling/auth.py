"""Kling authentication: a JWT signed with the secret key (cached, renewed early), or an API key."""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Protocol

import jwt

from ..errors import ConfigurationError, MissingCredentials

__all__ = ["ApiKeyAuth", "Auth", "JWTAuth", "claims_problem", "resolve_auth"]

TOKEN_TTL = 1800
"""Kling's token lifetime: ``exp = now + 1800``."""

NOT_BEFORE_SKEW = 5
"""``nbf = now - 5``, so a server clock slightly behind ours still accepts the token."""


class Auth(Protocol):
    """Something that produces the ``Authorization`` header value."""

    def authorization(self) -> str: ...


class ApiKeyAuth:
    """The single-API-key mode: ``Authorization: Bearer <key>``."""

    def __init__(self, api_key: str) -> None:
        if not api_key:
            raise ConfigurationError("the Kling API key is empty")
        self._api_key = api_key

    def authorization(self) -> str:
        return f"Bearer {self._api_key}"

    def __repr__(self) -> str:
        return "ApiKeyAuth(api_key=***)"


class JWTAuth:
    """HS256 JWTs per Kling's rules (``iss`` = access key, ``exp`` = now + ttl, ``nbf`` = now - 5).

    A token is reused until ``refresh_margin`` seconds before it expires, then a new one is
    signed. Thread-safe; ``clock`` returns Unix seconds (injectable for tests).
    """

    def __init__(
        self,
        access_key: str,
        secret_key: str,
        *,
        ttl: int = TOKEN_TTL,
        refresh_margin: int = 60,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not access_key or not secret_key:
            raise ConfigurationError("both the Kling access key and secret key are needed")
        if ttl <= 0 or not 0 <= refresh_margin < ttl:
            raise ConfigurationError(
                f"token ttl {ttl} must be positive and refresh_margin {refresh_margin} in [0, ttl)"
            )
        self.access_key = access_key
        self._secret_key = secret_key
        self.ttl = ttl
        self.refresh_margin = refresh_margin
        self._clock = clock
        self._lock = threading.Lock()
        self._token: str | None = None
        self._expires_at = 0

    def token(self) -> str:
        """The current token, signing a new one if the cached one is near its expiry."""
        with self._lock:
            now = int(self._clock())
            if self._token is None or now >= self._expires_at - self.refresh_margin:
                self._expires_at = now + self.ttl
                claims = {"iss": self.access_key, "exp": self._expires_at, "nbf": now - NOT_BEFORE_SKEW}
                self._token = jwt.encode(claims, self._secret_key, algorithm="HS256", headers={"typ": "JWT"})
            return self._token

    @property
    def expires_at(self) -> int:
        """Unix seconds at which the cached token expires (0 before the first one)."""
        return self._expires_at

    def authorization(self) -> str:
        return f"Bearer {self.token()}"

    def __repr__(self) -> str:
        return f"JWTAuth(access_key={self.access_key!r}, secret_key=***)"


def resolve_auth(
    access_key: str | None = None,
    secret_key: str | None = None,
    api_key: str | None = None,
    *,
    token_ttl: int = TOKEN_TTL,
    token_refresh_margin: int = 60,
) -> Auth:
    """Credentials from arguments, else ``KLING_ACCESS_KEY``/``KLING_SECRET_KEY``, else ``KLING_API_KEY``.

    Arguments win over the environment; an access/secret pair wins over an API key.
    """
    if api_key and not (access_key or secret_key):
        return ApiKeyAuth(api_key)
    ak = access_key or os.environ.get("KLING_ACCESS_KEY")
    sk = secret_key or os.environ.get("KLING_SECRET_KEY")
    if ak and sk:
        return JWTAuth(ak, sk, ttl=token_ttl, refresh_margin=token_refresh_margin)
    if ak or sk:
        raise MissingCredentials(
            "a Kling access key needs its secret key (and the other way round): "
            "give both, or set KLING_ACCESS_KEY and KLING_SECRET_KEY",
            missing=("KLING_SECRET_KEY",) if ak else ("KLING_ACCESS_KEY",),
        )
    key = api_key or os.environ.get("KLING_API_KEY")
    if key:
        return ApiKeyAuth(key)
    raise MissingCredentials(
        "no Kling credentials: pass access_key and secret_key (or api_key), "
        "or set KLING_ACCESS_KEY and KLING_SECRET_KEY (or KLING_API_KEY)",
        missing=("KLING_ACCESS_KEY", "KLING_SECRET_KEY"),
    )


def _numeric_date(value: object) -> bool:
    """An int or a finite float; not a bool, a string, null or NaN."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, float) and math.isfinite(value)


def claims_problem(claims: Mapping[str, object], now: float) -> tuple[int, str] | None:
    """What Kling answers a signed JWT's time claims at ``now`` (Unix seconds), server side:
    ``(1002, ...)`` an ``exp``/``nbf``/``iat`` that is not a finite number of seconds (RFC 7519
    NumericDate), ``(1003, ...)`` not yet valid, ``(1004, ...)`` expired; None when valid.
    ``exp`` must be present (the caller's decoder requires it). Shared by the simulator and the
    proxy, so both judge a token the same way."""
    for name in ("exp", "nbf", "iat"):
        if name in claims and not _numeric_date(claims[name]):
            return 1002, f"token is invalid: {name} must be a number of seconds"
    nbf = claims.get("nbf")
    if isinstance(nbf, (int, float)) and now < nbf:
        return 1003, "token is not yet valid"
    exp = claims.get("exp")
    if not isinstance(exp, (int, float)) or now >= exp:
        return 1004, "token has expired"
    return None
