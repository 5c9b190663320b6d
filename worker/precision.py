"""Which numeric precision the model runs in: the rule behind `WORKER_MODEL__DTYPE=auto`.

Pure logic: the request, the device, the CPU's capabilities and the result of the start-up check
in; the precision and the reason the start-up log gives out. The encoder gathers the inputs.

On a CPU, `auto` picks bfloat16 only where the CPU computes it natively (AMX or AVX512-BF16,
which oneDNN uses for torch's matrix products) and only when bfloat16 outputs match float32
ones on the probe texts; elsewhere torch emulates bfloat16 through float32, slower than float32.
Measured with the packaged MiniLM, the model alone: 2.8x float32 on a Xeon with AMX; 2.7-2.8x on
an EPYC (Zen 5) with AVX512-BF16 only (docs/deployment.md, "Precision"). Both flags paid, so the
flags decide; a timed probe at start-up would only add noise to the choice.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

# CPU features (as torch.cpu.get_capabilities() names them) with native bfloat16 arithmetic.
NATIVE_BFLOAT16_FEATURES = ("amx_bf16", "avx512_bf16")
# Bounds bfloat16 outputs must keep to on every probe text, against float32 ones.
MIN_COSINE = 0.999

# Probe texts, shortest first: chat lines to a truncated post, so the check covers padding and long sequences.
PROBE_TEXTS = (
    "hi",
    "thanks, great support!",
    "why was I charged twice this month?",
    "you are a pathetic idiot and everyone here hates you",
    "my order never arrived and the courier says it was delivered yesterday, can someone help?",
    "Ünïcödé, emoji 🙂 and numbers like 4,250.75 or order #A-99817 go through the tokenizer too.",
    "I cancelled the trial period before the deadline but the annual fee was billed anyway. "
    "Customer service promised a refund last week, then nobody answered my emails. "
    "The dashboard still shows the subscription as active and the invoice as paid. "
    "Honestly this is the third time this happens and I am thinking about leaving for good. "
    "Please fix it, restore my account settings and send me the receipt for the refund.",
    "great app " * 150,  # past the default max_length: truncated
)
PROBE_BATCH = 4  # probe texts per batch, in the order above: short and long batches, padded


@dataclass(frozen=True)
class ProbeCheck:
    """How bfloat16 outputs compared with float32 ones on the probe texts."""

    texts: int
    min_cosine: float
    labels_differ: int  # probe texts whose top label changed

    @property
    def passed(self) -> bool:
        return self.min_cosine >= MIN_COSINE and self.labels_differ == 0

    def describe(self, texts: str = "probe texts") -> str:
        return (f"on {self.texts} {texts}: embeddings' cosine to float32 ≥ {self.min_cosine:.5f} "
                f"(bound {MIN_COSINE}), top label changed on {self.labels_differ}")


@dataclass(frozen=True)
class PrecisionChoice:
    dtype: str  # "float32", "float16" or "bfloat16"
    reason: str  # for the start-up log


def compare_outputs(
    reference_embeddings: np.ndarray, reference_scores: np.ndarray,
    candidate_embeddings: np.ndarray, candidate_scores: np.ndarray,
) -> ProbeCheck:
    """The check's figures: rows are probe texts, float32 outputs first."""
    dot = (reference_embeddings * candidate_embeddings).sum(axis=1)
    norms = np.linalg.norm(reference_embeddings, axis=1) * np.linalg.norm(candidate_embeddings, axis=1)
    cosine = dot / np.maximum(norms, 1e-12)
    differ = int((reference_scores.argmax(axis=1) != candidate_scores.argmax(axis=1)).sum())
    return ProbeCheck(texts=len(cosine), min_cosine=float(cosine.min()), labels_differ=differ)


def native_bfloat16_feature(capabilities: Mapping[str, object]) -> str | None:
    """The first CPU feature that computes bfloat16 natively, or None."""
    return next((name for name in NATIVE_BFLOAT16_FEATURES if capabilities.get(name)), None)


def wants_bfloat16_check(requested: str, device_type: str, capabilities: Mapping[str, object]) -> bool:
    """Whether the choice depends on the bfloat16 check (worth running only then: it costs a few passes)."""
    return requested == "auto" and device_type == "cpu" and native_bfloat16_feature(capabilities) is not None


def choose_precision(
    requested: str, device_type: str, capabilities: Mapping[str, object], check: ProbeCheck | None
) -> PrecisionChoice:
    """The precision to run in. `check` is the bfloat16 check's result, when it ran."""
    if requested != "auto":
        return PrecisionChoice(requested, f"set by WORKER_MODEL__DTYPE={requested}")
    if device_type == "cuda":
        return PrecisionChoice("float16", "auto on CUDA: float16")
    feature = native_bfloat16_feature(capabilities)
    if feature is None:
        return PrecisionChoice(
            "float32", "auto on a CPU without native bfloat16 (no " + " or ".join(NATIVE_BFLOAT16_FEATURES)
            + "): float32, as bfloat16 would be emulated and slower")
    if check is None:
        return PrecisionChoice("float32", f"auto on a CPU with {feature}, bfloat16 not checked: float32")
    if not check.passed:
        return PrecisionChoice(
            "float32", f"auto on a CPU with {feature}: bfloat16 failed the check ({check.describe()}): float32")
    return PrecisionChoice("bfloat16", f"auto on a CPU with {feature}: bfloat16 passed the check ({check.describe()})")
