"""Backbone loading, the dense encoder, and the Retriever that pairs a model with its index."""

from mbret.retrieval.backbone import build_tiny_modernbert, load_backbone, resolve_model_path
from mbret.retrieval.dense import DenseEncoder
from mbret.retrieval.retriever import Hit, Retriever

__all__ = ["DenseEncoder", "Hit", "Retriever", "build_tiny_modernbert", "load_backbone", "resolve_model_path"]
