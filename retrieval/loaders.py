"""Documents from files: ``.txt``/``.md`` files, folders of them, and ``.jsonl``.

Ids are stable: a file given directly is named by its path as given; a file found inside a
folder by its path relative to that folder (``/``-separated); a JSONL line by its ``id``.
Folders are walked recursively in sorted order; files of other types inside a folder are
skipped, but a file of another type named explicitly is an error.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from chunkcache.errors import InvalidRequestError, NotFoundError
from chunkcache.retrieval.documents import Document

TEXT_SUFFIXES = (".txt", ".md")
JSONL_SUFFIX = ".jsonl"
SUPPORTED_SUFFIXES = TEXT_SUFFIXES + (JSONL_SUFFIX,)


def load_paths(paths: list[str]) -> list[Document]:
    """Documents of every path, in the order given (folders expanded in sorted order)."""
    docs: list[Document] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for file in sorted(p for p in path.rglob("*") if p.is_file()):
                if file.suffix.lower() in SUPPORTED_SUFFIXES:
                    docs.extend(_load_file(file, file.relative_to(path).as_posix()))
        elif path.is_file():
            docs.extend(_load_file(path, raw))
        else:
            raise NotFoundError(f"no such file or folder: {raw!r}")
    return docs


def loadable(path: Path) -> bool:
    """Whether `load_named` reads this file (by its suffix)."""
    return path.suffix.lower() in SUPPORTED_SUFFIXES


def load_named(files: list[tuple[Path, str]]) -> list[Document]:
    """Documents of (file, name) pairs, in order: a text file's document has `name` as its id and
    its source (a server's root-relative name, so no server path leaks); JSONL lines keep their ids."""
    docs: list[Document] = []
    for path, name in files:
        loaded = _load_file(path, name)
        if path.suffix.lower() in TEXT_SUFFIXES:
            loaded = [replace(d, metadata={**d.metadata, "source": name}) for d in loaded]
        docs.extend(loaded)
    return docs


def _load_file(path: Path, doc_id: str) -> list[Document]:
    suffix = path.suffix.lower()
    if suffix in TEXT_SUFFIXES:
        text = _read(path)
        title = path.stem
        if suffix == ".md":
            title = _markdown_title(text) or title
        return [Document(id=doc_id, text=text, title=title, metadata={"source": str(path)})]
    if suffix == JSONL_SUFFIX:
        return _load_jsonl(path)
    raise InvalidRequestError(
        f"{str(path)!r}: unsupported file type {suffix or '(none)'!r}; "
        f"supported: {', '.join(SUPPORTED_SUFFIXES)}"
    )


def _load_jsonl(path: Path) -> list[Document]:
    """One document per non-blank line.

    Each line is ``{"id": str, "text": str, "title"?: str, "metadata"?: {...}}``.
    """
    docs = []
    for number, line in enumerate(_read(path).splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{str(path)!r} line {number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidRequestError(f"{where}: not valid JSON ({exc.msg})") from exc
        if not isinstance(record, dict):
            raise InvalidRequestError(
                f"{where}: expected a JSON object, got {type(record).__name__}"
            )
        for key, kind in (("id", str), ("text", str), ("title", str), ("metadata", dict)):
            required = key in ("id", "text")
            wrong_type = key in record and not isinstance(record[key], kind)
            if (required and key not in record) or wrong_type:
                raise InvalidRequestError(
                    f"{where}: field {key!r} must be a {kind.__name__}"
                    + (" (required)" if required else "")
                )
        if not record["id"] or not record["text"].strip():
            raise InvalidRequestError(f"{where}: id and text must be non-empty")
        docs.append(Document(id=record["id"], text=record["text"], title=record.get("title", ""),
                             metadata=record.get("metadata", {})))
    return docs


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRequestError(f"{str(path)!r} is not UTF-8 text: {exc}") from exc
    except OSError as exc:
        raise InvalidRequestError(f"cannot read {str(path)!r}: {exc}") from exc


def _markdown_title(text: str) -> str:
    """The first level-one heading (``# Title``), if any."""
    for line in text.splitlines():
        if line.startswith("# "):
            return line[2:].strip()
    return ""

