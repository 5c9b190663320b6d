"""How well a label set labels a set of examples: per-label precision, recall and F1 at its
thresholds, the most frequent confusions, and the threshold that would maximise each label's F1.

Pure: takes the true labels and the model's scores, knows nothing of files or the model.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from worker.labels import LabelSet

# Thresholds tried when tuning, in the 0.0-1.0 range a labels file accepts.
THRESHOLD_STEPS = (np.arange(101) / 100).astype(np.float32)
NONE = "(none)"


@dataclass(frozen=True)
class LabelReport:
    label: str
    support: int  # examples whose true label this is
    predicted: int  # examples labelled with it
    precision: float
    recall: float
    f1: float
    threshold: float | None  # the file's; None: none set (and always for the fallback)
    best_threshold: float | None  # None for the fallback row: it has no score of its own
    best_f1: float | None
    fallback: bool = False


@dataclass(frozen=True)
class Evaluation:
    labels_version: str
    examples: int
    correct: int
    labels: list[LabelReport]
    confusions: list[tuple[str, str | None, int]]  # (true, predicted, count), most frequent first
    unknown: dict[str, int]  # true labels the label set can never give, with their counts

    @property
    def accuracy(self) -> float:
        return self.correct / self.examples if self.examples else 0.0

    def as_dict(self) -> dict:
        data = asdict(self)
        data["accuracy"] = self.accuracy
        data["confusions"] = [{"true": t, "predicted": p, "count": c} for t, p, c in self.confusions]
        return data


def evaluate(gold: Sequence[str], scores: np.ndarray, label_set: LabelSet, max_confusions: int = 10) -> Evaluation:
    """`scores[i]` are example i's scores for `label_set.names`, in that order."""
    truth = np.array(list(gold), dtype=object)
    best = scores.argmax(axis=1)
    best_scores = scores[np.arange(len(scores)), best]
    predicted = label_set.winners(best, best_scores)
    reports = []
    for index, name in enumerate(label_set.names):
        threshold = float(label_set.thresholds[index]) if np.isfinite(label_set.thresholds[index]) else None
        mine = best == index
        tuned, tuned_f1 = _best_threshold(best_scores[mine], truth[mine] == name, int((truth == name).sum()))
        reports.append(_report(name, truth, predicted, threshold, tuned, tuned_f1))
    if label_set.fallback is not None and label_set.fallback not in label_set.names:
        reports.append(_report(label_set.fallback, truth, predicted, None, None, None, fallback=True))
    mistakes = Counter((t, p) for t, p in zip(truth.tolist(), predicted.tolist()) if t != p)
    known = set(label_set.names) | {label_set.fallback}
    unknown = Counter(t for t in truth.tolist() if t not in known)
    return Evaluation(
        labels_version=label_set.version,
        examples=len(truth),
        correct=int((truth == predicted).sum()),
        labels=reports,
        confusions=[(t, p, n) for (t, p), n in sorted(mistakes.items(), key=lambda item: (-item[1], str(item[0])))][
            :max_confusions
        ],
        unknown=dict(sorted(unknown.items())),
    )


def _report(
    name: str,
    truth: np.ndarray,
    predicted: np.ndarray,
    threshold: float | None,
    best_threshold: float | None,
    best_f1: float | None,
    fallback: bool = False,
) -> LabelReport:
    is_true, is_predicted = truth == name, predicted == name
    hits = int((is_true & is_predicted).sum())
    support, count = int(is_true.sum()), int(is_predicted.sum())
    precision = hits / count if count else 0.0
    recall = hits / support if support else 0.0
    f1 = 2 * hits / (support + count) if support + count else 0.0
    return LabelReport(name, support, count, precision, recall, f1, threshold, best_threshold, best_f1, fallback)


def _best_threshold(scores: np.ndarray, correct: np.ndarray, support: int) -> tuple[float, float]:
    """The threshold (on the examples this label scores best on) that maximises its F1; the lowest
    such threshold on ties, so that fewer events fall back. Other labels' thresholds do not matter:
    an example can only get this label where it scores best."""
    kept = scores[None, :] >= THRESHOLD_STEPS[:, None]
    hits = (kept & correct[None, :]).sum(axis=1)
    labelled = kept.sum(axis=1)
    denominators = support + labelled
    f1 = np.divide(2 * hits, denominators, out=np.zeros(len(THRESHOLD_STEPS)), where=denominators > 0)
    choice = int(np.argmax(f1))
    return round(float(THRESHOLD_STEPS[choice]), 2), float(f1[choice])


def render_report(evaluation: Evaluation, source: str) -> str:
    """The evaluation as a table for a terminal."""
    lines = [
        f"labels: {source} (labels_version {evaluation.labels_version})",
        f"examples: {evaluation.examples}, correct: {evaluation.correct} (accuracy {evaluation.accuracy:.3f})",
        "",
    ]
    width = max([len("label")] + [len(r.label) + (11 if r.fallback else 0) for r in evaluation.labels])
    header = f"{'label':<{width}}  support  predicted  precision  recall     f1  threshold  best threshold (f1)"
    lines += [header, "-" * len(header)]
    for r in evaluation.labels:
        name = f"{r.label} (fallback)" if r.fallback else r.label
        threshold = "-" if r.threshold is None else f"{r.threshold:.2f}"
        best = "-" if r.best_threshold is None else f"{r.best_threshold:.2f} ({r.best_f1:.3f})"
        lines.append(
            f"{name:<{width}}  {r.support:>7}  {r.predicted:>9}  {r.precision:>9.3f}  {r.recall:>6.3f}  "
            f"{r.f1:>5.3f}  {threshold:>9}  {best:>19}"
        )
    lines += ["", "most frequent confusions (true label -> label given):"]
    if not evaluation.confusions:
        lines.append("  none")
    for true, given, count in evaluation.confusions:
        lines.append(f"  {count:>5}  {true} -> {NONE if given is None else given}")
    if evaluation.unknown:
        names = ", ".join(f"{label} ({count})" for label, count in evaluation.unknown.items())
        lines += ["", f"true labels the labels file cannot give (neither a label nor the fallback): {names}"]
    return "\n".join(lines) + "\n"
