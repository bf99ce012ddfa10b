"""Virtual keys: issued once, stored without their secrets, checked on every request.

A key has three credentials, printed once by ``kling-cost keys create``:

* an **access key** (public: the JWT's ``iss``) and a **secret key** (signs Kling's HS256
  JWT). The secret is never stored: it is derived from the proxy's **master key**,
  ``HMAC-SHA256(master, "kling-cost/sk/v1" | access key | salt)``, so a copy of the ledger
  alone cannot sign a token. Every proxy process must have the same master key.
* an **API key** (bearer, ``kc-...``): stored as its SHA-256 only (it is 256 random bits, so
  a fast hash is enough; nothing can be guessed from it).
* a **webhook secret** (``whsec_...``, derived like the secret key) that signs the callbacks
  the proxy relays to the key's client, Standard-Webhooks style.

The master key comes from ``KLING_COST_MASTER_KEY`` (at least 32 characters), else from the
file ``KLING_COST_MASTER_KEY_FILE`` names, else from ``master.key`` in the user's config
directory, created on first use with mode 0600 (a key file any other user can read is refused).
Rotating a key changes all three credentials at once; revoking it or its expiry refuses it on
the next request, on every proxy process (nothing is cached).

Answers to a refused ``Authorization``, as Kling's (HTTP 401): 1001 empty; 1002 invalid (not
``Bearer``, an unknown API key or access key, a bad signature, another algorithm than HS256, no
``exp``, a claim that is not a number of seconds); 1003 ``nbf`` in the future; 1004 ``exp``
passed, and also a key past its ``--expires``; 1000 (authentication failed) a revoked key, and a
JWT on a path that takes only the API key (the new standard's).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import os
import re
import secrets
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from ..budgets import validate_scope
from ..errors import AuthError, ConfigurationError, ValidationError
from ..kling.auth import claims_problem
from ..ledger import Ledger
from ..ledger.limits import BudgetRequest, budget_request
from ..ledger.proxy_store import KeyRecord, refused_key
from ..money import parse_amount
from ..text import bad_text

__all__ = [
    "ENV_MASTER_KEY",
    "ENV_MASTER_KEY_FILE",
    "IssuedKey",
    "KeyBudget",
    "KeyRecord",
    "KeySpec",
    "Keys",
    "MasterKey",
    "api_key_hash",
    "key_spec",
    "known_models",
    "parse_budget",
    "parse_expiry",
    "validate_key_name",
]

ENV_MASTER_KEY = "KLING_COST_MASTER_KEY"
ENV_MASTER_KEY_FILE = "KLING_COST_MASTER_KEY_FILE"
MIN_MASTER_LENGTH = 32
API_KEY_PREFIX = "kc-"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}")
UNITS = ("units", "credits")
_EXPIRY = re.compile(r"([0-9]{1,6})([dhm])")
_EXPIRY_UNITS = {"d": "days", "h": "hours", "m": "minutes"}
MAX_EXPIRY = timedelta(days=3650)
"""The furthest ``--expires`` reaches (ten years; a key for longer needs no expiry)."""
_HOST = re.compile(r"[A-Za-z0-9._-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\]")


def api_key_hash(api_key: str) -> str:
    """How a bearer key is stored and looked up."""
    return hashlib.sha256(api_key.encode("utf-8", "surrogatepass")).hexdigest()


def _default_key_file() -> Path:
    import platformdirs

    return Path(platformdirs.user_config_dir("kling-cost", appauthor=False)) / "master.key"


class MasterKey:
    """The secret every virtual key's secrets are derived from."""

    def __init__(self, secret: bytes, source: str) -> None:
        if len(secret) < MIN_MASTER_LENGTH:
            raise ConfigurationError(
                f"the master key from {source} is shorter than {MIN_MASTER_LENGTH} characters; "
                'make one with: python -c "import secrets; print(secrets.token_urlsafe(32))"'
            )
        self._secret = secret
        self.source = source

    @classmethod
    def load(cls, *, create: bool = True) -> MasterKey:
        """From ``KLING_COST_MASTER_KEY``, else the file ``KLING_COST_MASTER_KEY_FILE`` names
        (it must exist), else the default key file (created 0600 when missing and ``create``)."""
        value = os.environ.get(ENV_MASTER_KEY, "").strip()  # a trailing newline is not part of it
        if value:
            return cls(value.encode(), ENV_MASTER_KEY)
        named = os.environ.get(ENV_MASTER_KEY_FILE)
        if named:  # a named file is never made up: a typo would sign with a new master key
            if not Path(named).exists():
                raise ConfigurationError(
                    f"{ENV_MASTER_KEY_FILE} names {named}, which does not exist; fix the path, or "
                    f"unset {ENV_MASTER_KEY_FILE} to use (and on first use create) {_default_key_file()}"
                )
            return cls.from_file(Path(named), create=False)
        return cls.from_file(_default_key_file(), create=create)

    @classmethod
    def from_file(cls, path: Path, *, create: bool = True) -> MasterKey:
        try:
            if create and not path.exists():
                _create_key_file(path)
            mode = path.stat().st_mode
            if mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise ConfigurationError(
                    f"master key file {path} can be read by other users; run: chmod 600 {path}"
                )
            text = path.read_text().strip()
        except FileNotFoundError:
            raise ConfigurationError(
                f"no master key: set {ENV_MASTER_KEY} or create the key file {path}"
            ) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigurationError(f"cannot read master key file {path}: {exc}") from exc
        return cls(text.encode(), str(path))

    @property
    def fingerprint(self) -> str:
        """A short, one-way tag of the master key (say which key a proxy runs with, safely)."""
        return hashlib.sha256(b"kling-cost/fingerprint/v1\0" + self._secret).hexdigest()[:12]

    def derive(self, purpose: str, access_key: str, salt: str) -> bytes:
        message = f"kling-cost/{purpose}/v1\0{access_key}\0{salt}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).digest()

    def secret_key(self, record: KeyRecord) -> str:
        """The secret key that signs ``record``'s JWTs."""
        return _b64(self.derive("sk", record.access_key, record.salt))

    def webhook_secret(self, record: KeyRecord) -> str:
        """The ``whsec_`` secret the relayed callbacks of ``record`` are signed with."""
        raw = self.derive("whsec", record.access_key, record.salt)
        return "whsec_" + base64.b64encode(raw).decode()

    def __repr__(self) -> str:
        return f"<MasterKey from {self.source}>"


