from edgemodel.textclean import CleaningConfig, clean_tweet


def test_urls_mentions_html_and_repeats_are_normalised():
    text = "@BMW_UK loooooove it!!!!! &amp; more at https://t.co/abc123 &lt;3"
    assert clean_tweet(text) == "@user loove it!! & more at http <3"


def test_emoji_become_words_the_uncased_vocab_knows():
    assert clean_tweet("new car \U0001f60d\U0001f697") == (
        "new car smiling face with heart-shaped eyes automobile"
    )
    # Variation selectors and zero-width joiners inside emoji sequences are dropped.
    assert "\ufe0f" not in clean_tweet("love \u2764\ufe0f")


def test_each_step_can_be_switched_off():
    off = CleaningConfig(
        unescape_html=False, urls=False, mentions=False, repeats=False, emoji_names=False
    )
    text = "@a &amp; http://x.y sooo \U0001f60d"
    assert clean_tweet(text, off) == text


def test_email_addresses_are_not_mentions_and_whitespace_collapses():
    assert clean_tweet("  mail me at joe@example.com \n now ") == "mail me at joe@example.com now"


def test_digits_are_not_collapsed_unless_the_bundle_says_so():
    assert clean_tweet("only $1000 sooo cheap") == "only $1000 soo cheap"
    assert clean_tweet("only $1000", CleaningConfig(repeat_digits=True)) == "only $100"


def test_entity_masking_replaces_whole_word_mentions_only():
    from edgemodel.textclean import mask_entity

    text = "love my #BMW, bmw rocks; bmwfan and subaru stay"
    assert mask_entity(text, "BMW") == "love my brand, brand rocks; bmwfan and subaru stay"
    assert mask_entity(text, " ") == text
