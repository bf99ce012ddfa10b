"""Virtual keys of the proxy on both backends: issue, authenticate as Kling does, revoke, expire,
rotate, the master key, and the task claims that hold a key's concurrency (issue 15)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import stat
import threading
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import jwt
import pytest

from kling_cost.errors import (
    AuthError,
    ConcurrencyLimited,
    ConfigurationError,
    InvalidRequest,
    KlingCostError,
    ValidationError,
)
from kling_cost.kling.auth import JWTAuth
from kling_cost.ledger import Ledger
from kling_cost.ledger.proxy_store import CLAIM_GRACE, KeyRecord
from kling_cost.proxy.keys import (
    ENV_MASTER_KEY,
    ENV_MASTER_KEY_FILE,
    IssuedKey,
    KeyBudget,
    Keys,
    MasterKey,
    api_key_hash,
    known_models,
    parse_budget,
    parse_expiry,
)
from tests.helpers import FakeClock

MASTER = "m" * 24 + "-master-key-for-tests-0123456789"


@pytest.fixture
def keys(ledger: Ledger) -> Keys:
    return Keys(ledger, MasterKey(MASTER.encode(), "tests"))


def signed(issued: IssuedKey, clock: FakeClock, **claims: Any) -> str:
    """A header as Kling's own client signs it (iss = AK, exp = now + 1800, nbf = now - 5),
    or, given ``claims``, a token with those claims changed (``None`` drops one)."""
    if not claims:
        auth = JWTAuth(issued.access_key, issued.secret_key, clock=lambda: clock().timestamp())
        return auth.authorization()
    now = int(clock().timestamp())
    body: dict[str, Any] = {"iss": issued.access_key, "exp": now + 1800, "nbf": now - 5}
    secret = claims.pop("secret", issued.secret_key)
    body.update(claims)
    body = {k: v for k, v in body.items() if v is not None}
    return "Bearer " + jwt.encode(body, secret, algorithm="HS256")


_DIGESTS = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}


def hand_signed(payload: str, secret: str, alg: str = "HS256") -> str:
    """A JWT signed here from raw JSON text: claims PyJWT will not write (a number as ``iss``,
    NaN), or an algorithm whose recommended key length would make PyJWT warn."""

    def b64(raw: bytes) -> bytes:
        return base64.urlsafe_b64encode(raw).rstrip(b"=")

    head = b64(json.dumps({"alg": alg, "typ": "JWT"}).encode()) + b"." + b64(payload.encode())
    mac = hmac.new(secret.encode(), head, _DIGESTS[alg]).digest()
    return "Bearer " + (head + b"." + b64(mac)).decode()


def refused(code: int, call: Callable[[], object]) -> AuthError:
    with pytest.raises(AuthError) as info:
        call()
    assert info.value.code == code, str(info.value)
    assert info.value.http_status == 401
    return info.value


# -- creating and authenticating ---------------------------------------------------------------


def test_create_then_authenticate_by_api_key_and_by_kling_jwt(keys: Keys, clock: FakeClock) -> None:
    issued = keys.create("film-bot", scopes=["project:film", "user:bob", "account"], concurrency=3)
    assert issued.api_key.startswith("kc-") and issued.webhook_secret.startswith("whsec_")
    assert issued.record.all_scopes == ("key:film-bot", "project:film", "user:bob")
    assert issued.record.state(clock()) == "active"
    by_bearer = keys.authenticate(f"Bearer {issued.api_key}", now=clock())
    by_jwt = keys.authenticate(signed(issued, clock), now=clock())
    assert by_bearer.id == by_jwt.id == issued.record.id
    assert keys.authenticate(f"bearer   {issued.api_key}  ", now=clock()).name == "film-bot"
    # a token Kling's client signed a while ago, still inside its 30 minutes
    header = signed(issued, clock)
    clock.advance(minutes=29)
    assert keys.authenticate(header, now=clock()).name == "film-bot"
    clock.advance(minutes=1)
    refused(1004, lambda: keys.authenticate(header, now=clock()))


def test_to_dict_has_no_secret_but_the_issued_credentials_do(keys: Keys, clock: FakeClock) -> None:
    issued = keys.create("k1", scopes=["project:film"], max_per_request="10", models=["kling-3.0"])
    shown = issued.record.to_dict(clock())
    assert shown["max_per_request"] == "10.000" and shown["models"] == ["kling-3.0"]
    assert not {"secret_key", "api_key", "webhook_secret", "api_key_hash", "salt"} & set(shown)
    full = issued.to_dict(clock())
    assert (full["secret_key"], full["api_key"]) == (issued.secret_key, issued.api_key)


@pytest.mark.parametrize("header", [None, "", "   "])
def test_1001_empty_authorization(keys: Keys, clock: FakeClock, header: str | None) -> None:
    keys.create("k1")
    refused(1001, lambda: keys.authenticate(header, now=clock()))


def test_1002_invalid_authorization(keys: Keys, clock: FakeClock) -> None:
    issued = keys.create("k1")
    other = keys.create("k2")
    now = int(clock().timestamp())
    good_sk = issued.secret_key
    assert (
        keys.authenticate(  # the hand-signed tokens below differ from this one in one thing only
            hand_signed(f'{{"iss":"{issued.access_key}","exp":{now + 1800}}}', good_sk), now=clock()
        ).name
        == "k1"
    )
    headers = [
        "Basic dXNlcjpwYXNz",
        "Bearer",
        "Bearer garbage",
        "Bearer a.b.c",
        "Bearer kc-" + "x" * 43,  # a well-formed API key nobody was issued
        issued.api_key,  # no scheme
        f"Token {issued.api_key}",
        signed(issued, clock, iss="kcak-unknown"),
        signed(issued, clock, iss=None),
        hand_signed(f'{{"iss":12,"exp":{now + 1800}}}', good_sk),
        hand_signed(f'{{"iss":"{issued.access_key}","exp":{now + 1800}}}', good_sk, "HS512"),
        hand_signed(f'{{"iss":"{issued.access_key}","exp":{now + 1800}}}', good_sk, "HS384"),
        hand_signed(f'["{issued.access_key}"]', good_sk),  # not an object
        signed(issued, clock, secret="s" * 40),  # a bad signature
        signed(issued, clock, secret=other.secret_key),  # another key's secret
        signed(issued, clock, exp=None),  # no exp
        signed(issued, clock, exp="tomorrow"),  # exp not a number
        signed(issued, clock, exp=str(now + 1800)),
        signed(issued, clock, exp=True),
        signed(issued, clock, nbf="now"),
        signed(issued, clock, iat="now"),
    ]
    unsigned = jwt.encode({"iss": issued.access_key, "exp": now + 1800}, None, algorithm="none")
    headers.append(f"Bearer {unsigned}")
    tampered = signed(issued, clock).split(".")
    tampered[1] = jwt.utils.base64url_encode(  # type: ignore[attr-defined]
        f'{{"iss":"{issued.access_key}","exp":{now + 99999}}}'.encode()
    ).decode()
    headers.append(".".join(tampered))
    for header in headers:
        error = refused(1002, lambda h=header: keys.authenticate(h, now=clock()))  # type: ignore[misc]
        assert good_sk not in str(error) and issued.api_key not in str(error)


def test_1002_non_finite_numbers_in_claims(keys: Keys, clock: FakeClock) -> None:
    """Python's JSON reads NaN and Infinity; a NumericDate is a finite number."""
    issued = keys.create("k1")
    for claim in ('"exp":NaN', '"exp":Infinity', '"exp":1e400', '"nbf":NaN'):
        exp = "" if claim.startswith('"exp"') else f',"exp":{int(clock().timestamp()) + 60}'
        payload = f'{{"iss":"{issued.access_key}",{claim}{exp}}}'
        header = hand_signed(payload, issued.secret_key)
        refused(1002, lambda h=header: keys.authenticate(h, now=clock()))  # type: ignore[misc]


