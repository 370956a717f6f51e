"""Helpers for the integration tests: the demo documents."""

from pathlib import Path

DEMO = Path(__file__).parents[2] / "chunkcache" / "demo" / "docs"


def demo_documents() -> list[dict]:
    """Each demo document as {"id", "title", "text"}: its '# ' heading is the title."""
    docs = []
    for path in sorted(DEMO.glob("*.md")):
        heading, _, body = path.read_text().partition("\n")
        docs.append({"id": path.stem, "title": heading.lstrip("# ").strip(), "text": body.strip()})
    return docs
