"""Marked documents in message text and reading a chat into documents, earlier turns and question."""

import pytest

from chunkcache.conversation import Message, read_chat
from chunkcache.errors import ConfigError, InvalidRequestError
from chunkcache.marked import DocumentMarkers, escape, mark, unmark
from chunkcache.prompt import Passage, Turn

M = DocumentMarkers()  # <document> ... </document>


def test_unmark_titles_text_and_rest():
    text = "Context:\n<document>Greyhaven\nThe lighthouse is old.\n</document>\n<document>Just text.</document>\nWho?"
    marked = unmark(text, M)
    assert marked.documents == (Passage("The lighthouse is old.", "Greyhaven"), Passage("Just text."))
    assert marked.text == "Context:\n\n\nWho?"
    assert unmark("<document>\nUntitled\nsecond line</document>", M).documents == (Passage("Untitled\nsecond line"),)


def test_escaped_markers_are_literal_and_mark_round_trips():
    assert unmark(r"say \<document> and \</document>", M) == unmark("say <document> and </document>", DocumentMarkers("[[d]]", "[[/d]]"))
    docs = [Passage("Text with <document> and </document> in it, and a trailing backslash \\", "A </document> title\nsplit"),
            Passage("literal backslash \\<document> kept")]
    back = unmark("Intro " + mark(docs, M) + " Question?", M)
    assert back.documents == (Passage(docs[0].text, "A </document> title split"), docs[1])
    assert back.text == "Intro \n\n Question?"  # the separator between documents stays
    assert escape("a <document> b", M) == "a \\<document> b"


@pytest.mark.parametrize("text, needle", [
    ("<document>a <document>b</document></document>", "opens a document inside the document opened at character 0"),
    ("x </document>", "closes no document"),
    ("x <document> never closed", "the document opened at character 2 is not closed with '</document>'"),
    ("<document>Title only\n  </document>", "msg: marked document 1 has no text"),
    ("<document>ok</document><document>  </document>", "msg: marked document 2 has no text"),
])
def test_unmark_errors_name_the_place(text, needle):
    with pytest.raises(InvalidRequestError, match="^msg: ") as e:
        unmark(text, M, where="msg")
    assert needle in str(e.value)


@pytest.mark.parametrize("open_, close", [("", "</d>"), ("<d>", "<d>"), ("<d", "<d>"), (" <d>", "</d>"), ("\\d", "</d>")])
def test_markers_are_validated(open_, close):
    with pytest.raises(ConfigError):
        DocumentMarkers(open_, close)


def test_read_chat_question_history_documents():
    chat = [Message("system", "Use these:\n<document>T\nSystem doc.</document>"),
            Message("assistant", "Hello! <document>not read</document>"),
            Message("user", "<document>User doc.</document> Who built it?"),
            Message("assistant", "Mira."),
            Message("tool", "ignored"),
            Message("user", "  "),
            Message("user", "And when?"),
            Message("assistant", "trailing, ignored")]
    conv = read_chat(chat, M)
    assert conv.question == "And when?"
    assert conv.history == (Turn("assistant", "Hello! <document>not read</document>"), Turn("user", "Who built it?"), Turn("assistant", "Mira."))
    assert [d.passage for d in conv.documents] == [Passage("System doc.", "T"), Passage("User doc.")]
    assert [d.field for d in conv.documents] == ["messages[0].content, marked document 1", "messages[2].content, marked document 1"]
    plain = read_chat(chat, None)  # markers off: text is text
    assert plain.documents == () and plain.history[1] == Turn("user", "<document>User doc.</document> Who built it?")


def test_read_chat_needs_a_question_outside_documents():
    with pytest.raises(InvalidRequestError, match="^messages: no message with role 'user'"):
        read_chat([Message("user", "<document>only a document</document>")], M)
    with pytest.raises(InvalidRequestError, match=r"^messages\[1\]\.content: "):
        read_chat([Message("user", "q"), Message("user", "</document>")], M)
