"""Tweets the model-head tests share: the same texts with and without a brand."""

# (text, entity); entity None: the tweet has no brand (sentiment head).
TWEETS = [
    ("recall announced for the new hatchback", "Honda"),
    ("recall announced for the new hatchback", None),
    ("what a drive, love it", "BMW"),
    ("what a drive, love it", None),
]
