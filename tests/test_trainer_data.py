import re
from pathlib import Path

import pytest

from edgemodel.data import DataError, read_labeled, read_replab, read_semeval, read_table
from edgemodel.splits import entity_split, split_like_training, stratified_split

SEMEVAL = "tweet_id\tlabel\ttext\n1\tpositive\tgreat car\n2\tnegative\tawful dealer\n"
REPLAB = (
    "entity_id\tentity\ttweet_id\tfiltering\tpolarity\ttext\n"
    "E1\tBMW\t10\tRELATED\tPOSITIVE\tlove my bmw\n"
    "E1\tBMW\t11\tUNRELATED\t\tbmw is my dog's name\n"
    "E2\tAudi\t12\tRELATED\tNEGATIVE\taudi recall again\n"
)


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def test_semeval_reader_and_auto_detection(tmp_path):
    path = write(tmp_path, "s.tsv", SEMEVAL)
    examples = read_semeval(path)
    assert [(e.tweet_id, e.label, e.text) for e in examples] == [
        ("1", "positive", "great car"),
        ("2", "negative", "awful dealer"),
    ]
    assert read_labeled(path) == examples


def test_replab_keeps_entity_and_filtering(tmp_path):
    examples = read_labeled(write(tmp_path, "r.tsv", REPLAB))
    assert [(e.entity, e.related, e.label) for e in examples] == [
        ("BMW", True, "positive"),
        ("BMW", False, None),
        ("Audi", True, "negative"),
    ]


def test_tweet_text_with_unicode_line_separator_stays_one_row(tmp_path):
    path = write(tmp_path, "s.tsv", "1\tneutral\tfirst\u2028second\n")
    assert read_semeval(path)[0].text == "first\u2028second"


def test_csv_and_jsonl_with_custom_columns(tmp_path):
    csv_path = write(tmp_path, "d.csv", 'body,y,brand\n"nice, really",POSITIVE,Ford\n')
    [e] = read_table(csv_path, "body", "y", "brand")
    assert (e.text, e.label, e.entity) == ("nice, really", "positive", "Ford")
    jsonl = write(tmp_path, "d.jsonl", '{"t": "meh", "l": "neutral"}\n')
    assert read_labeled(jsonl, text_column="t", label_column="l")[0].label == "neutral"


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("d.csv", "text,other\nx,y\n", "missing column(s) ['label']"),
        ("s.tsv", "1\tgreat\ttext\n", "unknown label 'great'"),
        ("e.csv", "\n\n", "file is empty"),
        ("b.tsv", b"1\tpositive\t\xff\xfe bad\n", "not UTF-8"),
        ("j.jsonl", '{"text": "x"\n', "invalid JSON"),
        ("j2.jsonl", '{"text": "x"}\n', "missing field(s) ['label']"),
    ],
)
def test_clear_errors(tmp_path, name, content, message):
    with pytest.raises(DataError, match=re.escape(message)):
        read_labeled(write(tmp_path, name, content))


@pytest.mark.parametrize(
    ("name", "content"),
    [("r.tsv", REPLAB), ("s.tsv", SEMEVAL), ("t.csv", "text,label\ngreat car,positive\n")],
)
def test_a_byte_order_mark_is_not_part_of_the_first_column(tmp_path, name, content):
    """Issue 20: a TSV saved with a UTF-8 BOM failed with "missing column(s) ['entity']"."""
    plain = read_labeled(write(tmp_path, name, content))
    with_bom = read_labeled(write(tmp_path, "bom-" + name, b"\xef\xbb\xbf" + content.encode()))
    assert [(e.text, e.label, e.entity) for e in with_bom] == [
        (e.text, e.label, e.entity) for e in plain
    ]


def test_missing_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_labeled(tmp_path / "absent.tsv")


def test_stratified_split_is_seeded_and_keeps_label_shares(tmp_path):
    rows = "".join(
        f"{i}\t{['negative', 'neutral', 'positive'][i % 3]}\ttweet {i}\n" for i in range(300)
    )
    examples = read_semeval(write(tmp_path, "s.tsv", rows))
    a, b = stratified_split(examples, seed=1), stratified_split(examples, seed=1)
    assert [e.tweet_id for e in a.test] == [e.tweet_id for e in b.test]
    assert a.sizes() == {"train": 240, "dev": 30, "test": 30}
    assert sorted(e.label for e in a.test).count("negative") == 10


