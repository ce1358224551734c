"""What each tweet-cleaning step does to the model's input, measured on labeled tweets.

    python benchmarks/cleaning_stats.py ../shared/data/semeval2017/train_2013-2016.tsv \
        ../shared/data/replab2013/automotive_en.tsv

Reports, per cleaning setting: share of [UNK] tokens, tweets with an [UNK], tweets left
unreadable, tweets truncated at 64 tokens and the mean token count (compute per tweet).
"""

from __future__ import annotations

import sys
from pathlib import Path

from edgemodel.data import read_labeled
from edgemodel.inference import EmptyTextError, TweetEncoder
from edgemodel.textclean import CleaningConfig
from trainer.encoders import minilm_folder

SETTINGS = {
    "all steps (default)": CleaningConfig(),
    "without emoji names": CleaningConfig(emoji_names=False),
    "without URL/mention masking": CleaningConfig(urls=False, mentions=False),
    "no cleaning": CleaningConfig(False, False, False, False, False),
}


def main(paths: list[str]) -> None:
    texts = [e.text for p in paths for e in read_labeled(Path(p))]
    tokenizer = minilm_folder() / "tokenizer.json"
    print(f"{len(texts)} tweets\n")
    columns = ["setting", "[UNK] tokens", "tweets with [UNK]", "unreadable", "truncated at 64"]
    print("| " + " | ".join([*columns, "mean tokens"]) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for name, config in SETTINGS.items():
        encoder = TweetEncoder(tokenizer, 64, config, entity_input=False)
        unk = total = with_unk = unreadable = truncated = 0
        for text in texts:
            try:
                ids = encoder.encode(text).input_ids
            except EmptyTextError:
                unreadable += 1
                continue
            n_unk = ids.count(encoder.unk_id)
            unk, total, with_unk = unk + n_unk, total + len(ids), with_unk + (n_unk > 0)
            truncated += len(ids) >= 64
        print(
            f"| {name} | {unk / total:.4%} | {with_unk / len(texts):.2%} | {unreadable} "
            f"| {truncated / len(texts):.2%} | {total / len(texts):.1f} |"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
