"""The evaluation report from true labels and scores, worked out by hand."""

import numpy as np
import pytest

from worker.evaluation import evaluate, render_report
from worker.labels import LabelsDefinition, LabelSpec, file_label_set


def label_set(spam_threshold=None, fallback=None):
    definition = LabelsDefinition(
        (LabelSpec("spam", ("x",), spam_threshold), LabelSpec("billing", ("y",))), fallback=fallback
    )
    return file_label_set(definition, matrix=None)


# Columns: spam, billing.
SCORES = np.array(
    [
        [0.90, 0.10],  # spam, right
        [0.70, 0.20],  # spam, right
        [0.35, 0.30],  # spam by a hair: truly billing
        [0.30, 0.20],  # spam, low: truly unsure
        [0.10, 0.80],  # billing, right
        [0.60, 0.50],  # spam: truly billing
    ],
    dtype=np.float32,
)
TRUTH = ["spam", "spam", "billing", "unsure", "billing", "billing"]


def row(evaluation, name):
    return next(r for r in evaluation.labels if r.label == name)


def test_precision_recall_and_f1_at_the_files_thresholds():
    result = evaluate(TRUTH, SCORES, label_set())
    spam, billing = row(result, "spam"), row(result, "billing")
    assert (spam.support, spam.predicted) == (2, 5)
    assert spam.precision == pytest.approx(2 / 5) and spam.recall == 1.0 and spam.f1 == pytest.approx(4 / 7)
    assert (billing.support, billing.predicted) == (3, 1)
    assert billing.precision == 1.0 and billing.recall == pytest.approx(1 / 3) and billing.f1 == pytest.approx(0.5)
    assert result.correct == 3 and result.accuracy == pytest.approx(0.5)
    assert result.confusions == [("billing", "spam", 2), ("unsure", "spam", 1)]
    assert result.unknown == {"unsure": 1}  # no fallback: the file can never say "unsure"


def test_the_best_threshold_is_the_lowest_that_maximises_each_labels_f1():
    result = evaluate(TRUTH, SCORES, label_set())
    spam = row(result, "spam")
    # Keeping spam only at >= 0.61 drops the three wrong ones: 2 right of 2 given, F1 1.0.
    assert spam.best_threshold == pytest.approx(0.61) and spam.best_f1 == pytest.approx(1.0)
    billing = row(result, "billing")
    assert billing.best_threshold == 0.0 and billing.best_f1 == pytest.approx(0.5)


def test_thresholds_and_the_fallback_change_the_labels_given():
    result = evaluate(TRUTH, SCORES, label_set(spam_threshold=0.61, fallback="unsure"))
    spam, unsure = row(result, "spam"), row(result, "unsure")
    assert spam.threshold == pytest.approx(0.61) and (spam.precision, spam.recall) == (1.0, 1.0)
    assert unsure.fallback and (unsure.support, unsure.predicted) == (1, 3)
    assert unsure.precision == pytest.approx(1 / 3) and unsure.best_threshold is None
    assert result.correct == 4 and result.unknown == {}
    assert result.confusions == [("billing", "unsure", 2)]
    text = render_report(result, "labels.yaml")
    assert "unsure (fallback)" in text and "billing -> unsure" in text and "accuracy 0.667" in text
    assert result.as_dict()["confusions"] == [{"true": "billing", "predicted": "unsure", "count": 2}]


def test_without_a_fallback_an_event_under_its_threshold_gets_no_label():
    result = evaluate(TRUTH, SCORES, label_set(spam_threshold=0.8))
    assert ("spam", None, 1) in result.confusions
    assert "spam -> (none)" in render_report(result, "f")
