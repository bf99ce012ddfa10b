"""Bad input never leaves the client: it is refused before any HTTP request, in the estimator's words."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from kling_cost.errors import ConfigurationError, PricingError
from kling_cost.kling import KlingClient
from kling_cost.pricing import PriceRequest, estimate
from tests.kling.conftest import Running
from tests.servers import AK, SK


def estimator_error(endpoint: str, body: dict[str, Any]) -> str:
    with pytest.raises(PricingError) as info:
        estimate(PriceRequest.from_kling(endpoint, body), catalog="kling-api")
    return str(info.value)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"prompt": "a cat", "model_name": "kling-v9"}, "model"),
        ({"prompt": ""}, "prompt"),
        ({"prompt": "a cat", "duration": "7"}, "duration"),
        ({"prompt": "a cat", "duration": 7, "model_name": "kling-v2-6"}, "duration"),
        ({"prompt": "x" * 2501}, "prompt"),
        ({"prompt": "a cat", "mode": "ultra"}, "mode"),
    ],
)
def test_rejected_before_any_request_with_estimator_wording(
    running: Running, body: dict[str, Any], field: str
) -> None:
    sent: list[httpx.Request] = []
    with (
        httpx.Client(event_hooks={"request": [sent.append]}) as http,
        KlingClient(AK, SK, base_url=running.url, http_client=http) as client,
        pytest.raises(PricingError) as info,
    ):
        client.create("text2video", body)
    assert sent == []
    assert running.sim.state.tasks == {}
    assert info.value.field == field
    assert str(info.value) == estimator_error("text2video", body)


def test_typed_methods_validate_too(running: Running) -> None:
    sent: list[httpx.Request] = []
    with (
        httpx.Client(event_hooks={"request": [sent.append]}) as http,
        KlingClient(AK, SK, base_url=running.url, http_client=http) as client,
    ):
        with pytest.raises(PricingError, match="duration 7 is not offered"):
            client.text_to_video("a cat", duration=7)
        with pytest.raises(PricingError, match="n 12 is not offered"):
            client.generate_images("cats", n=12)
        with pytest.raises(PricingError, match="image_list must hold 1 to 4"):
            client.multi_image_to_video(["a", "b", "c", "d", "e"], "five")
        with pytest.raises(PricingError, match=r"input\.text is required"):
            client.lip_sync(video_id="v", mode="text2video")
        with pytest.raises(PricingError, match="human_image is required"):
            client.create("tryon", {"cloth_image": "c.png"})
    assert sent == []


def test_client_settings_are_checked() -> None:
    with pytest.raises(ConfigurationError, match="no Kling credentials"):
        KlingClient()
    with pytest.raises(ConfigurationError, match="region"):
        KlingClient(AK, SK, region="mars")  # type: ignore[arg-type]
    with KlingClient(AK, SK, region="china") as client:
        assert client.base_url == "https://api-beijing.klingai.com"
        with pytest.raises(ConfigurationError, match="exactly one"):
            client.get_task("text2video")
    with KlingClient(AK, SK) as client:
        assert client.base_url == "https://api-singapore.klingai.com"
