"""LlamaIndex: a RetrieverQueryEngine whose response synthesizer is ChunkCacheSynthesizer, over the
demo documents in a VectorStoreIndex; the second question reuses the first one's KV."""

import hashlib
import math

import pytest

pytest.importorskip("llama_index.core")

from integration_support import demo_documents  # noqa: E402
from llama_index.core import VectorStoreIndex  # noqa: E402
from llama_index.core.base.embeddings.base import BaseEmbedding  # noqa: E402
from llama_index.core.query_engine import RetrieverQueryEngine  # noqa: E402
from llama_index.core.schema import TextNode  # noqa: E402

from chunkcache.integrations.llamaindex import ChunkCacheLLM, ChunkCacheSynthesizer  # noqa: E402

pytestmark = pytest.mark.slow


class WordHashEmbedding(BaseEmbedding):
    """Offline stand-in for an embedding model: hashed bag of words, unit length."""

    def _vector(self, text: str) -> list[float]:
        v = [0.0] * 256
        for word in text.lower().split():
            v[int(hashlib.blake2b(word.strip(".,?!:;()").encode(), digest_size=4).hexdigest(), 16) % 256] += 1.0
        norm = math.sqrt(sum(x * x for x in v)) or 1.0
        return [x / norm for x in v]

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._vector(query)

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._vector(text)

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._vector(query)


@pytest.fixture(scope="module")
def index():
    nodes = [TextNode(text=d["text"], metadata={"title": d["title"]}, id_=d["id"]) for d in demo_documents()]
    return VectorStoreIndex(nodes, embed_model=WordHashEmbedding())


def test_query_engine_reuses_kv_on_the_second_question(cache, index):
    engine = RetrieverQueryEngine(retriever=index.as_retriever(similarity_top_k=2),
                                  response_synthesizer=ChunkCacheSynthesizer(ChunkCacheLLM(chunk_cache=cache, max_tokens=6)))
    first = engine.query("How does blending recompute tokens?")
    second = engine.query("Which tokens does blending recompute?")
    assert [n.node.node_id for n in first.source_nodes] == [n.node.node_id for n in second.source_nodes]
    assert str(first).strip() and str(second).strip()
    assert first.metadata["chunkcache"]["hits"] == [False, False]
    assert second.metadata["chunkcache"]["hits"] == [True, True]
    print(f"\nllamaindex query engine: TTFT {first.metadata['chunkcache']['ttft_s'] * 1000:.0f} ms -> "
          f"{second.metadata['chunkcache']['ttft_s'] * 1000:.0f} ms, second question hits {second.metadata['chunkcache']['hits']}")


def test_streaming_query_engine(cache, index):
    llm = ChunkCacheLLM(chunk_cache=cache, max_tokens=6)
    engine = RetrieverQueryEngine(retriever=index.as_retriever(similarity_top_k=2),
                                  response_synthesizer=ChunkCacheSynthesizer(llm, streaming=True))
    response = engine.query("Which tokens does blending recompute?")
    assert "".join(response.response_gen).strip()
    assert response.metadata["chunkcache"]["hits"] == [True, True]  # the previous test stored them


def test_stop_is_passed_through(cache):
    docs = demo_documents()[3:]
    prompt = "".join(f"<document>{d['title']}\n{d['text']}</document>\n" for d in docs) + "What does the service offer?"
    llm = ChunkCacheLLM(chunk_cache=cache, max_tokens=16)
    plain = llm.complete(prompt).text
    words = plain.split()
    assert len(words) >= 4, plain
    stop = " " + words[len(words) // 2]
    expected = plain[: plain.find(stop)].strip()
    assert llm.complete(prompt, stop=[stop]).text == expected
    assert ChunkCacheLLM(chunk_cache=cache, max_tokens=16, stop=[stop]).complete(prompt).text == expected
    assert list(llm.stream_complete(prompt, stop=[stop]))[-1].text.strip() == expected
