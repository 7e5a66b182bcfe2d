"""Moved to `mbret.data.datasets` (datasets sit below retrieval, training and eval); this name keeps working."""

import importlib
import sys

sys.modules[__name__] = importlib.import_module("mbret.data.datasets")