def test_1003_not_yet_valid_and_1004_expired(keys: Keys, clock: FakeClock) -> None:
    issued = keys.create("k1")
    now = int(clock().timestamp())
    refused(1003, lambda: keys.authenticate(signed(issued, clock, nbf=now + 60), now=clock()))
    assert keys.authenticate(signed(issued, clock, nbf=now), now=clock()).name == "k1"
    refused(1004, lambda: keys.authenticate(signed(issued, clock, exp=now), now=clock()))
    refused(1004, lambda: keys.authenticate(signed(issued, clock, exp=now - 1), now=clock()))
    assert keys.authenticate(signed(issued, clock, exp=now + 1, nbf=None), now=clock()).name == "k1"


def test_a_jwt_is_refused_where_only_the_api_key_is_taken(keys: Keys, clock: FakeClock) -> None:
    issued = keys.create("k1")
    refused(1000, lambda: keys.authenticate(signed(issued, clock), now=clock(), jwt_allowed=False))
    assert keys.authenticate(f"Bearer {issued.api_key}", now=clock(), jwt_allowed=False).name == "k1"


# -- revoke, expire, rotate ----------------------------------------------------------------------


def test_revoked_key_is_refused_on_the_next_call_with_1000(
    ledger: Ledger, keys: Keys, clock: FakeClock
) -> None:
    issued = keys.create("k1")
    record = keys.authenticate(f"Bearer {issued.api_key}", now=clock())
    header = signed(issued, clock)
    # another process (another Keys on the same ledger) revokes it: nothing is cached
    Keys(ledger, MasterKey(MASTER.encode(), "other process")).revoke("k1")
    refused(1000, lambda: keys.authenticate(f"Bearer {issued.api_key}", now=clock()))
    refused(1000, lambda: keys.authenticate(header, now=clock()))
    # a create authenticated just before the revocation is refused when it claims its task
    refused(1000, lambda: ledger.proxy.claim_task(record, "ext-1", "/v1/videos/text2video", None))
    first = keys.get("k1").revoked_at
    clock.advance(minutes=5)
    assert keys.revoke("k1").revoked_at == first  # revoking twice keeps the first time
    assert keys.get("k1").state(clock()) == "revoked"
    with pytest.raises(ValidationError, match="revoked"):
        keys.rotate("k1")