def _create_key_file(path: Path) -> None:
    """A new master key at ``path``, mode 0600, appearing whole: written to a private temporary
    file, then linked into place (a process starting at the same moment reads either no file or
    the whole key, never an empty one; the first link wins, the other is dropped)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = secrets.token_urlsafe(32) + "\n"
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    try:
        _write_new(temporary, key)
        try:
            os.link(temporary, path)
        except FileExistsError:
            return  # another process made it first: read theirs
        except OSError:  # a file system without hard links: create it in place
            with contextlib.suppress(FileExistsError):
                _write_new(path, key)
    finally:
        temporary.unlink(missing_ok=True)


def _write_new(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
        out.flush()
        os.fsync(out.fileno())


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@dataclass(frozen=True)
class IssuedKey:
    """A key's credentials, as printed once at creation or rotation."""

    record: KeyRecord
    access_key: str
    secret_key: str
    api_key: str
    webhook_secret: str

    def to_dict(self, now: datetime) -> dict[str, Any]:
        return {
            **self.record.to_dict(now),
            "access_key": self.access_key,
            "secret_key": self.secret_key,
            "api_key": self.api_key,
            "webhook_secret": self.webhook_secret,
        }


def _new_credentials() -> tuple[str, str, str]:
    access_key = "kcak" + secrets.token_hex(14)
    api_key = API_KEY_PREFIX + secrets.token_urlsafe(32)
    return access_key, api_key, secrets.token_hex(16)


