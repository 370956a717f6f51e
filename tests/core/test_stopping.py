"""Stop sequences as text: cut at the first occurrence, never release what a stop later removes."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chunkcache.errors import InvalidRequestError
from chunkcache.stopping import StopText, stop_sequences


def run(stops, pieces):
    s = StopText(stops)
    released = [s.feed(p) for p in pieces]
    released.append(s.flush())
    return s, released


def test_a_stop_split_across_pieces_is_cut_and_never_released():
    s, released = run(("\n\n",), ["The answer", " is 42.\n", "\nMore text", " after"])
    assert s.stopped and s.text == "The answer is 42."
    assert "".join(released) == "The answer is 42."
    assert released[1] == " is 42."  # the "\n" that might start the stop was held back


def test_held_back_text_is_released_when_it_is_not_a_stop():
    s, released = run(("END",), ["abc E", "ND"])
    assert s.stopped and s.text == "abc " and released == ["abc ", "", ""]
    s, released = run(("END",), ["abc E", "Nx", " done"])
    assert not s.stopped and "".join(released) == s.text == "abc ENx done"
    assert released[0] == "abc "


def test_the_earliest_of_several_stops_wins():
    s, _ = run(("world", "lo"), ["hello world"])
    assert s.text == "hel"


@given(st.text(alphabet="ab\n.", max_size=40), st.lists(st.integers(1, 6), max_size=12),
       st.lists(st.text(alphabet="ab\n.", min_size=1, max_size=3), min_size=1, max_size=4))
def test_released_text_is_always_the_text_before_the_first_stop(text, cuts, stops):
    pieces, i = [], 0
    for c in cuts:
        pieces.append(text[i:i + c])
        i += c
    pieces.append(text[i:])
    s, released = run(tuple(stops), pieces)
    # Generation ends at the first piece after which some stop sequence is in the text: the text
    # then is cut at the earliest stop found in it. (A longer stop that began earlier but had not
    # ended yet, e.g. ".aa" after ".a" with stops "a" and ".aa", never gets its later pieces:
    # vLLM and OpenAI stop there too.)
    expected, hit, seen = text, False, ""
    for piece in pieces:
        seen += piece
        hits = [seen.find(x) for x in stops if x in seen]
        if hits:
            expected, hit = seen[: min(hits)], True
            break
    assert s.text == expected and "".join(released) == expected
    assert s.stopped == hit


def test_a_stop_ends_the_text_although_a_longer_one_began_earlier():
    """The example hypothesis found: "a" ends at the second piece, before ".aa" could."""
    s, released = run(("a", ".aa"), [".", "a", "a"])
    assert s.stopped and s.text == "." and "".join(released) == "."


@pytest.mark.parametrize("stop, message", [
    (["a", "b", "c", "d", "e"], "at most 4"), ([""], "non-empty"), (["x" * 201], "at most 200"), (5, "a string or a list"),
    ([1], "non-empty string"),
])
def test_bad_stop_values_name_the_rule(stop, message):
    with pytest.raises(InvalidRequestError, match=message):
        stop_sequences(stop)


def test_stop_values_are_normalized():
    assert stop_sequences(None) == ()
    assert stop_sequences("\n\n") == ("\n\n",)
    assert stop_sequences(["a", "a", "b"]) == ("a", "b")