def test_expired_key_is_refused_with_1004(ledger: Ledger, keys: Keys, clock: FakeClock) -> None:
    issued = keys.create("k1", expires_in=parse_expiry("2h"))
    record = keys.authenticate(f"Bearer {issued.api_key}", now=clock())
    assert record.expires_at == clock() + timedelta(hours=2)
    clock.advance(hours=1, minutes=59)
    assert keys.authenticate(signed(issued, clock), now=clock()).name == "k1"
    clock.advance(minutes=1)
    refused(1004, lambda: keys.authenticate(f"Bearer {issued.api_key}", now=clock()))
    refused(1004, lambda: keys.authenticate(signed(issued, clock), now=clock()))
    refused(1004, lambda: ledger.proxy.claim_task(record, "ext-1", "/v1/videos/text2video", None))
    assert keys.get("k1").state(clock()) == "expired"
    with pytest.raises(ValidationError, match="expired"):
        keys.rotate("k1")


def test_rotate_refuses_every_old_credential_and_accepts_the_new(keys: Keys, clock: FakeClock) -> None:
    old = keys.create("k1", scopes=["project:film"])
    old_jwt = signed(old, clock)
    new = keys.rotate("k1")
    assert new.record.id == old.record.id and new.record.rotated_at == clock()
    assert new.record.scopes == ("project:film",)
    assert {new.access_key, new.secret_key, new.api_key, new.webhook_secret}.isdisjoint(
        {old.access_key, old.secret_key, old.api_key, old.webhook_secret}
    )
    refused(1002, lambda: keys.authenticate(f"Bearer {old.api_key}", now=clock()))
    refused(1002, lambda: keys.authenticate(old_jwt, now=clock()))
    refused(1002, lambda: keys.authenticate(signed(old, clock), now=clock()))
    # the old secret with the new access key: a bad signature
    mixed = IssuedKey(new.record, new.access_key, old.secret_key, new.api_key, new.webhook_secret)
    refused(1002, lambda: keys.authenticate(signed(mixed, clock), now=clock()))
    assert keys.authenticate(f"Bearer {new.api_key}", now=clock()).name == "k1"
    assert keys.authenticate(signed(new, clock), now=clock()).name == "k1"
    with pytest.raises(ValidationError, match="no key named 'nope'"):
        keys.rotate("nope")


def test_a_name_is_never_reused(keys: Keys) -> None:
    keys.create("k1")
    with pytest.raises(ValidationError, match="exists"):
        keys.create("k1")
    keys.revoke("k1")
    with pytest.raises(ValidationError, match="revoked keys keep their name"):
        keys.create("k1")
    assert [k.name for k in keys.list()] == ["k1"]


