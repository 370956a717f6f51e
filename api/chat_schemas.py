"""OpenAI chat-completions bodies (the subset chunkcache serves), plus the `chunkcache` extension.

Requests ignore OpenAI fields we do not use (`user`, `presence_penalty`, ...) so stock clients
work; chunkcache's own options are strict.
"""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from chunkcache.api.schemas import Mode, Order, Source, Strict


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class ChunkcacheOptions(Strict):
    top_k: int = Field(default=5, ge=1)
    mode: Mode = "blend"
    recompute_ratio: float | None = Field(default=None, ge=0.0, le=1.0)
    order: Order = "score"


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=5.0, description="default 0 (greedy), unlike OpenAI's 1")
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    seed: int | None = None
    n: int = Field(default=1, ge=1, le=1, description="only 1 choice is supported")
    stream: bool = False
    chunkcache: ChunkcacheOptions = Field(default_factory=ChunkcacheOptions)


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: str


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    sources: list[Source]


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "chunkcache"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
