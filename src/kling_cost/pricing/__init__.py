"""Dated price catalogs and the estimator."""

from .catalog import KINDS, PACKS, Catalog, PriceEntry
from .estimator import BreakdownLine, Estimate, estimate
from .loader import BUILTIN_CATALOGS, DEFAULT_CATALOG, load_catalog, parse_catalog
from .request import ENDPOINTS, PriceRequest, normalise_endpoint, normalise_mode
from .standard import LEGACY_IDS, MOTION_CONTROL_MAX_SECONDS, NEW_FAMILIES

__all__ = [
    "BUILTIN_CATALOGS",
    "DEFAULT_CATALOG",
    "ENDPOINTS",
    "KINDS",
    "LEGACY_IDS",
    "MOTION_CONTROL_MAX_SECONDS",
    "NEW_FAMILIES",
    "PACKS",
    "BreakdownLine",
    "Catalog",
    "Estimate",
    "PriceEntry",
    "PriceRequest",
    "estimate",
    "load_catalog",
    "normalise_endpoint",
    "normalise_mode",
    "parse_catalog",
]
