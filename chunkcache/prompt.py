"""The prompt as token ids: [shared prefix][chunk 1]...[chunk n][suffix with the question].

The prompt is defined at the token level as that concatenation, so `full` mode and the cached
modes see exactly the same tokens. The prefix (chat template start, system message, lead-in)
is fixed per configuration; its KV is computed once and every chunk is warmed behind it.
Earlier turns of a chat go into the suffix: the passages stay in the first user message and the
prefix never changes, so neither the prefix KV nor any chunk KV depends on the conversation.
"""

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

from chunkcache.errors import ConfigError, InvalidRequestError

_PASSAGES = "\x00CHUNKCACHE_PASSAGES\x00"
_QUESTION = "\x00CHUNKCACHE_QUESTION\x00"
_TURN = "\x00CHUNKCACHE_TURN_{}\x00"
_PLACEHOLDER = re.compile("\x00CHUNKCACHE_(?:QUESTION|TURN_\\d+)\x00")
ROLES = ("user", "assistant")


@dataclass(frozen=True)
class PromptConfig:
    """The text around the passages. Changing any field changes the prefix, hence the cache keys."""

    system: str = (
        "You are a precise assistant. Answer the question using only the passages. "
        "Reply with the answer alone, in a few words."
    )
    lead_in: str = "Passages:\n\n"
    passage_template: str = "{title}\n{text}\n\n"
    untitled_template: str = "{text}\n\n"
    question_template: str = "Question: {question}"

    def __post_init__(self):
        for name, field in (("passage_template", "{text}"), ("untitled_template", "{text}"), ("question_template", "{question}")):
            if field not in getattr(self, name):
                raise ConfigError(f"PromptConfig.{name} must contain {field}, got {getattr(self, name)!r}")


@dataclass(frozen=True)
class Passage:
    """One retrieved passage; `title` may be empty."""

    text: str
    title: str = ""


@dataclass(frozen=True)
class Turn:
    """One earlier turn of a chat: role "user" or "assistant", and its text."""

    role: str
    text: str

    def __post_init__(self):
        if self.role not in ROLES or not isinstance(self.text, str):
            raise InvalidRequestError(f"a chat turn needs role 'user' or 'assistant' and string text, got {self.role!r}")


def as_passage(item) -> Passage:
    """Accepts a string, a Passage or a {"title", "text"} mapping."""
    if isinstance(item, Passage):
        passage = item
    elif isinstance(item, str):
        passage = Passage(text=item)
    elif isinstance(item, dict):
        text = item.get("text")
        title = item.get("title") or ""
        if not isinstance(text, str) or not isinstance(title, str):
            raise InvalidRequestError(f"a passage dict needs a string 'text' (and optional string 'title'), got keys {sorted(item)}")
        passage = Passage(text=text, title=title)
    else:
        raise InvalidRequestError(f"a passage must be a string or a {{'title', 'text'}} dict, got {type(item).__name__}")
    if not passage.text.strip():
        raise InvalidRequestError("a passage has empty text; drop it or give it content")
    return passage


class PromptBuilder:
    """Tokenizes the fixed prefix, each passage and the question suffix with one tokenizer."""

    def __init__(self, tokenizer, config: PromptConfig):
        self.tokenizer = tokenizer
        self.config = config
        prefix_text, suffix_text = self._split_template()
        self._prefix_text = prefix_text
        self._suffix_text = suffix_text
        self.prefix_ids: list[int] = self._encode(prefix_text)
        bos = tokenizer.bos_token_id
        if bos is not None and getattr(tokenizer, "add_bos_token", False) and (not self.prefix_ids or self.prefix_ids[0] != bos):
            self.prefix_ids = [bos] + self.prefix_ids
        self.prefix_digest = hashlib.blake2b(
            repr(self.prefix_ids).encode(), digest_size=16
        ).hexdigest()

    def _split_template(self) -> tuple[str, str]:
        text = self._render(())
        if text.count(_PASSAGES) != 1 or text.count(_QUESTION) != 1:
            raise ConfigError("the chat template altered the prompt placeholders; use a model with a plain chat template")
        prefix, rest = text.split(_PASSAGES)
        return prefix, rest

    def _render(self, roles: Sequence[str]) -> str:
        """The whole prompt with placeholders: one message per earlier turn (`roles`, starting
        with "user"), then the question; the passages open the first user message."""
        cfg = self.config
        turns = [(role, _TURN.format(i)) for i, role in enumerate(roles)] + [("user", _QUESTION)]
        turns = [(role, cfg.question_template.replace("{question}", text) if role == "user" else text) for role, text in turns]
        turns[0] = ("user", cfg.lead_in + _PASSAGES + turns[0][1])
        if getattr(self.tokenizer, "chat_template", None):
            messages = [{"role": "system", "content": cfg.system}] + [{"role": r, "content": t} for r, t in turns]
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        lines = [f"Answer: {t}" if role == "assistant" else t for role, t in turns]
        return f"{cfg.system}\n\n" + "\n".join(lines) + "\nAnswer:"

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def passage_ids(self, passage: Passage) -> list[int]:
        cfg = self.config
        text = cfg.passage_template.format(title=passage.title, text=passage.text) if passage.title else cfg.untitled_template.format(text=passage.text)
        return self._encode(text)

    def suffix_ids(self, question: str, history: Sequence[Turn] = ()) -> list[int]:
        """The tokens after the passages: `history` (earlier turns, oldest first; the first one
        shares the passages' user message) and then the question."""
        if not isinstance(question, str) or not question.strip():
            raise InvalidRequestError("the question is empty; send a non-empty 'question' string")
        turns = _conversation(history)
        if not turns:
            return self._encode(self._suffix_text.replace(_QUESTION, question.strip()))
        text = self._render([t.role for t in turns])
        head = self._prefix_text + _PASSAGES
        if not text.startswith(head):
            raise ConfigError("the chat template renders the start of the prompt differently when a chat has earlier turns, "
                              "so the cached prefix would not match; use a model with a plain chat template")
        values = {_QUESTION: question.strip(), **{_TURN.format(i): t.text.strip() for i, t in enumerate(turns)}}
        # One pass: text inserted for a placeholder is never scanned again.
        return self._encode(_PLACEHOLDER.sub(lambda m: values[m.group(0)], text[len(head):]))


def _conversation(history: Sequence[Turn]) -> list[Turn]:
    """The turns that go into the suffix: from the first user turn on (the passages open the first
    user message, so assistant turns before it have no place), blank turns dropped."""
    turns = [t for t in history if t.text.strip()]
    while turns and turns[0].role != "user":
        turns.pop(0)
    return turns
