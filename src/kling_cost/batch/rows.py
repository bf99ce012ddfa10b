"""Reading a batch file: one prompt per line, or JSONL / CSV rows with per-row fields."""

from __future__ import annotations

import csv
import difflib
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigurationError
from ..kling import models
from ..kling._core import endpoint_kind
from ..pricing.request import normalise_mode

__all__ = ["FIELDS", "BatchRow", "read_batch"]

_ALIASES = {"model": "model_name", "kind": "endpoint", "audio": "sound"}
_REQUESTS = (
    models.TextToVideoRequest,
    models.ImageToVideoRequest,
    models.MultiImageToVideoRequest,
    models.VideoExtendRequest,
    models.LipSyncRequest,
    models.EffectsRequest,
    models.ImageGenerationRequest,
    models.VirtualTryOnRequest,
)
FIELDS = frozenset({"endpoint", *_ALIASES}.union(*(r.model_fields for r in _REQUESTS)))
"""The fields a JSONL / CSV row may have: Kling's create fields and our aliases."""


def _check_fields(where: str, names: Iterable[str]) -> None:
    """A misspelt field would be silently dropped (``"mdoe": "pro"`` priced as std): refuse it."""
    unknown = [str(n) for n in names if n not in FIELDS]
    if not unknown:
        return
    hints = []
    for name in unknown:
        close = difflib.get_close_matches(name, sorted(FIELDS), n=1)
        hints.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    raise ConfigurationError(
        f"{where}: unknown field{'s' if len(unknown) > 1 else ''} {', '.join(hints)}; "
        f"allowed: {', '.join(sorted(FIELDS))}"
    )


@dataclass(frozen=True)
class BatchRow:
    """One request of a batch: its line, endpoint, Kling body and idempotency key."""

    line: int
    endpoint: str
    body: dict[str, Any]
    key: str

    @property
    def prompt(self) -> str:
        return str(self.body.get("prompt") or "")


def read_batch(path: str | Path, defaults: Mapping[str, Any] | None = None) -> list[BatchRow]:
    """Rows of ``path`` (``.jsonl``, ``.csv``, else one prompt per line; ``#`` comments and
    blank lines skipped), each completed with ``defaults`` (``endpoint``, ``model_name``,
    ``mode``, ``duration``, ``sound``, ``aspect_ratio``, ...).

    Each row gets a stable idempotency key (its ``external_task_id`` if given, else derived
    from its content and how many identical rows came before), so re-running the same file
    resumes instead of paying twice. Raises :class:`ConfigurationError` naming the line.
    """
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"cannot read batch file {file}: {exc}") from None
    base = {k: v for k, v in (defaults or {}).items() if v is not None}
    raw_rows: list[tuple[int, dict[str, Any]]] = []
    suffix = file.suffix.lower()
    if suffix == ".jsonl":
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            try:
                doc = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigurationError(f"{file}:{number}: not valid JSON: {exc.msg}") from None
            if not isinstance(doc, dict):
                raise ConfigurationError(f"{file}:{number}: each line must be a JSON object")
            _check_fields(f"{file}:{number}", doc)
            raw_rows.append((number, doc))
    elif suffix == ".csv":
        reader = csv.DictReader(text.splitlines())
        if not reader.fieldnames or "prompt" not in reader.fieldnames:
            raise ConfigurationError(f"{file}:1: a CSV batch needs a header row with a 'prompt' column")
        _check_fields(f"{file}:1 (header)", (f for f in reader.fieldnames if f))
        for number, record in enumerate(reader, 2):
            raw_rows.append((number, {k: v for k, v in record.items() if k and v not in (None, "")}))
    else:
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip() and not line.lstrip().startswith("#"):
                raw_rows.append((number, {"prompt": line.strip()}))
    if not raw_rows:
        raise ConfigurationError(f"batch file {file} has no rows")
    seen: dict[str, int] = {}
    explicit: dict[str, int] = {}
    rows = []
    for number, raw in raw_rows:
        endpoint, body = _body(file, number, {**base, **_canonical(raw)})
        key = body.get("external_task_id")
        if key:
            if str(key) in explicit:
                raise ConfigurationError(
                    f"{file}:{number}: external_task_id {key!r} is also on line {explicit[str(key)]}; "
                    "each request needs its own"
                )
            explicit[str(key)] = number
        else:
            digest = hashlib.sha256(
                json.dumps([endpoint, body], sort_keys=True, default=str).encode()
            ).hexdigest()[:24]
            seen[digest] = seen.get(digest, 0) + 1
            key = f"b-{digest}-{seen[digest]}"
            body["external_task_id"] = key
        rows.append(BatchRow(number, endpoint, body, str(key)))
    return rows


def _canonical(raw: Mapping[str, Any]) -> dict[str, Any]:
    return {_ALIASES.get(k, k): v for k, v in raw.items()}


def _body(file: Path, number: int, raw: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    try:
        endpoint = endpoint_kind(str(raw.pop("endpoint", "text2video")))
        if "mode" in raw:
            raw["mode"] = normalise_mode(raw["mode"])
    except ValueError as exc:
        raise ConfigurationError(f"{file}:{number}: {exc}") from None
    if "duration" in raw:
        raw["duration"] = str(raw["duration"])
    if "sound" in raw and not isinstance(raw["sound"], str):
        raw["sound"] = "on" if raw["sound"] else "off"
    elif "sound" in raw:
        raw["sound"] = "on" if raw["sound"].strip().lower() in ("on", "true", "yes", "1") else "off"
    if "n" in raw:
        try:
            raw["n"] = int(raw["n"])
        except (TypeError, ValueError):
            raise ConfigurationError(f"{file}:{number}: n must be a whole number") from None
    return endpoint, raw
