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
    sent = tuple(Document(Passage(d.text, d.title), f"documents[{i}]") for i, d in enumerate(req.documents or ()))
    documents = sent + conversation.documents
    check_documents(config, documents)
    return ChatInputs(conversation.question, conversation.history, documents)


def check_documents(config: ServiceConfig, documents: tuple[Document, ...]) -> None:
    if len(documents) > config.max_top_k:
        marked = len(documents) - sum(d.field.startswith("documents[") for d in documents)
        raise invalid(f"documents: send at most {config.max_top_k} documents on this server, got {len(documents)}"
                      + (f" ({marked} of them marked in messages)" if marked else ""))
    for doc in documents:
        n = len(doc.passage.text)
        if n > config.max_document_chars:
            where = f"{doc.field}.text" if doc.field.startswith("documents[") else doc.field
            raise invalid(f"{where}: at most {config.max_document_chars} characters per document on this server, got {n}; "
                          "split it into several documents")
