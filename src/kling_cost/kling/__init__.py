"""A plain Kling AI API client (sync and async), its models, auth, errors and retries.

``async_client.py`` is the one source of the client; ``client.py`` is generated from it by
``python scripts/unasync.py`` (CI runs it with ``--check``). :mod:`.endpoints` and :mod:`.bodies`
are public: the guard validates, prices and builds create bodies with them.
"""

from .async_client import AsyncKlingClient
from .auth import ApiKeyAuth, Auth, JWTAuth, resolve_auth
from .client import KlingClient
from .endpoints import BASE_URLS, CREATE_PATHS, validate_create
from .errors import error_class, error_for
from .models import (
    AccountCosts,
    EffectsRequest,
    ImageGenerationRequest,
    ImageToVideoRequest,
    KlingImage,
    KlingRequest,
    KlingResponse,
    KlingTask,
    KlingVideo,
    LipSyncRequest,
    MultiImageToVideoRequest,
    ResourcePack,
    TaskInfo,
    TaskResult,
    TaskStatus,
    TextToVideoRequest,
    VideoExtendRequest,
    VirtualTryOnRequest,
)
from .retry import RetryPolicy
from .webhooks import parse_callback, sign_webhook, verify_webhook

__all__ = [
    "BASE_URLS",
    "CREATE_PATHS",
    "AccountCosts",
    "ApiKeyAuth",
    "AsyncKlingClient",
    "Auth",
    "EffectsRequest",
    "ImageGenerationRequest",
    "ImageToVideoRequest",
    "JWTAuth",
    "KlingClient",
    "KlingImage",
    "KlingRequest",
    "KlingResponse",
    "KlingTask",
    "KlingVideo",
    "LipSyncRequest",
    "MultiImageToVideoRequest",
    "ResourcePack",
    "RetryPolicy",
    "TaskInfo",
    "TaskResult",
    "TaskStatus",
    "TextToVideoRequest",
    "VideoExtendRequest",
    "VirtualTryOnRequest",
    "error_class",
    "error_for",
    "parse_callback",
    "resolve_auth",
    "sign_webhook",
    "validate_create",
    "verify_webhook",
]
