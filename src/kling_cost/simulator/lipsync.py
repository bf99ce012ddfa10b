"""Kling's two-step lip-sync: ``POST /v1/videos/identify-face`` answers at once with a
``session_id`` and the faces it found; ``POST /v1/videos/advanced-lip-sync`` then makes a
task that puts sound on chosen faces (0.5 units per started 5 s of the video)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from .errors import SimError

__all__ = ["FaceSession", "check_face_choose", "new_session"]

URL_VIDEO_SECONDS = 5
"""How long a video given by URL is assumed to be (the simulator cannot fetch it)."""


@dataclass(frozen=True)
class FaceSession:
    session_id: str
    video_seconds: int
    face_ids: tuple[str, ...]

    def to_json(self, base_url: str) -> dict[str, Any]:
        end = self.video_seconds * 1000
        return {
            "session_id": self.session_id,
            "face_data": [
                {
                    "face_id": face,
                    "face_image": f"{base_url}/faces/{self.session_id}/{face}.png",
                    "start_time": 0,
                    "end_time": end,
                }
                for face in self.face_ids
            ],
        }


def new_session(session_id: str, video_seconds: int) -> FaceSession:
    """One face, on screen for the whole video (the simulator finds one face in every video)."""
    return FaceSession(session_id, video_seconds, ("0",))


def _millis(choice: Mapping[str, Any], name: str, index: int) -> int:
    value = choice.get(name, 0)
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)) or not math.isfinite(value):
        raise SimError(1201, f"face_choose[{index}].{name} must be a number of milliseconds")
    if value < 0:
        raise SimError(1201, f"face_choose[{index}].{name} must not be negative")
    return int(value)


def check_face_choose(body: Mapping[str, Any], session: FaceSession) -> None:
    """Kling's rules on ``face_choose``: known faces, one sound each (``audio_id`` or
    ``sound_file``), a sound segment that ends after it starts, inserted within the video."""
    choices = body.get("face_choose")
    if not isinstance(choices, list) or not choices:
        raise SimError(1201, "face_choose must be a non-empty list")
    for index, choice in enumerate(choices):
        if not isinstance(choice, Mapping):
            raise SimError(1201, f"face_choose[{index}] must be an object")
        face = choice.get("face_id")
        if str(face) not in session.face_ids:
            raise SimError(
                1201, f"face_choose[{index}].face_id {face!r} is not a face of session {session.session_id}"
            )
        sources = [
            k for k in ("audio_id", "sound_file") if isinstance(choice.get(k), str) and choice[k].strip()
        ]
        if len(sources) != 1:
            raise SimError(1201, f"face_choose[{index}] needs exactly one of audio_id and sound_file")
        start = _millis(choice, "sound_start_time", index)
        end = _millis(choice, "sound_end_time", index)
        if end <= start:
            raise SimError(1201, f"face_choose[{index}].sound_end_time must be after sound_start_time")
        if _millis(choice, "sound_insert_time", index) > session.video_seconds * 1000:
            raise SimError(1201, f"face_choose[{index}].sound_insert_time is after the end of the video")
