"""Tweet cleaning, shared by trainer and node so that both see the same text.

Which steps a model was trained with is stored in its bundle manifest
(:class:`CleaningConfig`); the node applies exactly those steps.
"""

from __future__ import annotations

import html
import re
import unicodedata
from dataclasses import dataclass

_URL = re.compile(r"(?:https?://|www\.)\S+", re.IGNORECASE)
_MENTION = re.compile(r"(?<!\w)@\w{1,15}")
# Three or more of the same character ("sooooo", "!!!!") carry emphasis, not meaning;
# keeping two preserves the emphasis signal while mapping every length to one token form.
# Digits are left alone by default: "1000" is not "100".
_REPEAT = re.compile(r"([^\d\s])\1{2,}")
_REPEAT_ANY = re.compile(r"(\S)\1{2,}")
_SPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class CleaningConfig:
    """Steps of :func:`clean_tweet`; defaults are what repedge models are trained with."""

    unescape_html: bool = True
    urls: bool = True
    mentions: bool = True
    repeats: bool = True
    # Also collapse repeated digits ("1000" -> "100"): how the first default model was trained.
    repeat_digits: bool = False
    # The uncased BERT vocabulary has almost no emoji: without this they become [UNK].
    emoji_names: bool = True
    # Replace the entity's name inside the tweet by "brand" (the entity itself still goes in
    # as the second segment), so that words of one brand cannot serve as a label prior
    # for it; meant to help on brands the model has not seen.
    mask_entity: bool = False


def _is_emoji(ch: str) -> bool:
    # "So" (Symbol, other) covers the emoji blocks; skip plain ASCII symbols.
    return ord(ch) > 0x2000 and unicodedata.category(ch) == "So"


def _emoji_to_words(text: str) -> str:
    if text.isascii():
        return text
    out = []
    for ch in text:
        if _is_emoji(ch):
            name = unicodedata.name(ch, "")
            out.append(f" {name.lower()} " if name else " ")
        elif unicodedata.category(ch) in ("Mn", "Cf") and ord(ch) in (0xFE0F, 0x200D):
            continue  # variation selector / zero-width joiner inside emoji sequences
        else:
            out.append(ch)
    return "".join(out)


def mask_entity(text: str, entity: str) -> str:
    """``text`` with whole-word (or hashtag) mentions of ``entity`` replaced by "brand"."""
    if not entity.strip():
        return text
    pattern = rf"(?<!\w)#?{re.escape(entity.strip())}(?!\w)"
    return re.sub(pattern, "brand", text, flags=re.IGNORECASE)


def clean_tweet(text: str, config: CleaningConfig | None = None) -> str:
    """Normalise a tweet's text the way repedge models expect it."""
    config = config or CleaningConfig()
    if config.unescape_html:
        text = html.unescape(text)
    if config.urls:
        text = _URL.sub(" http ", text)
    if config.mentions:
        text = _MENTION.sub(" @user ", text)
    if config.emoji_names:
        text = _emoji_to_words(text)
    if config.repeats:
        text = (_REPEAT_ANY if config.repeat_digits else _REPEAT).sub(r"\1\1", text)
    return _SPACE.sub(" ", text).strip()
