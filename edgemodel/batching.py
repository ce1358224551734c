"""Model outputs over length-sorted batches, returned in input order.

Evaluation, trainer adapt, dev scoring, the RepLab protocol scorer and node bench all run
a model this way, so a tweet gets the same padding (and score) wherever it is scored.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np

from edgemodel.inference import Classifier, EmptyTextError, Encoded


def encode_readable(
    clf: Classifier, items: Iterable[tuple[str, str | None]]
) -> tuple[list[Encoded], list[int]]:
    """Each (text, entity) encoded, passing over those with nothing left to read
    (EmptyTextError): the encodings, and the indices of the items they came from."""
    encoded: list[Encoded] = []
    readable: list[int] = []
    for i, (text, entity) in enumerate(items):
        try:
            encoded.append(clf.encode(text, entity))
            readable.append(i)
        except EmptyTextError:
            continue
    return encoded, readable


def predict_sorted(clf: Classifier, inputs: Sequence[Encoded], batch_size: int) -> np.ndarray:
    """The FlatBuffer's logits in input order, computed on length-sorted batches."""
    return predict_in_length_order(clf.predict_logits, inputs, batch_size, len(clf.labels))


def predict_in_length_order(
    predict: Callable[[Sequence[Encoded]], np.ndarray],
    inputs: Sequence[Encoded],
    batch_size: int,
    num_labels: int,
) -> np.ndarray:
    """``predict`` over length-sorted batches, logits returned in input order."""
    if not inputs:
        return np.zeros((0, num_labels), np.float32)
    return outputs_in_length_order(lambda b: {"logits": predict(b)}, inputs, batch_size)["logits"]


def outputs_in_length_order(
    run: Callable[[Sequence[Encoded]], dict[str, np.ndarray]],
    inputs: Sequence[Encoded],
    batch_size: int,
) -> dict[str, np.ndarray]:
    """``run`` (named outputs per batch) over length-sorted batches, rows in input order.

    Sorting puts tweets of similar length together, so a batch pads to little more
    than its own length instead of to the longest tweet in the data set.
    """
    order = np.argsort([len(e) for e in inputs], kind="stable")
    parts: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        for name, value in run([inputs[i] for i in rows]).items():
            parts.setdefault(name, []).append(np.asarray(value))
    inverse = np.argsort(order, kind="stable")
    return {name: np.concatenate(values)[inverse] for name, values in parts.items()}
