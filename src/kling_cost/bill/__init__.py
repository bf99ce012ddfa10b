"""The bill: resource packs, reconciliation with what Kling charged, forecasts."""
