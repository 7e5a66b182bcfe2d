"""mbret's version, in one place: `mbret.__version__` and the package metadata (pyproject.toml) both read it.

A module of its own that imports nothing, so reading the version (setuptools at build time, a manifest
writer at run time) never imports the rest of mbret.
"""

__version__ = "0.1.0"
