"""A chat request read as the facade's inputs: question, earlier turns and client-supplied documents.

Documents come from the `documents` field and, when the server has document markers set, from
marked text in system, developer and user messages (field first, then message order). No
documents: the route retrieves from the corpus, as before. Caps are this server's: at most
`max_top_k` documents, each at most `max_document_chars` characters; a 422 names the field.
"""

from dataclasses import dataclass

from chunkcache.api.chat_schemas import ChatRequest
from chunkcache.api.errors import invalid
from chunkcache.api.settings import ServiceConfig
from chunkcache.conversation import Document, Message, read_chat
from chunkcache.prompt import Passage, Turn


@dataclass(frozen=True)
class ChatInputs:
    question: str
    history: tuple[Turn, ...]
    documents: tuple[Document, ...]  # empty: retrieve from the corpus

    @property
    def passages(self) -> list[Passage]:
        return [d.passage for d in self.documents]


def chat_inputs(req: ChatRequest, config: ServiceConfig) -> ChatInputs:
    """Raises the facade's InvalidRequestError (422) for bad marked text, ApiError 422 past a cap."""
    conversation = read_chat([Message(m.role, m.text()) for m in req.messages], config.document_markers)
    sent = tuple(Document(Passage(d.text, d.title), f"documents[{i}].text") for i, d in enumerate(req.documents or ()))
    check_documents(config, sent, conversation.documents)
    return ChatInputs(conversation.question, conversation.history, sent + conversation.documents)


def check_documents(config: ServiceConfig, sent: tuple[Document, ...], marked: tuple[Document, ...]) -> None:
    """sent: from the documents field; marked: from the messages. Both count against max_top_k."""
    n = len(sent) + len(marked)
    if n > config.max_top_k:
        raise invalid(f"documents: send at most {config.max_top_k} documents on this server, got {n}"
                      + (f" ({len(marked)} of them marked in messages)" if marked else ""))
    for doc in sent + marked:
        chars = len(doc.passage.text)
        if chars > config.max_document_chars:
            raise invalid(f"{doc.field}: at most {config.max_document_chars} characters per document on this server, "
                          f"got {chars}; split it into several documents")
