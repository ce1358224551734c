"""edgemodel.metrics on small examples whose values were worked out by hand."""

from __future__ import annotations

import pytest

from edgemodel import metrics

LABELS = ["negative", "neutral", "positive"]
NEG, NEU, POS = LABELS

# "positive" is never predicted: its precision must be 0, not NaN.
Y_TRUE = [NEG, NEG, NEU, NEU, NEU, POS]
Y_PRED = [NEG, NEU, NEU, NEU, NEG, NEU]


def test_confusion_matrix_rows_are_true_columns_predicted() -> None:
    c = metrics.count(Y_TRUE, Y_PRED, LABELS)
    assert c.matrix.tolist() == [[1, 1, 0], [1, 2, 0], [0, 1, 0]]
    assert c.unpredicted.tolist() == [0, 0, 0]
    assert c.support.tolist() == [2, 3, 1]


def test_per_class_values() -> None:
    c = metrics.count(Y_TRUE, Y_PRED, LABELS)
    assert metrics.precision(c).tolist() == pytest.approx([1 / 2, 2 / 4, 0.0])
    assert metrics.recall(c).tolist() == pytest.approx([1 / 2, 2 / 3, 0.0])
    # F1(neutral) = 2 * 1/2 * 2/3 / (1/2 + 2/3) = 4/7
    assert metrics.f1(c).tolist() == pytest.approx([1 / 2, 4 / 7, 0.0])


def test_averages() -> None:
    c = metrics.count(Y_TRUE, Y_PRED, LABELS)
    assert metrics.accuracy(c) == pytest.approx(3 / 6)
    assert metrics.macro_f1(c) == pytest.approx((1 / 2 + 4 / 7 + 0) / 3)  # 5/14
    assert metrics.macro_recall(c) == pytest.approx((1 / 2 + 2 / 3 + 0) / 3)  # 7/18
    assert metrics.macro_f1(c, [POS, NEG]) == pytest.approx(1 / 4)


def test_label_order_follows_labels_argument() -> None:
    c = metrics.count(Y_TRUE, Y_PRED, [POS, NEU, NEG])
    assert c.matrix.tolist() == [[0, 1, 0], [0, 2, 1], [0, 1, 1]]


def test_unpredicted_counts_as_wrong_but_is_no_false_positive() -> None:
    report = metrics.classification_report([POS, POS, NEG], [POS, None, NEG], LABELS)
    assert report["accuracy"] == pytest.approx(2 / 3)
    assert report["per_class"][POS] == pytest.approx(
        {"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2}
    )
    # neutral is absent from both sides: all zero, still in the macro means.
    assert report["per_class"][NEU] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert report["macro_recall"] == pytest.approx((1 + 0 + 0.5) / 3)
    assert report["confusion_matrix"] == {
        "labels": LABELS,
        "matrix": [[1, 0, 0], [0, 0, 0], [0, 0, 1]],
        "unpredicted": [0, 0, 1],
    }
    assert report["n"] == 3


def test_report_is_plain_json_types() -> None:
    report = metrics.classification_report(Y_TRUE, Y_PRED, LABELS)
    assert type(report["accuracy"]) is float
    assert type(report["per_class"][NEG]["support"]) is int
    assert report["f1_pn"] == pytest.approx(1 / 4)
    assert "f1_pn" not in metrics.classification_report(["a"], ["b"], ["a", "b"])


def test_perfect_and_empty() -> None:
    report = metrics.classification_report(LABELS, LABELS, LABELS)
    assert report["accuracy"] == report["macro_f1"] == report["macro_recall"] == 1.0
    empty = metrics.classification_report([], [], LABELS)
    assert empty["accuracy"] == 0.0 and empty["n"] == 0


@pytest.mark.parametrize(
    ("y_true", "y_pred", "labels"),
    [
        ([NEG], [NEG, NEG], LABELS),  # length mismatch
        (["NEGATIVE"], [NEG], LABELS),  # true label outside the label set
        ([NEG], ["other"], LABELS),  # prediction outside the label set
        ([NEG], [NEG], [NEG, NEG]),  # duplicate labels
        ([None], [NEG], LABELS),  # a true label cannot be missing
    ],
)
def test_rejects_bad_input(y_true: list, y_pred: list, labels: list[str]) -> None:
    with pytest.raises(ValueError):
        metrics.classification_report(y_true, y_pred, labels)
