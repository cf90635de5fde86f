"""One-line wording shared by logs, skip lists and summaries."""

import pytest

from ttt_mm.messages import first_line, first_of, one_line


@pytest.mark.parametrize(
    ("items", "said"),
    [([], ""), (["a"], "a"), (["a", "b", "c"], "a, b, c"), (["a", "b", "c", "d", "e"], "a, b, c and 2 more")],
)
def test_a_list_past_its_limit_names_its_first_items_and_counts_the_rest(items, said):
    assert first_of(items, 3) == said


def test_a_list_is_joined_with_the_separator_given():
    assert first_of(["a (why)", "b (why)"], 1, sep="; ") == "a (why) and 1 more"
    assert first_of(["a (why)", "b (why)"], 2, sep="; ") == "a (why); b (why)"


def test_a_name_with_line_breaks_stays_on_one_line():
    assert one_line("a\nb\rc.wav") == "a\\nb\\rc.wav"


def test_an_error_is_said_by_its_first_line_with_text_or_else_by_its_type():
    assert first_line(ValueError("\n  bad header  \nmore")) == "bad header"
    assert first_line(KeyError()) == "KeyError"
