"""A chat (role, text messages) read as chunkcache's prompt parts: documents, earlier turns, question.

The question is the last user message with text outside marked documents; user and assistant
messages before it are the earlier turns (they go into the prompt's suffix). System and
developer messages are not part of the prompt (its prefix is fixed, so its KV can be cached)
but may carry marked documents, as user messages may; tool messages are ignored.
"""

from collections.abc import Sequence
from dataclasses import dataclass

from chunkcache.errors import InvalidRequestError
from chunkcache.marked import DocumentMarkers, unmark
from chunkcache.prompt import Passage, Turn

MARKABLE_ROLES = ("system", "developer", "user")


@dataclass(frozen=True)
class Message:
    role: str  # system, developer, user, assistant or tool
    text: str


@dataclass(frozen=True)
class Document:
    """A passage and the request field that holds its text (for error messages)."""

    passage: Passage
    field: str


@dataclass(frozen=True)
class Conversation:
    question: str
    history: tuple[Turn, ...]
    documents: tuple[Document, ...]  # marked in the messages, in message order


def read_chat(messages: Sequence[Message], markers: DocumentMarkers | None) -> Conversation:
    """Split a chat; markers None: no message text is read as documents.

    Raises InvalidRequestError naming `messages[i].content` for bad markup, or `messages` when
    no user message has a question."""
    texts: list[str] = []
    documents: list[Document] = []
    for i, message in enumerate(messages):
        text = message.text
        if markers is not None and message.role in MARKABLE_ROLES:
            marked = unmark(text, markers, where=f"messages[{i}].content")
            text = marked.text
            documents += [Document(p, f"messages[{i}].content, marked document {j + 1}") for j, p in enumerate(marked.documents)]
        texts.append(text)
    asked = [i for i, m in enumerate(messages) if m.role == "user" and texts[i].strip()]
    if not asked:
        raise InvalidRequestError("messages: no message with role 'user' and non-blank content outside marked documents; "
                                  "the last such message is the question")
    last = asked[-1]
    history = tuple(Turn(m.role, texts[i].strip()) for i, m in enumerate(messages[:last])
                    if m.role in ("user", "assistant") and texts[i].strip())
    # Documents marked after the question (a trailing system message) still count.
    return Conversation(texts[last].strip(), history, tuple(documents))
