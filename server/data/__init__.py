"""Datasets and scenarios: sources reduce each format to a catalog; scenarios carve T, P and F out of it."""