def test_concurrent_creates_of_one_name_make_one_key(keys: Keys) -> None:
    results: list[object] = []
    barrier = threading.Barrier(6)

    def create() -> None:
        barrier.wait()
        try:
            results.append(keys.create("same"))
        except KlingCostError as exc:
            results.append(exc)

    threads = [threading.Thread(target=create) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(isinstance(r, IssuedKey) for r in results) == 1
    assert all(isinstance(r, (IssuedKey, ValidationError)) for r in results), results
    assert len(keys.list()) == 1


# -- what create checks --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"name": "bad name"}, "key name"),
        ({"name": "-lead"}, "key name"),
        ({"name": "x" * 65}, "key name"),
        ({"scopes": ["Project:film"]}, "scope"),
        ({"scopes": ["film"]}, "scope"),
        ({"unit": "dollars"}, "unit 'dollars'"),
        ({"max_per_request": "0"}, "greater than zero"),
        ({"max_per_request": "-1"}, "max per request"),
        ({"max_per_request": "0.0001"}, "0.001"),
        ({"concurrency": 0}, "concurrency"),
        ({"models": ["kling-9"]}, "unknown model 'kling-9'"),
        ({"models": []}, "empty"),
        ({"callback_hosts": ["http://evil/"]}, "callback host"),
        ({"expires_in": timedelta(0)}, "future"),
        ({"budgets": [KeyBudget("0", "day")]}, "greater than zero"),
        ({"budgets": [KeyBudget("5", "fortnight")]}, "window 'fortnight'"),
        ({"budgets": [KeyBudget("5", "day", "Mars/Base")]}, "time zone"),
        ({"budgets": [KeyBudget("5", "day"), KeyBudget("6", "day")]}, "more than one day budget"),
    ],
)
def test_a_refused_create_writes_nothing(
    ledger: Ledger, keys: Keys, kwargs: dict[str, Any], fragment: str
) -> None:
    given = dict(kwargs)  # the parameters are shared by both backends' runs
    name = given.pop("name", "k1")
    with pytest.raises(ValidationError, match=fragment):
        keys.create(name, **given)
    assert keys.list() == [] and ledger.budgets() == []


def test_budgets_are_set_with_the_key_in_its_unit(ledger: Ledger, keys: Keys) -> None:
    keys.create(
        "k1",
        unit="credits",
        budgets=[parse_budget("50/day"), parse_budget("1000/month", tz="Europe/Paris")],
        models=["kling-3.0", "kling-v2-6", "kling-v2-6"],
        callback_hosts=["Hooks.Internal", "10.0.0.5"],
    )
    budgets = {b.window: b for b in ledger.budgets("key:k1")}
    assert set(budgets) == {"day", "month"}
    assert budgets["day"].limit == Decimal(50) and budgets["day"].unit == "credits"
    assert budgets["month"].tz == "Europe/Paris"
    record = ledger.proxy.key("k1")
    assert record is not None
    assert record.models == ("kling-3.0", "kling-v2-6") and record.callback_hosts == (
        "10.0.0.5",
        "hooks.internal",
    )


def test_a_budget_that_cannot_be_set_leaves_no_key(ledger: Ledger, keys: Keys) -> None:
    """The key and its budgets are one transaction: a budget the ledger refuses (its scope
    already holds spending in another unit) leaves no key behind."""
    ledger.set_budget("key:k1", 100, "day", unit="units")
    ledger.commit(ledger.reserve(5, ["key:k1"]))
    with pytest.raises(ValidationError):
        keys.create("k1", unit="credits", budgets=[KeyBudget("50", "day")])
    assert keys.list() == []
    assert [b.unit for b in ledger.budgets("key:k1")] == ["units"]


def test_parsers() -> None:
    assert parse_expiry("30d") == timedelta(days=30)
    assert parse_expiry(" 12h ") == timedelta(hours=12)
    assert parse_expiry("90m") == timedelta(minutes=90)
    for text in ("0d", "30", "d", "1w", "-1d", "1.5d", "3651d", "30 d"):
        with pytest.raises(ValidationError):
            parse_expiry(text)
    assert parse_budget("50/day") == KeyBudget("50", "day")
    assert parse_budget("2.5/lifetime", tz="Asia/Tokyo") == KeyBudget("2.5", "lifetime", "Asia/Tokyo")
    for text in ("50", "/day", "50/", "50day"):
        with pytest.raises(ValidationError, match="AMOUNT/WINDOW"):
            parse_budget(text)
    models = known_models()
    assert {"kling-3.0", "kling-v2-6", "kling-3.0-omni", "kling-v1", "kolors-virtual-try-on-v1"} <= set(
        models
    )


# -- what the ledger holds -----------------------------------------------------------------------


