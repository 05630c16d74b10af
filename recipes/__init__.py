"""Recipes (YAML), shipped inside the package as `vstar.recipes`."""