def validate_key_name(name: object) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValidationError(
            f"key name {name!r} is not valid: 1-64 letters, digits or ._@+- , starting with a letter or digit"
        )
    return name


@dataclass(frozen=True)
class KeyBudget:
    """A budget set on a key's own scope when it is created: ``limit`` per ``window`` (day,
    week, month or lifetime) in the key's unit, windows cut in ``tz``."""

    limit: Decimal | int | str
    window: str
    tz: str = "UTC"


def parse_budget(text: str, tz: str = "UTC") -> KeyBudget:
    """``AMOUNT/WINDOW`` (``50/day``, ``1000/month``, ``20.5/lifetime``) as a :class:`KeyBudget`;
    the amount and window are checked when the key is created."""
    amount, slash, window = text.strip().partition("/")
    if not slash or not amount.strip() or not window.strip():
        raise ValidationError(
            f"budget {text!r} is not AMOUNT/WINDOW; use e.g. 50/day (window: day, week, month or lifetime)"
        )
    return KeyBudget(amount.strip(), window.strip(), tz)


def parse_expiry(text: str) -> timedelta:
    """``Nd``, ``Nh`` or ``Nm`` (days, hours, minutes from now): ``30d``, ``12h``, ``90m``."""
    match = _EXPIRY.fullmatch(text.strip())
    if match is None:
        raise ValidationError(
            f"expiry {text!r} is not a duration; use Nd, Nh or Nm (days, hours, minutes), e.g. 30d"
        )
    count = int(match.group(1))
    span = timedelta(**{_EXPIRY_UNITS[match.group(2)]: count})
    if count < 1 or span > MAX_EXPIRY:
        raise ValidationError(f"expiry {text!r} must be at least 1 and at most {MAX_EXPIRY.days}d")
    return span


def known_models() -> tuple[str, ...]:
    """Every model id the shipped catalogs know, legacy (``kling-v2-6``) and new-standard
    (``kling-3.0``) alike, sorted: what a key's model list may name."""
    from ..pricing import BUILTIN_CATALOGS, NEW_FAMILIES, load_catalog

    found: set[str] = set()
    for name in BUILTIN_CATALOGS:
        for models in load_catalog(name).models.values():
            found.update(models)
    for _kind, models in NEW_FAMILIES.values():
        found.update(models)
    return tuple(sorted(found))


def _models(models: Iterable[str] | None) -> list[str] | None:
    if models is None:
        return None
    wanted = sorted({m.strip() for m in models if isinstance(m, str) and m.strip()})
    if not wanted:
        raise ValidationError("the model list is empty; name at least one model, or none for every model")
    known = known_models()
    unknown = [m for m in wanted if m not in known]
    if unknown:
        raise ValidationError(
            f"unknown model{'s' if len(unknown) > 1 else ''} {', '.join(repr(m) for m in unknown)}; "
            f"known: {', '.join(known)}"
        )
    return wanted


def _hosts(hosts: Iterable[str]) -> list[str]:
    clean = set()
    for host in hosts:
        value = host.strip().lower() if isinstance(host, str) else host
        if not isinstance(value, str) or not _HOST.fullmatch(value):
            raise ValidationError(
                f"callback host {host!r} is not a host name or address (no scheme, port or path): "
                "e.g. hooks.internal or 10.0.0.5"
            )
        clean.add(value)
    return sorted(clean)


@dataclass(frozen=True)
class KeySpec:
    """A key as :func:`key_spec` checked it, ready for :meth:`Keys.issue`."""

    name: str
    scopes: tuple[str, ...]
    unit: str
    max_per_request: Decimal | None
    models: tuple[str, ...] | None
    concurrency: int | None
    callback_hosts: tuple[str, ...]
    expires_in: timedelta | None
    budgets: tuple[BudgetRequest, ...]


