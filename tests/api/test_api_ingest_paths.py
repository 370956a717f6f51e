"""Server-side ingest paths stay inside the ingest root: no '..', no absolute paths, no symlinks out."""

import pytest

from chunkcache.api.errors import ApiError
from chunkcache.api.ingest import collect_files, resolve_under
from chunkcache.retrieval.loaders import load_named, loadable


@pytest.fixture
def root(tmp_path):
    base = tmp_path / "root"
    (base / "notes" / "deep").mkdir(parents=True)
    (base / "notes" / "a.md").write_text("# Alpha\nThe alpha note.\n")
    (base / "notes" / "deep" / "b.txt").write_text("The beta note.\n")
    (base / "notes" / "skip.bin").write_bytes(b"\x00\x01")
    (base / "docs.jsonl").write_text('{"id": "j1", "text": "A JSON line document."}\n')
    outside = tmp_path / "secret.txt"
    outside.write_text("outside the root")
    (base / "escape.txt").symlink_to(outside)
    (base / "inner-link.txt").symlink_to(base / "notes" / "a.md")
    return base


@pytest.mark.parametrize("path, message", [
    ("../secret.txt", "contains '..'"),
    ("notes/../../secret.txt", "contains '..'"),
    ("/etc/passwd", "is absolute"),
    ("\\windows\\system32", "is absolute"),
    ("C:\\x.txt", "is absolute"),
    ("escape.txt", "leaves the ingest root"),
    ("", "non-empty"),
])
def test_escapes_are_refused(root, path, message):
    with pytest.raises(ApiError) as err:
        resolve_under(root.resolve(), path)
    assert err.value.status == 422 and message in err.value.message


def test_missing_path_is_404(root):
    with pytest.raises(ApiError) as err:
        resolve_under(root.resolve(), "notes/none.md")
    assert err.value.status == 404


def test_folders_expand_with_root_relative_ids(root):
    files = collect_files(root, ["notes", "inner-link.txt"], loadable)
    assert [rel for _, rel in files] == ["notes/a.md", "notes/deep/b.txt", "inner-link.txt"]
    docs = load_named(collect_files(root, ["notes", "docs.jsonl"], loadable))
    assert [d.id for d in docs] == ["notes/a.md", "notes/deep/b.txt", "j1"]
    assert docs[0].title == "Alpha" and docs[0].metadata["source"] == "notes/a.md"


def test_symlink_out_inside_a_folder_is_refused(root, tmp_path):
    (root / "notes" / "leak.txt").symlink_to(tmp_path / "secret.txt")
    with pytest.raises(ApiError, match="leaving the ingest root"):
        collect_files(root, ["notes"], loadable)
