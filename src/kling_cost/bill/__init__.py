"""The bill side: resource packs, reconciliation with Kling's bill, forecasts."""
