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
from ..kling.endpoints import endpoint_kind, external_task_id_of, new_path, with_external_task_id
from ..pricing.request import ENDPOINTS, normalise_mode
from ..pricing.standard import RESOLUTIONS
from .standards import choose_standard, new_row_body

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
_NEW_STANDARD = frozenset(
    {"resolution", "multi_shot", "standard", "contents", "video", "character_orientation", "watermark"}
)
"""Fields of Kling's new standard a row may name (``audio`` is an alias of ``sound``), and
``standard`` (``legacy``/``new``: see :mod:`.standards`)."""
FIELDS = frozenset({"endpoint", *_ALIASES, *_NEW_STANDARD}.union(*(r.model_fields for r in _REQUESTS)))
"""The fields a JSONL / CSV row may have: Kling's create fields and our aliases."""
_SOUND_ON = ("on", "true", "yes", "1", "native")
_SOUND_OFF = ("off", "false", "no", "0", "", "original")


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
        """The row's prompt (a new-standard body may carry it as a ``contents`` item)."""
        if self.body.get("prompt"):
            return str(self.body["prompt"])
        for item in self.body.get("contents") or ():
            if isinstance(item, Mapping) and item.get("type") == "prompt":
                return str(item.get("text") or "")
        return ""

    @property
    def standard(self) -> str:
        """``new`` when the row goes to a new-standard path (model in the path), else ``legacy``."""
        return "new" if new_path(self.endpoint) else "legacy"


def read_batch(path: str | Path, defaults: Mapping[str, Any] | None = None) -> list[BatchRow]:
    """Rows of ``path`` (``.jsonl``/``.ndjson``: one JSON object per line; ``.json``: an array
    of objects; ``.csv``: a header with a ``prompt`` column; else one prompt per line; ``#``
    comments and blank lines skipped; a UTF-8 byte order mark before JSON or CSV is ignored),
    each completed with ``defaults`` (``endpoint``, ``model_name``, ``mode``, ``duration``,
    ``sound``, ``aspect_ratio``, ...). A row goes out on the API standard :mod:`.standards`
    chooses (a new-standard model id, path or ``standard: new``: the new one; else legacy).

    Each row gets a stable idempotency key (its ``external_task_id`` if given, else derived
    from its content and how many identical rows came before), so re-running the same file
    resumes instead of paying twice. Raises :class:`ConfigurationError` naming the line.
    """
    file = Path(path)
    suffix = file.suffix.lower()
    # Excel's "CSV UTF-8" and Notepad start files with a byte order mark; structured files
    # were refused with one before, so ignoring it changes no row's key. A plain prompt file
    # keeps reading it as before: its first row's key (and resume) must not change.
    encoding = "utf-8" if suffix not in (".jsonl", ".ndjson", ".json", ".csv") else "utf-8-sig"
    try:
        text = file.read_text(encoding=encoding)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"cannot read batch file {file}: {exc}") from None
    base = {k: v for k, v in (defaults or {}).items() if v is not None}
    if suffix in (".jsonl", ".ndjson"):
        raw_rows = _jsonl_rows(file, text)
    elif suffix == ".json":
        raw_rows = _json_array_rows(file, text)
    elif suffix == ".csv":
        raw_rows = _csv_rows(file, text)
    else:
        raw_rows = _prompt_rows(file, text)
    if not raw_rows:
        raise ConfigurationError(f"batch file {file} has no rows")
    seen: dict[str, int] = {}
    explicit: dict[str, int] = {}
    rows = []
    for number, raw in raw_rows:
        endpoint, body = _body(file, number, {**base, **_canonical(raw)})
        key = external_task_id_of(endpoint, body)
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
            with_external_task_id(endpoint, body, key)
        rows.append(BatchRow(number, endpoint, body, str(key)))
    return rows