def key_spec(
    name: str,
    *,
    scopes: Sequence[str] = (),
    unit: str = "units",
    max_per_request: Decimal | int | str | None = None,
    models: Sequence[str] | None = None,
    concurrency: int | None = None,
    callback_hosts: Sequence[str] = (),
    expires_in: timedelta | None = None,
    budgets: Sequence[KeyBudget] = (),
) -> KeySpec:
    """Check a new key's settings without touching a ledger; raises :class:`ValidationError`.

    ``scopes``: what its creates reserve on besides ``key:<name>`` and ``account``; ``unit``:
    ``units`` or ``credits``, of its reservations and budgets; ``models``: the model ids it
    may use (:func:`known_models`; ``None``: every model); ``concurrency``: tasks open at once;
    ``callback_hosts``: callback hosts allowed although private; ``budgets``: on its own scope.
    """
    validate_key_name(name)
    if isinstance(scopes, str):
        scopes = [scopes]
    own = f"key:{name}"
    clean = tuple(sorted({validate_scope(s) for s in scopes} - {"account", own}))
    if unit not in UNITS:
        raise ValidationError(f"unit {unit!r} is not valid; use units or credits")
    limit = None if max_per_request is None else parse_amount(max_per_request, what="max per request")
    if concurrency is not None and (
        isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1
    ):
        raise ValidationError(f"concurrency {concurrency!r} is not valid; it must be at least 1")
    if expires_in is not None and expires_in <= timedelta(0):
        raise ValidationError("expiry must be in the future")
    allowed = _models(models)
    hosts = _hosts(callback_hosts)
    wanted = tuple(_budget(own, b, unit) for b in budgets)
    windows = [b.window for b in wanted]
    repeated = sorted({w for w in windows if windows.count(w) > 1})
    if repeated:
        raise ValidationError(f"more than one {repeated[0]} budget given; give one budget per window")
    return KeySpec(
        name=name,
        scopes=clean,
        unit=unit,
        max_per_request=limit,
        models=None if allowed is None else tuple(allowed),
        concurrency=concurrency,
        callback_hosts=tuple(hosts),
        expires_in=expires_in,
        budgets=wanted,
    )


def _budget(scope: str, budget: KeyBudget, unit: str) -> BudgetRequest:
    try:
        return budget_request(scope, budget.limit, budget.window, budget.tz, None, None, unit, True)
    except ValidationError as exc:
        raise ValidationError(f"budget {budget.limit}/{budget.window}: {exc}") from None


