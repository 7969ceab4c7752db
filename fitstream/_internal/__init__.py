"""Helpers shared across the package: argument checks, value conversion, optional imports.

Nothing here is public API; import from :mod:`fitstream` instead.
"""
