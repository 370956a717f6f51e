"""Documents marked inside message text, for clients that can only send messages.

A marked document is `OPEN body CLOSE`, with the two markers chosen by configuration (nothing
is ever recognised without them). When the body holds a newline its first line is the title
(a blank first line: no title) and the rest is the text; a body on one line is text without a
title. Title and text are stripped of surrounding whitespace.

Escaping: a backslash directly before a marker makes it literal text (the backslash is
dropped), inside a document or outside one: `\\<document>` reads as `<document>`. There is no
way to write a literal backslash directly before a real marker; put a space between them.
`mark()` writes documents in this form, escaping the markers their text contains.
"""

import re
from collections.abc import Sequence
from dataclasses import dataclass

from chunkcache.errors import ConfigError, InvalidRequestError
from chunkcache.prompt import Passage

ESCAPE = "\\"


@dataclass(frozen=True)
class DocumentMarkers:
    """The open and close markers: non-empty, different, neither inside the other, no outer spaces."""

    open: str = "<document>"
    close: str = "</document>"

    def __post_init__(self):
        for name in ("open", "close"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value or value != value.strip() or ESCAPE in value:
                raise ConfigError(f"document marker {name} must be a non-empty string without surrounding spaces or "
                                  f"backslashes, got {value!r}")
        if self.open in self.close or self.close in self.open:
            raise ConfigError(f"document markers must not contain each other, got open {self.open!r} and close {self.close!r}")

    @property
    def pattern(self) -> re.Pattern:
        return re.compile(f"{re.escape(ESCAPE)}?(?:{re.escape(self.open)}|{re.escape(self.close)})")


@dataclass(frozen=True)
class Marked:
    """A message's text split into what is left outside the documents and the documents, in order."""

    text: str
    documents: tuple[Passage, ...]


def unmark(text: str, markers: DocumentMarkers, where: str = "text") -> Marked:
    """Take the marked documents out of `text`. where: the field named in errors.

    Raises InvalidRequestError for a marker without its partner, a document inside a document,
    or a document without text."""
    outside: list[str] = []
    body: list[str] | None = None  # the open document's pieces, None outside a document
    documents: list[Passage] = []
    pos, opened_at = 0, 0
    for m in markers.pattern.finditer(text):
        piece, token = text[pos:m.start()], m.group(0)
        pos = m.end()
        target = outside if body is None else body
        target.append(piece)
        if token.startswith(ESCAPE):
            target.append(token[len(ESCAPE):])
        elif token == markers.open:
            if body is not None:
                raise InvalidRequestError(f"{where}: {markers.open!r} at character {m.start()} opens a document inside the "
                                          f"document opened at character {opened_at}; close it with {markers.close!r} first, "
                                          f"or write {ESCAPE + markers.open!r} for the literal text")
            body, opened_at = [], m.start()
        else:
            if body is None:
                raise InvalidRequestError(f"{where}: {markers.close!r} at character {m.start()} closes no document; "
                                          f"write {ESCAPE + markers.close!r} for the literal text")
            documents.append(_document("".join(body), f"{where}: marked document {len(documents) + 1}"))
            body = None
    if body is not None:
        raise InvalidRequestError(f"{where}: the document opened at character {opened_at} is not closed with {markers.close!r}")
    outside.append(text[pos:])
    return Marked("".join(outside), tuple(documents))


def _document(body: str, where: str) -> Passage:
    title, newline, rest = body.partition("\n")
    title, text = (title.strip(), rest.strip()) if newline else ("", body.strip())
    if not text:
        raise InvalidRequestError(f"{where} has no text (its first line is the title when it has several lines)")
    return Passage(text=text, title=title)


def escape(text: str, markers: DocumentMarkers) -> str:
    """`text` with every marker in it made literal."""
    return re.sub(f"{re.escape(markers.open)}|{re.escape(markers.close)}", lambda m: ESCAPE + m.group(0), text)


def mark(documents: Sequence[Passage], markers: DocumentMarkers, separator: str = "\n\n") -> str:
    """The documents as marked text that `unmark` reads back (titles on one line, markers escaped)."""
    blocks = []
    for doc in documents:
        title = " ".join(escape(doc.title, markers).split())
        # The newline before the close marker keeps a trailing backslash from escaping it.
        blocks.append(f"{markers.open}{title}\n{escape(doc.text.strip(), markers)}\n{markers.close}")
    return separator.join(blocks)
