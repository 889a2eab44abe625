"""Trimtab rebalancing domain: the convex problem shared by optimizer and explainer."""
