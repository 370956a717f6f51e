"""Earlier chat turns go into the suffix; the prefix, hence every cached KV, never changes."""

import pytest
from transformers import AutoTokenizer

from chunkcache.prompt import Passage, PromptBuilder, PromptConfig, Turn

pytestmark = pytest.mark.slow  # SmolLM2's own chat template (the prompt split is the point)


@pytest.fixture(scope="module")
def tokenizer(default_model_dir):
    return AutoTokenizer.from_pretrained(default_model_dir)


def test_history_goes_into_the_suffix(tokenizer):
    pb = PromptBuilder(tokenizer, PromptConfig())
    assert pb.suffix_ids("What?", ()) == pb.suffix_ids("What?")
    # Assistant turns before the first user turn have no place (the passages open that message); blank turns drop.
    history = [Turn("assistant", "Hi!"), Turn("user", " Who keeps it? "), Turn("assistant", "Mira Colt."), Turn("user", " ")]
    text = tokenizer.decode(pb.suffix_ids("Since when?", history))
    assert text == ("Question: Who keeps it?<|im_end|>\n<|im_start|>assistant\nMira Colt.<|im_end|>\n"
                    "<|im_start|>user\nQuestion: Since when?<|im_end|>\n<|im_start|>assistant\n")
    # The whole prompt equals the chat template over the same conversation.
    whole = tokenizer.decode(pb.prefix_ids + pb.passage_ids(Passage("Text.", "T")) + pb.suffix_ids("Since when?", history[1:3]))
    cfg = pb.config
    expected = tokenizer.apply_chat_template([
        {"role": "system", "content": cfg.system},
        {"role": "user", "content": cfg.lead_in + "T\nText.\n\nQuestion: Who keeps it?"},
        {"role": "assistant", "content": "Mira Colt."},
        {"role": "user", "content": "Question: Since when?"}], tokenize=False, add_generation_prompt=True)
    assert whole == expected


def test_turn_text_is_inserted_verbatim(tokenizer):
    pb = PromptBuilder(tokenizer, PromptConfig())
    sneaky = "\x00CHUNKCACHE_QUESTION\x00 {question}"
    text = tokenizer.decode(pb.suffix_ids("Q2", [Turn("user", sneaky), Turn("assistant", "\x00CHUNKCACHE_TURN_0\x00")]))
    assert text.count("\x00CHUNKCACHE_QUESTION\x00 {question}") == 1 and "\x00CHUNKCACHE_TURN_0\x00" in text


def test_without_chat_template(tokenizer):
    plain = AutoTokenizer.from_pretrained(tokenizer.name_or_path)
    plain.chat_template = None
    pb = PromptBuilder(plain, PromptConfig())
    text = plain.decode(pb.suffix_ids("Q2", [Turn("user", "Q1"), Turn("assistant", "A1")]))
    assert text == "Question: Q1\nAnswer: A1\nQuestion: Q2\nAnswer:"
