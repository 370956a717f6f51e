"""LangChain: `ChatChunkCache`, a chat model that answers over documents with their cached KV, and
`ChunkCacheRetriever` over the chunkcache corpus. Needs the `[langchain]` extra (langchain-core).

Documents reach the model in one of two ways:

- through the prompt, the usual LCEL RAG chain with our `format_docs` in place of the one that
  joins page contents: it writes each document between markers (`<document>title` newline text
  `</document>`, see chunkcache/marked.py), and the model takes them out of the messages again,
  so each document is a cached passage and the rest of the message is the question::

      chain = ({"context": retriever | format_docs, "question": RunnablePassthrough()}
               | prompt | ChatChunkCache(chunk_cache=cc))

- or as a keyword: `model.invoke(messages, documents=docs)` (LangChain Documents, strings or
  {"title", "text"} dicts).

The model runs the library (`chunk_cache=ChunkCache(...)`) or the service (`base_url=`, `api_key=`,
documents sent in the `documents` field). Without documents the answer retrieves from the
chunkcache corpus. Earlier human and AI messages are earlier turns; system messages only carry
documents (chunkcache's system prompt is fixed so its KV stays cached). `stop` (per call, or the
model's `stop` field) ends the answer before the first stop sequence, as OpenAI's does.
Each AIMessage carries `usage_metadata` (cache_read = passage tokens served from the cache) and
`response_metadata["chunkcache"]` (ttft_s, cache_hits, per-passage hits).
"""

from collections.abc import Iterator, Sequence
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun, CallbackManagerForRetrieverRun
from langchain_core.documents import Document as LCDocument
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, ChatMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict, PrivateAttr, SecretStr, model_validator

from chunkcache.conversation import Message, read_chat
from chunkcache.integrations.backends import Backend, Chat, Generation, LibraryBackend, Reply, ServiceBackend, stops_of
from chunkcache.marked import DocumentMarkers, mark
from chunkcache.prompt import Passage, as_passage

ROLES = {"human": "user", "ai": "assistant", "system": "system", "tool": "tool", "function": "tool"}


def passage_of(doc: Any) -> Passage:
    """A LangChain Document (title from metadata["title"]), a string, a dict or a Passage."""
    if isinstance(doc, LCDocument):
        title = doc.metadata.get("title")
        return Passage(text=doc.page_content, title=title if isinstance(title, str) else "")
    return as_passage(doc)


def format_docs(docs: Sequence[Any], markers: DocumentMarkers = DocumentMarkers()) -> str:
    """The documents as marked text for a prompt's {context}; ChatChunkCache reads them back."""
    return mark([passage_of(d) for d in docs], markers)


class ChatChunkCache(BaseChatModel):
    """Chat model over chunkcache: `ChatChunkCache(chunk_cache=ChunkCache(...))` or `ChatChunkCache(base_url=...)`."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    chunk_cache: Any = None  # a chunkcache ChunkCache (library mode); `cache` is LangChain's response cache
    base_url: str | None = None  # the service (service mode)
    api_key: SecretStr | None = None
    timeout_s: float = 120.0
    max_tokens: int = 64
    temperature: float = 0.0
    mode: str = "blend"
    top_k: int = 5
    stop: list[str] | None = None  # default stop sequences; a call's `stop` wins
    document_open: str = DocumentMarkers.open
    document_close: str = DocumentMarkers.close

    _backend: Backend = PrivateAttr()
    _markers: DocumentMarkers = PrivateAttr()

    @model_validator(mode="after")
    def _connect(self) -> "ChatChunkCache":
        if (self.chunk_cache is None) == (self.base_url is None):
            raise ValueError("ChatChunkCache needs chunk_cache= (a ChunkCache) or base_url= (the service), exactly one")
        generation = Generation(self.max_tokens, self.temperature, self.mode, self.top_k)
        if self.chunk_cache is not None:
            self._backend = LibraryBackend(self.chunk_cache, generation)
        else:
            key = self.api_key.get_secret_value() if self.api_key else None
            self._backend = ServiceBackend(self.base_url, generation, key, self.timeout_s)
        self._markers = DocumentMarkers(self.document_open, self.document_close)
        return self

    @property
    def _llm_type(self) -> str:
        return "chunkcache"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"backend": self.base_url or "library", "mode": self.mode, "max_tokens": self.max_tokens,
                "temperature": self.temperature}

    def _chat(self, messages: list[BaseMessage], documents: Sequence[Any] | None, stop: list[str] | None) -> Chat:
        roles = [m.role if isinstance(m, ChatMessage) else ROLES.get(m.type, m.type) for m in messages]
        chat = read_chat([Message(role, m.text) for role, m in zip(roles, messages)], self._markers)
        given = tuple(passage_of(d) for d in documents or ())
        return Chat(chat.question, chat.history, given + tuple(d.passage for d in chat.documents), stops_of(stop, self.stop))

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, documents: Sequence[Any] | None = None,
                  **kwargs: Any) -> ChatResult:
        reply = self._backend.reply(self._chat(messages, documents, stop))
        message = AIMessage(content=reply.text, **_metadata(reply))
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None, documents: Sequence[Any] | None = None,
                **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        for item in self._backend.stream(self._chat(messages, documents, stop)):
            if isinstance(item, Reply):
                yield ChatGenerationChunk(message=AIMessageChunk(content="", chunk_position="last", **_metadata(item)))
                return
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=item))
            if run_manager is not None:
                run_manager.on_llm_new_token(item, chunk=chunk)
            yield chunk


def _metadata(reply: Reply) -> dict:
    usage = {"input_tokens": reply.prompt_tokens, "output_tokens": reply.completion_tokens,
             "total_tokens": reply.prompt_tokens + reply.completion_tokens,
             "input_token_details": {"cache_read": reply.cached_tokens}}
    return {"usage_metadata": usage,
            "response_metadata": {"finish_reason": reply.finish_reason, "model_provider": "chunkcache", "chunkcache": reply.report()}}


class ChunkCacheRetriever(BaseRetriever):
    """The chunkcache corpus as a LangChain retriever (library mode): the top_k chunks for a query,
    with title, doc_id, ordinal and score in their metadata."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    chunk_cache: Any  # a chunkcache ChunkCache
    top_k: int = 5

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[LCDocument]:
        return [LCDocument(page_content=h.text, metadata={"title": h.title, "doc_id": h.doc_id, "ordinal": h.ordinal,
                                                           "score": float(h.score)})
                for h in self.chunk_cache.retrieve(query, top_k=self.top_k)]
