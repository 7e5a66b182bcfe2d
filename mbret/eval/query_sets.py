"""Moved to `mbret.data.query_sets`; this name keeps working."""

import importlib
import sys

sys.modules[__name__] = importlib.import_module("mbret.data.query_sets")
