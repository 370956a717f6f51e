"""LlamaIndex: `ChunkCacheSynthesizer` answers over the retrieved nodes, each node a cached passage,
and `ChunkCacheLLM`, the LLM behind it. Needs the `[llamaindex]` extra (llama-index-core).

    llm = ChunkCacheLLM(chunk_cache=ChunkCache(store_dir="./store"))   # or ChunkCacheLLM(base_url=..., api_key=...)
    engine = RetrieverQueryEngine(retriever=index.as_retriever(similarity_top_k=3),
                                  response_synthesizer=ChunkCacheSynthesizer(llm))
    engine.query("...").metadata["chunkcache"]   # ttft_s, cache_hits, per-node hits

The synthesizer sends each node's text (without LlamaIndex's metadata header; the title from
metadata["title"]) as one document, so a node retrieved again reuses its KV. `ChunkCacheLLM`
on its own reads documents marked in the prompt (chunkcache/marked.py); a prompt without them
is answered over the chunkcache corpus. The response's text is chunkcache's prompt's answer:
LlamaIndex's QA templates are not used (the prompt's prefix is fixed so its KV stays cached).
Stop sequences: the LLM's `stop` field, or `stop=` on `complete`, `stream_complete` and `chat`.
"""

import asyncio
from collections.abc import Generator, Sequence
from typing import Any

from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    CompletionResponse,
    CompletionResponseGen,
    LLMMetadata,
    MessageRole,
)
from llama_index.core.base.response.schema import RESPONSE_TYPE, Response, StreamingResponse
from llama_index.core.llms import CustomLLM
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.prompts.mixin import PromptDictType
from llama_index.core.response_synthesizers import BaseSynthesizer
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle
from pydantic import PrivateAttr

from chunkcache.conversation import Message, read_chat
from chunkcache.integrations.backends import Backend, Chat, Generation, LibraryBackend, Reply, ServiceBackend, stops_of
from chunkcache.marked import DocumentMarkers, unmark
from chunkcache.prompt import Passage

CONTEXT_WINDOW = 8192  # SmolLM2's; LlamaIndex only uses it to size prompts, which chunkcache builds itself


class ChunkCacheLLM(CustomLLM):
    """`ChunkCacheLLM(chunk_cache=ChunkCache(...))` or `ChunkCacheLLM(base_url=..., api_key=...)`."""

    chunk_cache: Any = None  # a chunkcache ChunkCache (library mode)
    base_url: str | None = None
    api_key: str | None = None
    timeout_s: float = 120.0
    max_tokens: int = 64
    temperature: float = 0.0
    mode: str = "blend"
    top_k: int = 5
    stop: list[str] | None = None  # default stop sequences; a call's `stop=` wins
    document_open: str = DocumentMarkers.open
    document_close: str = DocumentMarkers.close

    _backend: Backend = PrivateAttr()
    _markers: DocumentMarkers = PrivateAttr()

    def __init__(self, **data: Any):
        super().__init__(**data)
        if (self.chunk_cache is None) == (self.base_url is None):
            raise ValueError("ChunkCacheLLM needs chunk_cache= (a ChunkCache) or base_url= (the service), exactly one")
        generation = Generation(self.max_tokens, self.temperature, self.mode, self.top_k)
        self._backend = (LibraryBackend(self.chunk_cache, generation) if self.chunk_cache is not None
                         else ServiceBackend(self.base_url, generation, self.api_key, self.timeout_s))
        self._markers = DocumentMarkers(self.document_open, self.document_close)

    @classmethod
    def class_name(cls) -> str:
        return "chunkcache_llm"

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(context_window=CONTEXT_WINDOW, num_output=self.max_tokens, model_name="chunkcache")

    def answer(self, question: str, documents: Sequence[Passage] = (), stop: str | Sequence[str] | None = None) -> Reply:
        return self._backend.reply(Chat(question, (), tuple(documents), stops_of(stop, self.stop)))

    def answer_stream(self, question: str, documents: Sequence[Passage] = (), stop: str | Sequence[str] | None = None):
        """Text pieces, then the Reply."""
        return self._backend.stream(Chat(question, (), tuple(documents), stops_of(stop, self.stop)))

    def _prompt_chat(self, prompt: str, stop: str | Sequence[str] | None) -> Chat:
        marked = unmark(prompt, self._markers, where="prompt")
        return Chat(marked.text.strip(), (), marked.documents, stops_of(stop, self.stop))

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        reply = self._backend.reply(self._prompt_chat(prompt, kwargs.get("stop")))
        return CompletionResponse(text=reply.text, additional_kwargs={"chunkcache": reply.report()})

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        text = ""
        for item in self._backend.stream(self._prompt_chat(prompt, kwargs.get("stop"))):
            if isinstance(item, Reply):
                yield CompletionResponse(text=text, delta="", additional_kwargs={"chunkcache": item.report()})
            else:
                text += item
                yield CompletionResponse(text=text, delta=item)

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        chat = read_chat([Message(str(m.role.value), m.content or "") for m in messages], self._markers)
        reply = self._backend.reply(Chat(chat.question, chat.history, tuple(d.passage for d in chat.documents),
                                         stops_of(kwargs.get("stop"), self.stop)))
        return ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, content=reply.text),
                            additional_kwargs={"chunkcache": reply.report()})


