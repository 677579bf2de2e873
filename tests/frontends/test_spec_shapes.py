"""Input shapes as the CLI and graphc.load spell them: one parser for both."""
import re

import pytest

from graphc.errors import InputError
from graphc.frontends.spec import parse_input_shape
from graphc.source import parse_shapes


def test_shapes_in_every_spelling():
    assert parse_input_shape("1,3,8,8") == [(1, 3, 8, 8)]
    assert parse_input_shape(" 1x3x8x8 ") == [(1, 3, 8, 8)]
    assert parse_input_shape((1, 3, 8, 8)) == [(1, 3, 8, 8)]
    assert parse_input_shape(["1,3", (2, 4)]) == [(1, 3), (2, 4)]
    assert parse_shapes(["1,3,8,8", "1x10"]) == [(1, 3, 8, 8), (1, 10)]
    assert parse_shapes([]) is None and parse_input_shape(None) == []


@pytest.mark.parametrize("text, why", [
    ("1,x,3", "expected comma-separated integers"),  # once read as (1, 3), its empty dimension dropped
    ("1,3,", "expected comma-separated integers"),
    ("1,3,8.5", "expected comma-separated integers"),
    ("1,0,3", "positive integer"),
    ("1,-3", "positive integer"),
    ("1,99999999999999999999", "past int64"),
])
def test_a_bad_shape_is_refused_naming_the_option(text, why):
    with pytest.raises(InputError, match=re.escape(f"bad input shape '{text}': ") + ".*" + why):
        parse_input_shape(text)
    with pytest.raises(InputError, match=re.escape(f"bad --input-shape '{text}': ") + ".*" + why):
        parse_shapes([text])