def test_entity_split_holds_out_brands_and_removes_cross_listed_tweets(tmp_path):
    rows = REPLAB + (
        "E3\tFord\t13\tRELATED\tNEUTRAL\tsame text everywhere\n"
        "E1\tBMW\t13\tRELATED\tNEUTRAL\tsame text everywhere\n"
    )
    split = entity_split(read_replab(write(tmp_path, "r.tsv", rows)), ["Audi"], ["BMW"])
    assert {e.entity for e in split.test} == {"BMW"}
    assert {e.entity for e in split.dev} == {"Audi"}
    assert {e.entity for e in split.train} == set()  # Ford's copy of a BMW test tweet is gone
    with pytest.raises(ValueError, match="Tesla"):
        entity_split(read_replab(write(tmp_path, "r2.tsv", rows)), ["Tesla"], ["BMW"])


def replab_rows_for_default_split() -> str:
    """Two related tweets per brand of the pipeline's default split, plus a training brand."""
    brands = ("BMW", "Honda", "Volvo", "Suzuki", "Volkswagen", "Ford")
    rows = [
        f"E{b}\t{brand}\t{b}{i}\tRELATED\tNEUTRAL\t{brand} tweet number {i}\n"
        for b, brand in enumerate(brands)
        for i in range(2)
    ]
    return REPLAB.split("\n", 1)[0] + "\n" + "".join(rows)


def test_split_like_training_matches_what_train_does(tmp_path):
    semeval = read_semeval(
        write(
            tmp_path,
            "s.tsv",
            "".join(
                f"{i}\t{['negative', 'neutral', 'positive'][i % 3]}\ttweet {i}\n" for i in range(60)
            ),
        )
    )
    assert split_like_training(semeval, seed=3) == stratified_split(semeval, seed=3)
    replab = read_replab(write(tmp_path, "r.tsv", replab_rows_for_default_split()))
    split = split_like_training(replab, seed=3)
    assert {e.entity for e in split.test} == {"BMW", "Honda", "Volvo"}
    assert {e.entity for e in split.dev} == {"Suzuki", "Volkswagen"}
    assert {e.entity for e in split.train} == {"Ford"}


def test_temporal_split_holds_out_the_latest_tweets_by_snowflake_time():
    # Snowflake ids: time << 22; ids are shuffled so that file order says nothing.
    import random

    from edgemodel.data import Example
    from edgemodel.splits import TEMPORAL_SOURCE, semeval_splits, tweet_time_ms

    ids = [str((1_000_000_000 + i * 60_000) << 22) for i in range(200)]
    random.Random(1).shuffle(ids)
    labels = ("negative", "neutral", "positive")
    examples = [
        Example(text=f"tweet number {i}", label=labels[i % 3], source="semeval", tweet_id=tid)
        for i, tid in enumerate(ids)
    ]
    assert tweet_time_ms(str(5 << 22)) == 5 + 1288834974657
    assert tweet_time_ms("not-an-id") is None
    splits = semeval_splits(examples, seed=13)
    temporal = splits[TEMPORAL_SOURCE]
    assert len(temporal.test) == 20 and len(temporal.dev) == 10
    times = lambda part: [tweet_time_ms(e.tweet_id) for e in part]  # noqa: E731
    assert min(times(temporal.test)) > max(times(temporal.dev))
    assert min(times(temporal.dev)) > max(times(splits["semeval"].train))
    assert {e.source for e in temporal.dev + temporal.test} == {TEMPORAL_SOURCE}
    # The stratified test is the same as without the temporal hold-out: comparable figures.
    assert splits["semeval"].test == stratified_split(examples, seed=13).test
    held = {e.tweet_id for e in temporal.test}
    assert not held & {e.tweet_id for e in splits["semeval"].train + splits["semeval"].dev}


def test_every_split_seed_default_is_the_one_constant() -> None:
    """`node bench --split`, `trainer evaluate/compare --split` and `trainer train` cut the
    same parts because all of them default to edgemodel.splits.SPLIT_SEED."""
    import inspect

    from bench.cli import bench
    from bench.tweets import labelled_tweets
    from edgemodel.splits import SPLIT_SEED, split_like_training, stratified_split
    from trainer.cli import compare, evaluate, train
    from trainer.settings import TrainConfig

    readers = (bench, labelled_tweets, split_like_training, stratified_split)
    defaults = {
        fn.__qualname__: inspect.signature(fn).parameters["seed"].default
        for fn in (*readers, train, evaluate, compare)
    }
    defaults["TrainConfig"] = TrainConfig().seed
    assert set(defaults.values()) == {SPLIT_SEED}, defaults