def passage_of(node: NodeWithScore) -> Passage:
    title = node.node.metadata.get("title")
    return Passage(text=node.node.get_content(metadata_mode=MetadataMode.NONE), title=title if isinstance(title, str) else "")


class ChunkCacheSynthesizer(BaseSynthesizer):
    """A response synthesizer that answers over the retrieved nodes as chunkcache documents."""

    def __init__(self, llm: ChunkCacheLLM, streaming: bool = False):
        super().__init__(llm=llm, streaming=streaming)
        self._chunkcache = llm

    def _get_prompts(self) -> PromptDictType:
        return {}

    def _update_prompts(self, prompts: PromptDictType) -> None:
        pass

    def synthesize(self, query: str | QueryBundle, nodes: list[NodeWithScore],
                   additional_source_nodes: Sequence[NodeWithScore] | None = None, **kwargs: Any) -> RESPONSE_TYPE:
        question = query if isinstance(query, str) else query.query_str
        documents = [passage_of(n) for n in nodes]
        sources = list(nodes) + list(additional_source_nodes or ())
        if not nodes:  # as LlamaIndex's synthesizers do (the corpus is not this retriever's)
            return Response(self._empty_response, source_nodes=sources)
        if not self._streaming:
            reply = self._chunkcache.answer(question, documents)
            return Response(reply.text, source_nodes=sources, metadata={"chunkcache": reply.report()})
        metadata: dict[str, Any] = {}  # filled with the cache report when the stream ends

        def pieces() -> Generator[str, None, None]:
            for item in self._chunkcache.answer_stream(question, documents):
                if isinstance(item, Reply):
                    metadata["chunkcache"] = item.report()
                else:
                    yield item

        return StreamingResponse(pieces(), source_nodes=sources, metadata=metadata)

    async def asynthesize(self, query: str | QueryBundle, nodes: list[NodeWithScore],
                          additional_source_nodes: Sequence[NodeWithScore] | None = None, **kwargs: Any) -> RESPONSE_TYPE:
        return await asyncio.to_thread(self.synthesize, query, nodes, additional_source_nodes)

    def get_response(self, query_str: str, text_chunks: Sequence[str], **kwargs: Any) -> str:
        return self._chunkcache.answer(query_str, [Passage(t) for t in text_chunks]).text

    async def aget_response(self, query_str: str, text_chunks: Sequence[str], **kwargs: Any) -> str:
        return await asyncio.to_thread(self.get_response, query_str, text_chunks)
