"""load_paths: text, markdown, folders, JSONL, and clear errors."""

import json

import pytest

from chunkcache.errors import InvalidRequestError, NotFoundError
from chunkcache.retrieval.loaders import load_paths


def test_folders_are_walked_recursively_in_sorted_order(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "z.txt").write_text("zed")
    (tmp_path / "a.md").write_text("# Heading One\n\nbody")
    (tmp_path / "b" / "c.txt").write_text("see")
    (tmp_path / "skip.png").write_bytes(b"\x89PNG")
    docs = load_paths([str(tmp_path)])
    assert [d.id for d in docs] == ["a.md", "b/c.txt", "b/z.txt"]
    assert docs[0].title == "Heading One" and docs[1].title == "c" and docs[2].text == "zed"


def test_jsonl_lines_become_documents(tmp_path):
    path = tmp_path / "d.jsonl"
    rows = [{"id": "x", "text": "one", "title": "T"}, {"id": "y", "text": "two", "metadata": {"k": 1}}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    docs = load_paths([str(path)])
    assert [(d.id, d.text, d.title, d.metadata) for d in docs] == [
        ("x", "one", "T", {}), ("y", "two", "", {"k": 1})]


@pytest.mark.parametrize(
    "line, message",
    [("{not json", "line 2: not valid JSON"),
     ('{"id": "z"}', "line 2: field 'text' must be a str \\(required\\)"),
     ('{"id": 5, "text": "t"}', "line 2: field 'id' must be a str"),
     ('["id"]', "line 2: expected a JSON object")],
)
def test_bad_jsonl_line_names_file_and_line(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"id": "ok", "text": "fine"}\n' + line + "\n")
    with pytest.raises(InvalidRequestError, match=f"bad.jsonl' {message}"):
        load_paths([str(path)])


def test_unsupported_and_missing_paths(tmp_path):
    pdf = tmp_path / "paper.pdf"
    pdf.write_bytes(b"%PDF")
    with pytest.raises(InvalidRequestError, match="paper.pdf': unsupported file type '.pdf'"):
        load_paths([str(pdf)])
    with pytest.raises(NotFoundError, match="no such file or folder"):
        load_paths([str(tmp_path / "nope.txt")])


def test_named_files_take_the_given_name_as_id_and_source(tmp_path):
    from chunkcache.retrieval.loaders import load_named, loadable

    (tmp_path / "a.md").write_text("# Alpha\n\nbody")
    (tmp_path / "d.jsonl").write_text(json.dumps({"id": "j1", "text": "one"}) + "\n")
    assert [loadable(tmp_path / n) for n in ("a.md", "d.jsonl", "x.png")] == [True, True, False]
    docs = load_named([(tmp_path / "a.md", "notes/a.md"), (tmp_path / "d.jsonl", "ignored")])
    assert [(d.id, d.title) for d in docs] == [("notes/a.md", "Alpha"), ("j1", "")]
    assert docs[0].metadata["source"] == "notes/a.md"  # the name, never the server's path
