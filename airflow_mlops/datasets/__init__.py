"""Example data generators shipped with the provider (real data sets cannot be downloaded here)."""
