"""`encoder-worker classify` and `encoder-worker evaluate`: try and measure a labels file without Kafka.

Both load the model with the settings `run` uses (WORKER_MODEL__* and --config); `--labels-file`
replaces WORKER_MODEL__LABELS_FILE. Records go to stdout, problems to stderr:
exit 0 when all went well, 1 on bad input (naming the line), 2 on bad settings or labels file.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import orjson

from worker.settings import ModelSettings, SettingsError, WorkerSettings, load_settings

EXIT_BAD_INPUT = 1
EXIT_BAD_CONFIG = 2
BATCH_SIZE = 32


class InputError(ValueError):
    """A line of input that cannot be used; the message names where it is."""


@dataclass(frozen=True)
class TextEvent:
    text: str
    event_id: str | None = None


def classify_command(
    texts: list[str], labels_file: Path | None, config_file: Path | None, stdin: IO[str], stdout: IO[str]
) -> int:
    """One JSON line per text: `label`, `score`, `labels`, `labels_version` (and `id` when given)."""
    from worker.outputs import OutputSerializer

    try:
        settings, model = _model_settings(config_file, labels_file)
        encoder = _load_encoder(model)
    except SettingsError as exc:
        return _fail(str(exc), EXIT_BAD_CONFIG)
    serializer = OutputSerializer(
        encoder.name, encoder.scoring, settings.output.top_k, settings.output.embedding_encoding, model.normalize
    )
    if texts:
        events: Iterable[TextEvent] = _argument_events(texts)
        batch_size = BATCH_SIZE
    else:
        events = read_text_events(stdin, "stdin")
        # Typed at a terminal, each line is answered at once; piped, lines go through in batches.
        batch_size = 1 if stdin.isatty() else BATCH_SIZE
    batch: list[TextEvent] = []
    try:
        for event in events:
            batch.append(event)
            if len(batch) >= batch_size:
                _print_classified(encoder, serializer, batch, stdout)
                batch = []
    except InputError as exc:
        _print_classified(encoder, serializer, batch, stdout)  # the lines before it are answered
        return _fail(str(exc), EXIT_BAD_INPUT)
    _print_classified(encoder, serializer, batch, stdout)
    return 0


def evaluate_command(
    data_file: Path, labels_file: Path | None, config_file: Path | None, as_json: bool, stdout: IO[str]
) -> int:
    """Per-label precision, recall and F1 of a `{"text", "label"}` JSON-lines file, and tuned thresholds."""
    from worker.evaluation import evaluate, render_report

    try:
        examples = read_labelled_examples(data_file)
    except InputError as exc:
        return _fail(str(exc), EXIT_BAD_INPUT)
    try:
        _, model = _model_settings(config_file, labels_file)
        encoder = _load_encoder(model)
    except SettingsError as exc:
        return _fail(str(exc), EXIT_BAD_CONFIG)
    scores = score_texts(encoder, [text for text, _ in examples])
    evaluation = evaluate([label for _, label in examples], scores, encoder.label_set)
    if as_json:
        stdout.write(orjson.dumps(evaluation.as_dict()).decode() + "\n")
    else:
        source = str(encoder.labels_file) if encoder.labels_file is not None else f"the label map of {encoder.name}"
        stdout.write(render_report(evaluation, source))
    return 0


# -- input -------------------------------------------------------------------------------------


def read_text_events(lines: Iterable[str], source: str) -> Iterator[TextEvent]:
    """A line per event: a JSON object with `text` (and an optional `id`), or the text itself.

    A line starting with `{` must be such an object: a typo in JSON is an error, not a text.
    """
    for number, line in enumerate(lines, start=1):
        line = line.rstrip("\r\n")
        where = f"{source} line {number}"
        if line.lstrip().startswith("{"):
            event = _json_object(line, where)
            text, event_id = event.get("text"), event.get("id")
            if not isinstance(text, str) or not text.strip():
                raise InputError(f"{where}: `text` must be a non-empty string")
            if event_id is not None and not isinstance(event_id, str):
                raise InputError(f"{where}: `id` must be a string")
            yield TextEvent(text, event_id)
        elif not line.strip():
            raise InputError(f"{where}: empty text")
        else:
            yield TextEvent(line)


def read_labelled_examples(path: Path) -> list[tuple[str, str]]:
    """(text, label) per non-blank line of a JSON-lines file."""
    try:
        content = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"{path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text ({exc})") from exc
    examples = []
    for number, line in enumerate(content.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path} line {number}"
        example = _json_object(line, where)
        text, label = example.get("text"), example.get("label")
        if not isinstance(text, str) or not text.strip():
            raise InputError(f"{where}: `text` must be a non-empty string")
        if not isinstance(label, str) or not label.strip():
            raise InputError(f"{where}: `label` must be a non-empty string")
        examples.append((text, label.strip()))
    if not examples:
        raise InputError(f"{path}: no examples (expected a JSON object with `text` and `label` per line)")
    return examples


def _json_object(line: str, where: str) -> dict[str, Any]:
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise InputError(f"{where}: not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise InputError(f"{where}: expected a JSON object")
    return value


def _argument_events(texts: list[str]) -> Iterator[TextEvent]:
    for number, text in enumerate(texts, start=1):
        if not text.strip():
            raise InputError(f"TEXT argument {number}: empty text")
        yield TextEvent(text)


# -- the model ---------------------------------------------------------------------------------


def _model_settings(config_file: Path | None, labels_file: Path | None) -> tuple[WorkerSettings, ModelSettings]:
    from worker.labels import LabelsFileError, load_labels_file

    settings = load_settings(config_file)
    # The trace only keeps the worker's other threads from holding up the model; here it would
    # just add to start-up (its outputs are checked equal to the eager pass's anyway).
    model = settings.model.model_copy(update={"trace": False})
    if labels_file is not None:
        model = model.model_copy(update={"labels_file": labels_file})
    if model.labels_file is not None:
        try:  # before the model loads: a bad file is refused at once
            load_labels_file(model.labels_file)
        except LabelsFileError as exc:
            setting = "--labels-file" if labels_file is not None else "WORKER_MODEL__LABELS_FILE"
            raise SettingsError(f"invalid {setting}: {exc}") from None
    return settings, model


def _load_encoder(model: ModelSettings):  # type: ignore[no-untyped-def]
    from worker.cli import encoder_options
    from worker.encoder import Encoder, ModelLoadError

    try:
        return Encoder(encoder_options(model))
    except ModelLoadError as exc:
        raise SettingsError(str(exc)) from None


def score_texts(encoder: Any, texts: list[str]) -> np.ndarray:
    """Scores per text for the encoder's label set, in batches."""
    scores = np.zeros((len(texts), len(encoder.label_set.names)), dtype=np.float32)
    for start in range(0, len(texts), BATCH_SIZE):
        chunk = texts[start : start + BATCH_SIZE]
        scores[start : start + len(chunk)] = encoder.encode(encoder.tokenize(chunk)).scores
    return scores


def _print_classified(encoder: Any, serializer: Any, events: list[TextEvent], stdout: IO[str]) -> None:
    if not events:
        return
    label_set = encoder.label_set
    indices, values = serializer.top_labels(score_texts(encoder, [event.text for event in events]))
    winners = label_set.winners(indices[:, 0], values[:, 0])
    for event, label, row, row_scores in zip(events, winners.tolist(), indices, values.tolist()):
        record: dict[str, Any] = {} if event.event_id is None else {"id": event.event_id}
        record.update(
            label=label,
            score=row_scores[0],
            labels=[{"label": name, "score": score} for name, score in zip(label_set.names_array[row], row_scores)],
            labels_version=label_set.version,
            scoring=encoder.scoring,
            model=encoder.name,
        )
        stdout.write(orjson.dumps(record).decode() + "\n")
    stdout.flush()


def _fail(message: str, code: int) -> int:
    print(f"encoder-worker: {message}", file=sys.stderr)
    return code
