"""Dated price catalogs and the estimator."""

from .catalog import KINDS, PACKS, Catalog, PriceEntry
from .estimator import BreakdownLine, Estimate, estimate
from .loader import BUILTIN_CATALOGS, DEFAULT_CATALOG, load_catalog, parse_catalog
from .request import ENDPOINTS, PriceRequest, normalise_mode

__all__ = [
    "BUILTIN_CATALOGS",
    "DEFAULT_CATALOG",
    "ENDPOINTS",
    "KINDS",
    "PACKS",
    "BreakdownLine",
    "Catalog",
    "Estimate",
    "PriceEntry",
    "PriceRequest",
    "estimate",
    "load_catalog",
    "normalise_mode",
    "parse_catalog",
]
