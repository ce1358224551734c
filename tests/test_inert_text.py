"""common/text.py: control, format and separator characters never reach a screen raw."""

from __future__ import annotations

import io
import sys
import unicodedata

from common.text import InertWriter, inert, inert_json

UNSAFE_CATEGORIES = {"Cc", "Cf", "Zl", "Zp", "Cs"}
KEPT = {"\u200c", "\u200d"}  # ZWNJ/ZWJ: emoji sequences and Persian script need them


def test_every_control_format_and_separator_character_is_escaped():
    missed = [
        f"U+{cp:04X}"
        for cp in range(sys.maxunicode + 1)
        if unicodedata.category(chr(cp)) in UNSAFE_CATEGORIES
        and chr(cp) not in KEPT
        and inert(chr(cp)) == chr(cp)
    ]
    assert missed == []


def test_only_unsafe_or_unassigned_characters_change():
    changed = [
        f"U+{cp:04X}"
        for cp in range(sys.maxunicode + 1)
        if unicodedata.category(chr(cp)) not in UNSAFE_CATEGORIES | {"Cn"}
        and inert(chr(cp)) != chr(cp)
    ]
    assert changed == []


def test_escapes_are_visible_and_ordinary_text_is_untouched():
    osc52 = "BMW\x1b]52;c;ZWNobyBoaQ==\x07"
    assert inert(osc52) == "BMW\\x1b]52;c;ZWNobyBoaQ==\\x07"
    assert inert("a\u202eb\u2066c\x9bd\ne") == "a\\u202eb\\u2066c\\x9bd\\x0ae"
    assert inert("\U000e0041") == "\\U000e0041"
    plain = "Volvo ÅÄÖ 日本 👨‍👩‍👧 ‏"[:-1]  # the family emoji keeps its ZWJs
    assert inert(plain) == plain
    assert inert(12) == "12"


def test_inert_json_reaches_keys_and_nested_strings():
    data = {"e\x1b[2J": ["\x1b]0;title\x07", {"k": "\u202e"}], "n": 5, "none": None}
    assert inert_json(data) == {
        "e\\x1b[2J": ["\\x1b]0;title\\x07", {"k": "\\u202e"}],
        "n": 5,
        "none": None,
    }


def test_inert_writer_keeps_line_breaks_and_escapes_the_rest():
    out = io.StringIO()
    writer = InertWriter(out)
    writer.write("reason \x1b]52;c;aGk=\x07\nsummary \u202eok\n")
    writer.flush()
    assert out.getvalue() == "reason \\x1b]52;c;aGk=\\x07\nsummary \\u202eok\n"