def _json(where: str, text: str) -> Any:
    try:
        return json.loads(text)
    except RecursionError:
        raise ConfigurationError(f"{where}: JSON nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise ConfigurationError(f"{where}: not valid JSON: {exc.msg}") from None
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        raise ConfigurationError(f"{where}: not valid JSON: {exc}") from None


def _row(where: str, doc: object, what: str) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise ConfigurationError(f"{where}: {what} must be a JSON object")
    _check_fields(where, doc)
    return doc


def _jsonl_rows(file: Path, text: str) -> list[tuple[int, dict[str, Any]]]:
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip() and not line.lstrip().startswith("#"):
            where = f"{file}:{number}"
            rows.append((number, _row(where, _json(where, line), "each line")))
    return rows


def _json_array_rows(file: Path, text: str) -> list[tuple[int, dict[str, Any]]]:
    """A ``.json`` file: an array of row objects, numbered from 1 in the order given."""
    doc = _json(str(file), text)
    if not isinstance(doc, list):
        raise ConfigurationError(
            f"{file}: a .json batch must be an array of row objects (or use .jsonl: one object per line)"
        )
    return [(i, _row(f"{file}: item {i}", item, "each item")) for i, item in enumerate(doc, 1)]


def _csv_rows(file: Path, text: str) -> list[tuple[int, dict[str, Any]]]:
    reader = csv.DictReader(text.splitlines())
    if not reader.fieldnames or "prompt" not in reader.fieldnames:
        raise ConfigurationError(f"{file}:1: a CSV batch needs a header row with a 'prompt' column")
    _check_fields(f"{file}:1 (header)", (f for f in reader.fieldnames if f))
    rows = []
    for number, record in enumerate(reader, 2):
        if None in record:  # more cells than the header names: an unquoted comma split a prompt
            raise ConfigurationError(
                f"{file}:{number}: {len(reader.fieldnames) + len(record[None])} cells but the header "
                f'names {len(reader.fieldnames)}; quote cells that contain commas ("a fox, in snow")'
            )
        rows.append((number, {k: v for k, v in record.items() if k and v not in (None, "")}))
    return rows


def _prompt_rows(file: Path, text: str) -> list[tuple[int, dict[str, Any]]]:
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        prompt = line.strip()
        if not prompt or prompt.startswith("#"):
            continue
        if prompt.startswith("{") and _is_json_object(prompt):
            # A JSON row in a file read as plain prompts would be sent as the prompt text,
            # its fields (mode, duration) ignored: say which format to use instead.
            raise ConfigurationError(
                f"{file}:{number}: this line is a JSON object, but {file.name} is read as one prompt "
                "per line; name the file .jsonl to use per-row fields"
            )
        rows.append((number, {"prompt": prompt}))
    return rows


def _is_json_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except (ValueError, RecursionError):
        return False


def _canonical(raw: Mapping[str, Any]) -> dict[str, Any]:
    return {_ALIASES.get(k, k): v for k, v in raw.items()}


def _body(file: Path, number: int, raw: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    where = f"{file}:{number}"
    try:
        named = str(raw.pop("endpoint", "text2video"))
        path = new_path(named)
        endpoint = endpoint_kind(named)
        if "mode" in raw:
            raw["mode"] = normalise_mode(raw["mode"])
    except ValueError as exc:
        raise ConfigurationError(f"{where}: {exc}") from None
    if choose_standard(where, endpoint, None if path is None else path.rsplit("/", 1)[1], raw) == "new":
        return new_row_body(where, endpoint, raw)
    if "duration" in raw:
        raw["duration"] = str(raw["duration"])
    _new_standard_fields(file, number, endpoint, raw)
    if "sound" in raw and not isinstance(raw["sound"], str):
        raw["sound"] = "on" if raw["sound"] else "off"
    elif "sound" in raw:
        sound = raw["sound"].strip().lower()
        if sound not in _SOUND_ON + _SOUND_OFF:
            raise ConfigurationError(
                f"{file}:{number}: sound/audio {raw['sound']!r} is not offered; allowed: on, off "
                "(or native, original, off)"
            )
        raw["sound"] = "on" if sound in _SOUND_ON else "off"
    if "n" in raw:
        try:
            raw["n"] = int(raw["n"])
        except (TypeError, ValueError):
            raise ConfigurationError(f"{file}:{number}: n must be a whole number") from None
    return endpoint, raw


def _new_standard_fields(file: Path, number: int, endpoint: str, raw: dict[str, Any]) -> None:
    """Rows are sent as legacy bodies: a video's ``resolution`` (720p/1080p/4k) becomes its
    ``mode`` (an image keeps ``resolution``, Kling's own image field), ``audio`` native/
    original/off becomes ``sound`` on/off (``original`` keeps an input video's sound: nothing
    is generated), ``multi_shot`` a JSON boolean (a CSV cell says true or false)."""
    if "resolution" in raw and ENDPOINTS.get(endpoint) != "image":
        value = str(raw.pop("resolution")).strip().lower()
        if value not in RESOLUTIONS:
            raise ConfigurationError(
                f"{file}:{number}: resolution {value!r} is not offered; allowed: {', '.join(RESOLUTIONS)}"
            )
        mode = RESOLUTIONS[value]
        if "mode" in raw and raw["mode"] != mode:
            raise ConfigurationError(
                f"{file}:{number}: mode {raw['mode']} and resolution {value} disagree; give one of them"
            )
        raw["mode"] = mode
    if "multi_shot" in raw and not isinstance(raw["multi_shot"], bool):
        text = str(raw["multi_shot"]).strip().lower()
        if text not in ("true", "false"):
            raise ConfigurationError(f"{file}:{number}: multi_shot must be true or false")
        raw["multi_shot"] = text == "true"
