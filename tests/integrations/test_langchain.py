"""LangChain: an LCEL RAG chain (retriever | format_docs -> prompt -> ChatChunkCache) over the demo
documents, on the library and on the service; the second question reuses the first one's KV."""

import pytest

pytest.importorskip("langchain_core")

from integration_support import demo_documents  # noqa: E402
from langchain_core.documents import Document  # noqa: E402
from langchain_core.prompts import ChatPromptTemplate  # noqa: E402
from langchain_core.runnables import RunnablePassthrough  # noqa: E402

from chunkcache.integrations.langchain import ChatChunkCache, ChunkCacheRetriever, format_docs  # noqa: E402

pytestmark = pytest.mark.slow

PROMPT = ChatPromptTemplate.from_messages([("system", "Answer from these documents:\n\n{context}"), ("human", "{question}")])


def rag_chain(retriever, model):
    return {"context": retriever | format_docs, "question": RunnablePassthrough()} | PROMPT | model


@pytest.fixture(scope="module")
def retriever(cache):
    cache.add_documents(demo_documents())
    return ChunkCacheRetriever(chunk_cache=cache, top_k=2)


def hits(message) -> list[bool]:
    return message.response_metadata["chunkcache"]["hits"]


def test_chain_on_the_library_reuses_kv_on_the_second_question(cache, retriever):
    chain = rag_chain(retriever, ChatChunkCache(chunk_cache=cache, max_tokens=6))
    first = chain.invoke("Where does chunkcache store the KV caches?")
    second = chain.invoke("Where are the KV caches of chunkcache stored?")
    assert first.content and second.content
    assert hits(first) == [False, False]
    assert hits(second) == [True, True]
    assert second.usage_metadata["input_token_details"]["cache_read"] > 0
    print(f"\nlangchain chain: TTFT {first.response_metadata['chunkcache']['ttft_s'] * 1000:.0f} ms -> "
          f"{second.response_metadata['chunkcache']['ttft_s'] * 1000:.0f} ms, second question hits {hits(second)}")


def test_chain_streams_from_the_service(retriever, server_url):
    chain = rag_chain(retriever, ChatChunkCache(base_url=server_url, max_tokens=6))
    chunks = list(chain.stream("Where does chunkcache store the KV caches?"))
    assert "".join(c.content for c in chunks).strip()
    assert hits(chunks[-1]) == [True, True]  # the library test's passages, through the same store


def test_documents_keyword_and_earlier_turns(cache, server_url):
    model = ChatChunkCache(chunk_cache=cache, max_tokens=4)
    docs = [Document(page_content=d["text"], metadata={"title": d["title"]}) for d in demo_documents()[3:]]
    first = model.invoke([("human", "What does the service offer?")], documents=docs)
    again = model.invoke([("human", "What does the service offer?"), ("ai", first.content), ("human", "And the FAQ?")],
                         documents=docs)
    assert hits(first) == [False, False] and hits(again) == [True, True]
    assert again.usage_metadata["input_tokens"] > first.usage_metadata["input_tokens"]
    served = ChatChunkCache(base_url=server_url, max_tokens=4).invoke("What does the service offer?", documents=docs)
    assert hits(served) == [True, True] and served.content  # the service, over the same store


def test_stop_is_passed_through_library_and_service(cache, server_url):
    docs = [Document(page_content=d["text"], metadata={"title": d["title"]}) for d in demo_documents()[3:]]
    plain = ChatChunkCache(chunk_cache=cache, max_tokens=16).invoke("What does the service offer?", documents=docs).content
    words = plain.split()
    assert len(words) >= 4, plain
    stop = " " + words[len(words) // 2]
    expected = plain[: plain.find(stop)].strip()
    for model in (ChatChunkCache(chunk_cache=cache, max_tokens=16), ChatChunkCache(base_url=server_url, max_tokens=16)):
        msg = model.invoke("What does the service offer?", documents=docs, stop=[stop])
        assert msg.content == expected and msg.response_metadata["finish_reason"] == "stop"
        streamed = list(model.stream("What does the service offer?", documents=docs, stop=[stop]))
        assert "".join(c.content for c in streamed).strip() == expected