def test_a_copy_of_the_ledger_holds_no_secret(ledger: Ledger, keys: Keys, clock: FakeClock) -> None:
    issued = [keys.create("k1", scopes=["project:film"]), keys.create("k2")]
    issued.append(keys.rotate("k2"))
    secrets = {s for i in issued for s in (i.secret_key, i.api_key, i.webhook_secret)}
    with ledger.transaction() as cur:
        cur.execute("SELECT * FROM proxy_keys")
        rows = cur.fetchall()
    assert len(rows) == 2
    values = [str(v) for row in rows for v in row if v is not None]
    for secret in secrets:
        assert all(secret not in v for v in values), secret
    raw = {s.split("_", 1)[-1] for s in secrets}  # the webhook secret without its prefix too
    assert not raw & set(values)
    assert api_key_hash(issued[0].api_key) in values  # the bearer key only as its SHA-256
    # the same ledger with another master key signs nothing the real one accepts, and the other way
    thief = Keys(ledger, MasterKey(b"t" * 40, "a guess"))
    stolen = thief._issue(issued[0].record, "kc-none")
    assert stolen.secret_key != issued[0].secret_key
    refused(1002, lambda: keys.authenticate(signed(stolen, clock), now=clock()))
    refused(1002, lambda: thief.authenticate(signed(issued[0], clock), now=clock()))


# -- the master key ------------------------------------------------------------------------------


def test_master_key_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(ENV_MASTER_KEY, MASTER + "\n")
    master = MasterKey.load()
    assert (
        master.source == ENV_MASTER_KEY and master.fingerprint == MasterKey(MASTER.encode(), "x").fingerprint
    )
    assert MASTER not in repr(master)
    monkeypatch.setenv(ENV_MASTER_KEY, "short")
    with pytest.raises(ConfigurationError, match="shorter than 32"):
        MasterKey.load()
    assert not (Path(os.environ["XDG_CONFIG_HOME"]) / "kling-cost").exists()  # no file made beside it


