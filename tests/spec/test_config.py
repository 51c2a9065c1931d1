import dataclasses

import pytest

from digitpairs import UserError
from digitpairs.spec.config import CHOICES, GROUPS, RUN_OPTIONS, Config, comments

FIELDS = [f.name for f in dataclasses.fields(Config)]


def test_every_field_is_in_exactly_one_group():
    grouped = [name for names in GROUPS.values() for name in names]
    for name in FIELDS:
        assert grouped.count(name) == 1, name
    assert sorted(grouped) == sorted(FIELDS) and GROUPS["run options"] == RUN_OPTIONS


def test_every_field_has_a_one_line_comment():
    said = comments()
    assert list(said) == FIELDS
    assert all(text and "#" not in text and "  " not in text for text in said.values())
    assert said["schedule"].endswith("Adam's beta1 cycled 0.95 -> 0.85 -> 0.95)")  # its continuation line joined


@pytest.mark.parametrize("name", list(CHOICES))
def test_a_word_field_takes_its_choices_and_nothing_else(name):
    for word in CHOICES[name]:
        assert getattr(Config().replace(**{name: word}), name) == word
    with pytest.raises(UserError, match=f"{name} must be '{CHOICES[name][0]}' or '{CHOICES[name][1]}', not 'x'"):
        Config().replace(**{name: "x"})
