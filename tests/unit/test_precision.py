"""The rule behind WORKER_MODEL__DTYPE=auto: capabilities and check results in, precision and reason out."""

import numpy as np
import pytest

from worker.precision import (
    MIN_COSINE,
    PROBE_TEXTS,
    ProbeCheck,
    choose_precision,
    compare_outputs,
    native_bfloat16_feature,
    wants_bfloat16_check,
)

ZEN5 = {"avx512_f": True, "avx512_bf16": True, "amx_bf16": False, "amx_tile": False}
SAPPHIRE_RAPIDS = {"avx512_f": True, "avx512_bf16": True, "amx_bf16": True, "amx_tile": True}
SKYLAKE = {"avx512_f": True, "avx512_bf16": False, "amx_bf16": False}
PASSED = ProbeCheck(texts=8, min_cosine=0.9999, labels_differ=0)


@pytest.mark.parametrize("requested", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_an_explicit_dtype_always_wins(requested, device):
    for capabilities in (ZEN5, SKYLAKE, {}):
        choice = choose_precision(requested, device, capabilities, None)
        assert choice.dtype == requested and choice.reason == f"set by WORKER_MODEL__DTYPE={requested}"
        assert not wants_bfloat16_check(requested, device, capabilities)


def test_auto_on_cuda_is_float16_without_a_cpu_check():
    assert choose_precision("auto", "cuda", SAPPHIRE_RAPIDS, None).dtype == "float16"
    assert not wants_bfloat16_check("auto", "cuda", SAPPHIRE_RAPIDS)


@pytest.mark.parametrize("capabilities", [SKYLAKE, {}, {"avx2": True}])
def test_auto_on_a_cpu_without_native_bfloat16_is_float32_and_says_why(capabilities):
    assert not wants_bfloat16_check("auto", "cpu", capabilities)
    choice = choose_precision("auto", "cpu", capabilities, None)
    assert choice.dtype == "float32"
    assert "without native bfloat16" in choice.reason and "avx512_bf16" in choice.reason


@pytest.mark.parametrize(("capabilities", "feature"), [(ZEN5, "avx512_bf16"), (SAPPHIRE_RAPIDS, "amx_bf16")])
def test_auto_on_a_native_cpu_is_bfloat16_once_the_check_passes(capabilities, feature):
    assert native_bfloat16_feature(capabilities) == feature
    assert wants_bfloat16_check("auto", "cpu", capabilities)
    choice = choose_precision("auto", "cpu", capabilities, PASSED)
    assert choice.dtype == "bfloat16"
    assert feature in choice.reason and "passed the check" in choice.reason and "0.99990" in choice.reason


@pytest.mark.parametrize("check", [
    ProbeCheck(texts=8, min_cosine=0.9985, labels_differ=0),
    ProbeCheck(texts=8, min_cosine=0.99999, labels_differ=1),
    None,  # not run: no evidence that bfloat16 is good enough
])
def test_auto_on_a_native_cpu_stays_float32_when_the_check_fails_or_did_not_run(check):
    choice = choose_precision("auto", "cpu", ZEN5, check)
    assert choice.dtype == "float32" and "avx512_bf16" in choice.reason
    if check is not None:
        assert "failed the check" in choice.reason and f"top label changed on {check.labels_differ}" in choice.reason


def test_the_cosine_bound_is_inclusive():
    assert ProbeCheck(texts=1, min_cosine=MIN_COSINE, labels_differ=0).passed
    assert not ProbeCheck(texts=1, min_cosine=np.nextafter(MIN_COSINE, 0), labels_differ=0).passed


def test_compare_outputs_takes_the_worst_probe_text():
    rng = np.random.default_rng(7)
    reference = rng.normal(size=(4, 16))
    scores = np.array([[0.1, 0.9], [0.8, 0.2], [0.6, 0.4], [0.3, 0.7]])
    same = compare_outputs(reference, scores, reference.copy(), scores.copy())
    assert same == ProbeCheck(texts=4, min_cosine=pytest.approx(1.0), labels_differ=0) and same.passed

    candidate = reference.copy()
    candidate[2] = reference[2] + 0.05 * rng.normal(size=16)  # one text drifts; scale must not matter
    candidate[1] *= 3.0
    flipped = scores.copy()
    flipped[2] = [0.45, 0.55]
    check = compare_outputs(reference, scores, candidate, flipped)
    expected = reference[2] @ candidate[2] / np.linalg.norm(reference[2]) / np.linalg.norm(candidate[2])
    assert check.min_cosine == pytest.approx(expected) and check.min_cosine < 0.9999
    assert check.labels_differ == 1 and not check.passed


def test_probe_texts_range_from_a_word_to_past_the_default_max_length_shortest_first():
    from worker.settings import ModelSettings

    words = [len(text.split()) for text in PROBE_TEXTS]
    assert words == sorted(words)  # so that each probe batch holds similar lengths
    assert words[0] == 1 and words[-1] > ModelSettings().max_length