def test_master_key_file_is_created_0600_on_first_use_and_kept(ledger: Ledger, clock: FakeClock) -> None:
    path = Path(os.environ["XDG_CONFIG_HOME"]) / "kling-cost" / "master.key"
    assert not path.exists()
    with pytest.raises(ConfigurationError, match="no master key"):
        MasterKey.load(create=False)
    first = MasterKey.load()
    assert first.source == str(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(path.read_text().strip()) >= 32
    assert [p.name for p in path.parent.iterdir()] == ["master.key"]  # no temporary file left
    issued = Keys(ledger, first).create("k1")
    again = Keys(ledger, MasterKey.load())  # a later process: the same file, the same secrets
    assert again.authenticate(signed(issued, clock), now=clock()).name == "k1"


def test_master_key_file_made_by_many_processes_at_once_is_one_key(tmp_path: Path) -> None:
    path = tmp_path / "conf" / "master.key"
    found: list[object] = []
    barrier = threading.Barrier(8)

    def load() -> None:
        barrier.wait()
        try:
            found.append(MasterKey.from_file(path).fingerprint)
        except KlingCostError as exc:  # pragma: no cover - the failure this test guards against
            found.append(exc)

    threads = [threading.Thread(target=load) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(found) == 8 and len(set(found)) == 1 and isinstance(found[0], str), found


def test_master_key_file_readable_by_others_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "master.key"
    path.write_text(MASTER + "\n")
    monkeypatch.setenv(ENV_MASTER_KEY_FILE, str(path))
    for mode in (0o640, 0o604, 0o620):
        path.chmod(mode)
        with pytest.raises(ConfigurationError, match=f"chmod 600 {path}"):
            MasterKey.load()
    path.chmod(0o600)
    assert MasterKey.load().source == str(path)
    path.write_text("too-short\n")
    with pytest.raises(ConfigurationError, match="shorter than 32"):
        MasterKey.load()


# -- task claims -------------------------------------------------------------------------------


def _record(keys: Keys, name: str, **kwargs: Any) -> KeyRecord:
    return keys.create(name, **kwargs).record


def test_claim_task_owners(ledger: Ledger, keys: Keys) -> None:
    alice, bob = _record(keys, "alice"), _record(keys, "bob")
    assert ledger.proxy.claim_task(alice, "ext-1", "/v1/videos/text2video", "https://a.example/cb") is True
    assert ledger.proxy.claim_task(alice, "ext-1", "/v1/videos/text2video", None) is False  # a retry
    with pytest.raises(InvalidRequest) as info:
        ledger.proxy.claim_task(bob, "ext-1", "/v1/videos/text2video", None)
    assert (info.value.code, info.value.http_status) == (1201, 400)
    owned = ledger.proxy.owner(external_task_id="ext-1")
    assert owned is not None and owned.key_id == alice.id and owned.callback_url == "https://a.example/cb"
    ledger.proxy.attach("ext-1", "task-1")
    assert ledger.proxy.owned_by(alice, ["task-1", "task-2"]) == {"task-1"}
    assert ledger.proxy.owned_by(bob, ["task-1"]) == set()
    ledger.proxy.unclaim(alice, "ext-1")  # attached: stays
    assert ledger.proxy.owner(task_id="task-1") is not None


def test_concurrency_counts_claims_and_held_reservations(
    ledger: Ledger, keys: Keys, clock: FakeClock
) -> None:
    key = _record(keys, "k1", concurrency=2)
    claim = ledger.proxy.claim_task
    assert claim(key, "a", "/v1/videos/text2video", None)
    held_a = ledger.reserve(5, key.all_scopes, idempotency_key="a")  # its claim and reservation: one task
    assert ledger.proxy.open_count(key) == 1
    assert claim(key, "b", "/v1/videos/text2video", None)
    with pytest.raises(ConcurrencyLimited) as info:
        claim(key, "c", "/v1/videos/text2video", None)
    assert (info.value.code, info.value.http_status) == (1303, 429)
    assert "limit is 2" in str(info.value)
    ledger.commit(held_a, 4)  # a settled task no longer counts
    assert ledger.proxy.open_count(key) == 1
    assert claim(key, "c", "/v1/videos/text2video", None)
    held_c = ledger.reserve(5, key.all_scopes, idempotency_key="c")
    with pytest.raises(ConcurrencyLimited):
        claim(key, "d", "/v1/videos/text2video", None)
    ledger.release(held_c)  # nor does a released one
    assert ledger.proxy.open_count(key) == 1
    # a claim that never got its reservation (its process died) stops counting after the grace
    clock.advance(seconds=CLAIM_GRACE.total_seconds() + 1)
    assert ledger.proxy.open_count(key) == 0
    assert claim(key, "d", "/v1/videos/text2video", None)
    assert claim(key, "e", "/v1/videos/text2video", None)
    # a refused create gives its claim back
    ledger.proxy.unclaim(key, "e")
    assert claim(key, "f", "/v1/videos/text2video", None)
    # other keys are not limited by this one
    other = _record(keys, "k2", concurrency=1)
    assert claim(other, "g", "/v1/videos/text2video", None)


def test_concurrent_claims_never_pass_the_limit(ledger: Ledger, keys: Keys) -> None:
    key = _record(keys, "busy", concurrency=3)
    barrier = threading.Barrier(8)
    admitted: list[str] = []
    limited: list[str] = []
    other: list[BaseException] = []
    lock = threading.Lock()

    def claim(i: int) -> None:
        barrier.wait()
        try:
            ok = ledger.proxy.claim_task(key, f"ext-{i}", "/v1/videos/text2video", None)
        except ConcurrencyLimited:
            with lock:
                limited.append(f"ext-{i}")
            return
        except BaseException as exc:  # pragma: no cover - reported below
            with lock:
                other.append(exc)
            return
        with lock:
            (admitted if ok else other).append(f"ext-{i}")  # type: ignore[arg-type]

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert other == []
    assert len(admitted) == 3 and len(limited) == 5
    assert ledger.proxy.open_count(key) == 3
    assert ledger.proxy.owned_by(key, [], admitted) == set(admitted)


def test_a_master_key_file_named_but_missing_is_an_error_not_a_new_key(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """(Found by review.) A mistyped KLING_COST_MASTER_KEY_FILE made a new master key (and its
    folders): keys made with it would not verify on a proxy using the intended file."""
    monkeypatch.delenv("KLING_COST_MASTER_KEY", raising=False)
    missing = tmp_path / "nodir" / "master.key"
    monkeypatch.setenv(ENV_MASTER_KEY_FILE, str(missing))
    for create in (True, False):
        with pytest.raises(ConfigurationError, match=r"KLING_COST_MASTER_KEY_FILE names .* does not exist"):
            MasterKey.load(create=create)
    assert not missing.parent.exists()