class Keys:
    """Create, rotate, revoke and check virtual keys in a ledger."""

    def __init__(self, ledger: Ledger, master: MasterKey) -> None:
        self.ledger = ledger
        self.master = master
        self.store = ledger.proxy

    def _issue(self, record: KeyRecord, api_key: str) -> IssuedKey:
        return IssuedKey(
            record=record,
            access_key=record.access_key,
            secret_key=self.master.secret_key(record),
            api_key=api_key,
            webhook_secret=self.master.webhook_secret(record),
        )

    def create(
        self,
        name: str,
        *,
        scopes: Sequence[str] = (),
        unit: str = "units",
        max_per_request: Decimal | int | str | None = None,
        models: Sequence[str] | None = None,
        concurrency: int | None = None,
        callback_hosts: Sequence[str] = (),
        expires_in: timedelta | None = None,
        budgets: Sequence[KeyBudget] = (),
    ) -> IssuedKey:
        """A new key, and its ``budgets`` on its own scope ``key:<name>`` in its ``unit``
        (:func:`key_spec` checks the arguments; :meth:`issue` writes it)."""
        return self.issue(
            key_spec(
                name,
                scopes=scopes,
                unit=unit,
                max_per_request=max_per_request,
                models=models,
                concurrency=concurrency,
                callback_hosts=callback_hosts,
                expires_in=expires_in,
                budgets=budgets,
            )
        )

    def issue(self, spec: KeySpec) -> IssuedKey:
        """Write a checked key and its budgets, in one transaction: all of it or nothing
        (:class:`ValidationError` if its name was ever used)."""
        access_key, api_key, salt = _new_credentials()
        record = self.store.add_key(
            name=spec.name,
            access_key=access_key,
            api_key_hash=api_key_hash(api_key),
            salt=salt,
            scopes=spec.scopes,
            unit=spec.unit,
            max_per_request=spec.max_per_request,
            models=spec.models,
            concurrency=spec.concurrency,
            callback_hosts=spec.callback_hosts,
            expires_in=spec.expires_in,
            budgets=spec.budgets,
        )
        return self._issue(record, api_key)

    def rotate(self, name: str) -> IssuedKey:
        access_key, api_key, salt = _new_credentials()
        record = self.store.rotate(name, access_key=access_key, api_key_hash=api_key_hash(api_key), salt=salt)
        return self._issue(record, api_key)

    def revoke(self, name: str) -> KeyRecord:
        return self.store.revoke(name)

    def get(self, name: str) -> KeyRecord:
        found = self.store.key(name)
        if found is None:
            raise ValidationError(f"no key named {name!r}; see kling-cost keys list")
        return found

    def list(self) -> list[KeyRecord]:
        return self.store.keys()

    # -- authentication -----------------------------------------------------------------------

    def authenticate(
        self,
        authorization: str | None,
        *,
        now: datetime,
        jwt_now: datetime | None = None,
        jwt_allowed: bool = True,
    ) -> KeyRecord:
        """The key an ``Authorization`` header stands for, as Kling checks it: raises
        :class:`AuthError` with Kling's code (1000 failed, 1001 empty, 1002 invalid, 1003 not
        yet valid, 1004 expired) and HTTP 401. ``now`` decides the key's expiry (the ledger's
        clock); ``jwt_now`` a token's ``exp``/``nbf`` (the wall clock the client signs by)."""
        if not authorization or not authorization.strip():
            raise _auth(1001, "Authorization is empty")
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise _auth(1002, "Authorization is invalid: use 'Bearer <token>'")
        if token.startswith(API_KEY_PREFIX):
            record = self.store.key_by_api_key_hash(api_key_hash(token))
            if record is None:
                raise _auth(1002, "Authorization is invalid: unknown API key")
        elif token.count(".") == 2:
            if not jwt_allowed:
                raise _auth(
                    1000, "authentication failed: this API takes the API key (Bearer <API_KEY>), not a JWT"
                )
            record = self._verify_jwt(token, jwt_now or now)
        else:
            raise _auth(1002, "Authorization is invalid: neither an API key nor a JWT")
        state = record.state(now)
        if state != "active":
            raise refused_key(record.name, state)
        return record

    def _verify_jwt(self, token: str, now: datetime) -> KeyRecord:
        import jwt

        try:
            claims = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise _auth(1002, "Authorization is invalid: malformed JWT") from None
        issuer = claims.get("iss") if isinstance(claims, dict) else None
        if not isinstance(issuer, str) or not issuer:
            raise _auth(1002, "Authorization is invalid: the JWT has no iss (access key)")
        if bad_text(issuer) is not None:  # NUL or a lone surrogate: no stored access key has one
            raise _auth(1002, "Authorization is invalid: unknown access key")
        record = self.store.key_by_access_key(issuer)
        if record is None:
            raise _auth(1002, "Authorization is invalid: unknown access key")
        try:
            header = jwt.get_unverified_header(token)
            jwt.decode(
                token,
                self.master.secret_key(record),
                algorithms=["HS256"],
                options={"require": ["exp"], "verify_exp": False, "verify_nbf": False, "verify_iat": False},
            )
        except jwt.PyJWTError:
            raise _auth(1002, "Authorization is invalid: bad JWT signature or claims") from None
        if header.get("alg") != "HS256":
            raise _auth(1002, "Authorization is invalid: the JWT must be signed with HS256")
        problem = claims_problem(claims, now.timestamp())
        if problem is not None:
            raise _auth(*problem)
        return record


def _auth(code: int, message: str) -> AuthError:
    return AuthError(message, code=code, http_status=401)
