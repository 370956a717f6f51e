"""The prompt as token ids: [shared prefix][chunk 1]...[chunk n][suffix with the question].

The prompt is defined at the token level as that concatenation, so `full` mode and the cached
modes see exactly the same tokens. The prefix (chat template start, system message, lead-in)
is fixed per configuration; its KV is computed once and every chunk is warmed behind it.
"""

import hashlib
from dataclasses import dataclass

from chunkcache.errors import ConfigError, InvalidRequestError

_PASSAGES = "\x00CHUNKCACHE_PASSAGES\x00"
_QUESTION = "\x00CHUNKCACHE_QUESTION\x00"


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
        self._suffix_text = suffix_text
        self.prefix_ids: list[int] = self._encode(prefix_text)
        bos = tokenizer.bos_token_id
        if bos is not None and getattr(tokenizer, "add_bos_token", False) and (not self.prefix_ids or self.prefix_ids[0] != bos):
            self.prefix_ids = [bos] + self.prefix_ids
        self.prefix_digest = hashlib.blake2b(
            repr(self.prefix_ids).encode(), digest_size=16
        ).hexdigest()

    def _split_template(self) -> tuple[str, str]:
        cfg = self.config
        user = cfg.lead_in + _PASSAGES + cfg.question_template.replace("{question}", _QUESTION)
        if getattr(self.tokenizer, "chat_template", None):
            messages = [{"role": "system", "content": cfg.system}, {"role": "user", "content": user}]
            text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        else:
            text = f"{cfg.system}\n\n{user}\nAnswer:"
        if text.count(_PASSAGES) != 1 or text.count(_QUESTION) != 1:
            raise ConfigError("the chat template altered the prompt placeholders; use a model with a plain chat template")
        prefix, rest = text.split(_PASSAGES)
        return prefix, rest

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def passage_ids(self, passage: Passage) -> list[int]:
        cfg = self.config
        text = cfg.passage_template.format(title=passage.title, text=passage.text) if passage.title else cfg.untitled_template.format(text=passage.text)
        return self._encode(text)

    def suffix_ids(self, question: str) -> list[int]:
        if not isinstance(question, str) or not question.strip():
            raise InvalidRequestError("the question is empty; send a non-empty 'question' string")
        return self._encode(self._suffix_text.replace(_QUESTION, question.strip()))
