"""OpenAI chat-completions bodies (the subset chunkcache serves), plus the `chunkcache` extension.

Requests ignore OpenAI fields we do not use (`user`, `presence_penalty`, ...) so stock clients
work; the fields we read are strict (no "5" for 5) and chunkcache's own options forbid extras.
The question is the last user message whose text is not blank, so `messages` must hold one:
the schema says so with `contains`. `documents` (or documents marked in the messages, when the
server has markers configured) replace retrieval: the answer is over exactly those passages.
"""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from chunkcache.api.schemas import STOP_DOC, STRICT, Int, Mode, Order, PassageText, PositiveInt, Seed, Source, Stop, Strict, Text

LENIENT = ConfigDict(**{**STRICT, "extra": "ignore"})
_NOT_BLANK = {"type": "string", "pattern": r"\S"}
_USER_WITH_TEXT = {"contains": {
    "type": "object", "required": ["role", "content"],
    "properties": {"role": {"const": "user"}, "content": {"anyOf": [
        _NOT_BLANK,
        {"type": "array", "contains": {"type": "object", "required": ["text"], "properties": {"text": _NOT_BLANK}}},
    ]}},
}}


class TextPart(BaseModel):
    model_config = LENIENT
    type: Literal["text"]
    text: Text


class ChatMessage(BaseModel):
    model_config = LENIENT
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Text | list[TextPart] | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class ChunkcacheOptions(Strict):
    top_k: Int = Field(default=5, ge=1)
    mode: Mode = "blend"
    recompute_ratio: float | None = Field(default=None, ge=0.0, le=1.0)
    order: Order = "score"


class ChatDocument(Strict):
    """A client-supplied document: its KV is looked up by content, computed and stored on a miss."""

    text: PassageText
    title: Text = Field(default="", max_length=1000)


def last_user_text(messages: list[ChatMessage]) -> str | None:
    """The stripped text of the last user message that is not blank, or None."""
    for message in reversed(messages):
        if message.role == "user" and message.text().strip():
            return message.text().strip()
    return None


class ChatRequest(BaseModel):
    model_config = LENIENT
    model: str | None = None  # any name is accepted; responses name the model served
    messages: list[ChatMessage] = Field(min_length=1, json_schema_extra=_USER_WITH_TEXT,
                                        description="the last message with role 'user' and non-blank content is the question")
    max_tokens: PositiveInt | None = None
    max_completion_tokens: PositiveInt | None = None
    temperature: float | None = Field(default=None, ge=0.0, le=5.0, description="default 0 (greedy), unlike OpenAI's 1")
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    seed: Seed | None = None
    n: Int = Field(default=1, ge=1, le=1, description="only 1 choice is supported")
    stop: Stop | None = Field(default=None, description=STOP_DOC)
    stream: bool = False
    chunkcache: ChunkcacheOptions = Field(default_factory=ChunkcacheOptions)
    documents: list[ChatDocument] | None = Field(
        default=None, min_length=1,
        description="answer over these documents (in this order) instead of retrieving from the server's corpus; "
                    "each one's KV is reused when the same title and text were sent before")

    @model_validator(mode="after")
    def _has_question(self) -> "ChatRequest":
        if last_user_text(self.messages) is None:
            raise ValueError("messages: no message with role 'user' and non-blank content; "
                             "the last such message is the question")
        return self


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: str


class PromptTokensDetails(BaseModel):
    cached_tokens: int = Field(description="prompt tokens of passages whose KV came from the cache")


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails


class CacheReport(BaseModel):
    """What the cache did for this answer (the `chunkcache` block of a completion)."""

    mode: Mode
    ttft_s: float = Field(description="seconds from the start of the answer on the model worker (tokenizing, cache "
                                   "lookup, prefill; retrieval too without documents) to the first token")
    total_s: float
    cache_hits: int = Field(description="passages whose KV came from the cache")
    cache_misses: int = Field(description="passages whose KV was computed for this request (and stored); 0 in full mode")
    recomputed_tokens: int
    documents: list[Source] | None = Field(description="per client-supplied document, in the order sent: tokens, cache_hit, "
                                                       "stored; null when the passages were retrieved (see sources)")


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    sources: list[Source]
    chunkcache: CacheReport


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "chunkcache"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


