"""Retrieval for chunkcache: chunking, embeddings, a FAISS index and a persistent corpus.

Never touches KV tensors. Every hit and chunk record carries its text and title, from which the
facade derives the KV-cache key (prompt tokens + model + prefix + codec, ``storage.keys``);
``content_digest`` (sha256 of the text) identifies a distinct chunk inside the corpus only.
"""

from chunkcache.retrieval.bm25 import BM25Index, reciprocal_rank_fusion
from chunkcache.retrieval.chunker import Chunk, ChunkerConfig, chunk_document, count_tokens
from chunkcache.retrieval.corpus import Corpus, CorpusConfig
from chunkcache.retrieval.docstore import content_digest
from chunkcache.retrieval.documents import (
    ChunkHit,
    ChunkRecord,
    Document,
    DocumentInfo,
    IngestReport,
)
from chunkcache.retrieval.embedder import Embedder, default_model_path
from chunkcache.retrieval.index import IndexConfig, VectorIndex
from chunkcache.retrieval.loaders import load_paths

__all__ = [
    "BM25Index",
    "Chunk",
    "ChunkHit",
    "ChunkRecord",
    "ChunkerConfig",
    "Corpus",
    "CorpusConfig",
    "Document",
    "DocumentInfo",
    "Embedder",
    "IndexConfig",
    "IngestReport",
    "VectorIndex",
    "chunk_document",
    "content_digest",
    "count_tokens",
    "default_model_path",
    "load_paths",
    "reciprocal_rank_fusion",
]
