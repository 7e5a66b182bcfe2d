"""Backbone loading, the dense encoder, the Retriever that pairs a model with its index, and the pipelines
around it: reranking (`rerank`, `Reranker`) and hybrid fusion (`FusedRetriever`)."""

from mbret.retrieval.backbone import build_tiny_modernbert, load_backbone, resolve_model_path
from mbret.retrieval.colbert import ColBERTEncoder
from mbret.retrieval.dense import DenseEncoder
from mbret.retrieval.fusion import FusedRetriever
from mbret.retrieval.rerank import Reranker, rerank
from mbret.retrieval.retriever import Hit, Retriever

__all__ = [
    "ColBERTEncoder",
    "DenseEncoder",
    "FusedRetriever",
    "Hit",
    "Reranker",
    "Retriever",
    "build_tiny_modernbert",
    "load_backbone",
    "rerank",
    "resolve_model_path",
]
