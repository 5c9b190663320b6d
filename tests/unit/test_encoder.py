"""The encoder against plain transformers, on tiny random BERT and ModernBERT models and the packaged MiniLM."""

import logging
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from tests.support.model_support import LABELS, reference_outputs, save_tiny_model
from worker.encoder import Encoder, EncoderOptions, ModelLoadError, cpu_capabilities, default_model_path
from worker.labels import load_labels_file, parse_labels_file
from worker.precision import MIN_COSINE, native_bfloat16_feature

TEXTS = [
    "short",
    "a somewhat longer sentence about billing and refunds",
    "word " * 300,  # longer than max_length: truncated
    "Ünïcödé and emoji 🙂 survive tokenization",
    "the quick brown fox jumps over the lazy dog " * 3,
]


@pytest.mark.parametrize("kind", ["bert", "modernbert"])
@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_head_model_matches_transformers(kind, pooling, tiny_bert_dir, tiny_modernbert_dir):
    model_dir = tiny_bert_dir if kind == "bert" else tiny_modernbert_dir
    encoder = Encoder(EncoderOptions(path=model_dir, max_length=64, pooling=pooling, device="cpu", dtype="float32"))
    assert encoder.has_head and encoder.scoring == "softmax"
    assert encoder.labels == [LABELS[i] for i in range(3)]
    batch = encoder.tokenize(TEXTS)
    assert max(len(ids) for ids in batch) == 64
    out = encoder.encode(batch)  # one padded batch
    probabilities, embeddings = reference_outputs(model_dir, TEXTS, max_length=64, pooling=pooling)
    np.testing.assert_allclose(out.scores, probabilities, atol=2e-5)
    np.testing.assert_allclose(out.embeddings, embeddings, atol=2e-5)
    assert out.embeddings.shape == (len(TEXTS), 32)
    np.testing.assert_allclose(np.linalg.norm(out.embeddings, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("kind", ["bert", "modernbert", "minilm"])
def test_traced_pass_gives_the_eager_outputs_on_any_batch_shape(kind, tiny_bert_dir, tiny_modernbert_dir):
    model_dir = {"bert": tiny_bert_dir, "modernbert": tiny_modernbert_dir, "minilm": default_model_path()}[kind]
    traced = Encoder(EncoderOptions(path=model_dir, max_length=64, device="cpu", dtype="float32"))
    eager = Encoder(EncoderOptions(path=model_dir, max_length=64, device="cpu", dtype="float32", trace=False))
    assert traced.traced and isinstance(traced._forward, torch.jit.ScriptModule)
    assert not eager.traced and not isinstance(eager._forward, torch.jit.ScriptModule)
    rng = random.Random(3)
    for size in (1, 2, 7, 16):
        texts = [" ".join(["refund"] * rng.randint(1, 90)) for _ in range(size)]
        batch = traced.tokenize(texts)
        got, want = traced.encode(batch), eager.encode(batch)
        np.testing.assert_allclose(got.embeddings, want.embeddings, atol=1e-5)
        np.testing.assert_allclose(got.scores, want.scores, atol=1e-5)


@pytest.mark.parametrize("fault", ["trace raises", "trace differs"])
def test_a_trace_that_fails_or_differs_leaves_the_eager_pass(fault, tiny_bert_dir, monkeypatch, caplog):
    real_trace = torch.jit.trace

    def faulty_trace(module, example, **options):
        if fault == "trace raises":
            raise RuntimeError("unsupported op")
        traced = real_trace(module, example, **options)
        return lambda input_ids, attention_mask: tuple(out + 0.5 for out in traced(input_ids, attention_mask))

    monkeypatch.setattr(torch.jit, "trace", faulty_trace)
    with caplog.at_level(logging.WARNING, logger="worker.encoder"):
        encoder = Encoder(EncoderOptions(path=tiny_bert_dir, max_length=32, device="cpu", dtype="float32"))
    assert not encoder.traced
    warning = next(record for record in caplog.records if record.getMessage().startswith("model not traced"))
    assert ("unsupported op" if fault == "trace raises" else "differ from eager") in warning.error
    probabilities, embeddings = reference_outputs(tiny_bert_dir, TEXTS, max_length=32)
    out = encoder.encode(encoder.tokenize(TEXTS))
    np.testing.assert_allclose(out.scores, probabilities, atol=2e-5)
    np.testing.assert_allclose(out.embeddings, embeddings, atol=2e-5)


def test_multi_label_head_uses_sigmoid(tmp_path):
    model_dir = save_tiny_model(tmp_path, "bert", multi_label=True)
    encoder = Encoder(EncoderOptions(path=model_dir, max_length=32, device="cpu", dtype="float32", normalize=False))
    assert encoder.scoring == "sigmoid"
    out = encoder.encode(encoder.tokenize(TEXTS[:3]))
    probabilities, embeddings = reference_outputs(model_dir, TEXTS[:3], max_length=32, normalize=False)
    np.testing.assert_allclose(out.scores, probabilities, atol=2e-5)
    np.testing.assert_allclose(out.embeddings, embeddings, atol=2e-5)
    assert not np.allclose(out.scores.sum(axis=1), 1.0)


@pytest.fixture(scope="module")
def minilm():
    # float32 explicitly: the tests below compare with float32 transformers at 1e-5.
    return Encoder(EncoderOptions(path=default_model_path(), max_length=128, device="cpu", dtype="float32"))


def test_embedding_model_scores_labels_by_cosine_similarity(minilm):
    assert not minilm.has_head and minilm.scoring == "cosine"
    specs = load_labels_file(minilm.labels_file).labels
    assert minilm.labels == [spec.name for spec in specs]
    texts = ["Why was I charged twice this month?", "you are a worthless idiot"]
    out = minilm.encode(minilm.tokenize(texts))

    tokenizer = AutoTokenizer.from_pretrained(default_model_path())
    model = AutoModel.from_pretrained(default_model_path(), dtype=torch.float32).eval()

    def embed(batch):
        encoded = tokenizer(batch, padding=True, truncation=True, max_length=128, return_tensors="pt")
        with torch.inference_mode():
            hidden = model(**encoded).last_hidden_state
        mask = encoded["attention_mask"].unsqueeze(-1).float()
        return torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)

    expected_embeddings = embed(texts)
    centroids = torch.stack([torch.nn.functional.normalize(embed(list(s.texts)).mean(0), dim=-1) for s in specs])
    np.testing.assert_allclose(out.embeddings, expected_embeddings.numpy(), atol=1e-5)
    np.testing.assert_allclose(out.scores, (expected_embeddings @ centroids.T).numpy(), atol=1e-5)
    assert minilm.labels[int(out.scores[0].argmax())] == "billing question"
    assert minilm.labels[int(out.scores[1].argmax())] == "harassment"


def test_a_new_label_set_scores_through_the_traced_pass(minilm):
    """The label embeddings stay out of the trace: a label set embedded later scores like one
    loaded at start, on the same traced forward pass."""
    assert minilm.traced
    new = minilm.embed_labels(
        parse_labels_file(
            b"labels:\n  - name: shipping\n    examples: [\"Where is my parcel?\", \"My package has not arrived\"]\n"
            b"  - name: praise\n    description: Thanks and compliments\n",
            "new.yaml",
        )
    )
    assert new.names == ("shipping", "praise") and new.version != minilm.label_set.version
    texts = ["my parcel never arrived", "thank you, great service"]
    batch = minilm.tokenize(texts)
    out, before = minilm.encode(batch, new), minilm.encode(batch)
    assert out.scores.shape == (2, 2) and before.scores.shape == (2, len(minilm.labels))
    np.testing.assert_allclose(out.embeddings, before.embeddings)
    matrix = new.matrix.numpy()
    np.testing.assert_allclose(out.scores, out.embeddings @ matrix.T, atol=1e-5)
    assert out.scores.argmax(axis=1).tolist() == [0, 1]


def test_head_models_carry_a_version_of_their_label_map(tiny_bert_dir, tmp_path):
    encoder = Encoder(EncoderOptions(path=tiny_bert_dir, max_length=32, device="cpu", trace=False))
    again = Encoder(EncoderOptions(path=tiny_bert_dir, max_length=32, device="cpu", trace=False))
    assert encoder.label_set.version == again.label_set.version and len(encoder.label_set.version) == 12
    other = Encoder(EncoderOptions(path=save_tiny_model(tmp_path, "bert", multi_label=True), max_length=32,
                                   device="cpu", trace=False))
    assert other.label_set.version == encoder.label_set.version  # same label map, same version
    assert encoder.label_set.fallback is None and not encoder.label_set.has_thresholds


def test_labels_file_turns_a_head_model_into_similarity_scoring(tmp_path, tiny_bert_dir):
    labels = tmp_path / "labels.yaml"
    labels.write_text("labels:\n  - name: a\n    examples: [alpha]\n  - name: b\n    description: beta\n")
    encoder = Encoder(EncoderOptions(path=tiny_bert_dir, labels_file=labels, max_length=32, device="cpu"))
    assert encoder.scoring == "cosine" and encoder.labels == ["a", "b"]
    assert encoder.encode(encoder.tokenize(["x"])).scores.shape == (1, 2)


def test_overflow_token_tells_cut_texts_from_fitting_ones(minilm):
    long_ids, short_ids = minilm.tokenize(["word " * 500, "fits"], allow_overflow_by=1)
    assert len(long_ids) == 129
    assert len(short_ids) < 128


def test_warm_up_runs_a_full_budget_batch(minilm):
    minilm.warm_up(max_size=4, max_tokens=1024)  # 4 rows of 128 tokens must not fail


def test_bad_options_name_the_setting(tmp_path, tiny_bert_dir):
    with pytest.raises(ModelLoadError, match="WORKER_MODEL__PATH"):
        Encoder(EncoderOptions(path=tmp_path))
    with pytest.raises(ModelLoadError, match="WORKER_MODEL__MAX_LENGTH"):
        Encoder(EncoderOptions(path=tiny_bert_dir, max_length=4096))
    if not torch.cuda.is_available():
        with pytest.raises(ModelLoadError, match="WORKER_MODEL__DEVICE"):
            Encoder(EncoderOptions(path=tiny_bert_dir, device="cuda"))
    with pytest.raises(ModelLoadError, match="WORKER_MODEL__DEVICE"):
        Encoder(EncoderOptions(path=tiny_bert_dir, device="tpu"))


def test_reduced_precision_path_stays_close_to_float32(tiny_bert_dir):
    """The fp16/bf16 path (the CUDA default) casts back to float32 for pooling and scores; bf16 runs on CPU."""
    full = Encoder(EncoderOptions(path=tiny_bert_dir, max_length=32, device="cpu", dtype="float32"))
    half = Encoder(EncoderOptions(path=tiny_bert_dir, max_length=32, device="cpu", dtype="bfloat16"))
    assert next(half.model.parameters()).dtype == torch.bfloat16
    ids = full.tokenize(TEXTS)
    a, b = full.encode(ids), half.encode(ids)
    assert b.embeddings.dtype == np.float32 and b.scores.dtype == np.float32
    np.testing.assert_allclose(b.embeddings, a.embeddings, atol=5e-2)
    np.testing.assert_allclose(b.scores, a.scores, atol=5e-2)


NATIVE_BFLOAT16 = native_bfloat16_feature(cpu_capabilities())


@pytest.mark.skipif(NATIVE_BFLOAT16 is None, reason="this CPU has neither AMX nor AVX512-BF16: `auto` runs float32 "
                    "here (torch would emulate bfloat16, slower than float32), so there is no bfloat16 choice to check")
def test_auto_runs_bfloat16_on_a_native_cpu_and_matches_float32_on_held_out_texts():
    """The default on such a CPU, against float32 on the benchmark's mixed lengths (not the probe texts)."""
    from bench.dataset import generate

    auto = Encoder(EncoderOptions(path=default_model_path(), device="cpu"))
    full = Encoder(EncoderOptions(path=default_model_path(), device="cpu", dtype="float32"))
    assert auto.dtype == torch.bfloat16 and next(auto.model.parameters()).dtype == torch.bfloat16
    assert auto.precision.dtype == "bfloat16" and NATIVE_BFLOAT16 in auto.precision.reason
    assert "passed the check" in auto.precision.reason
    texts = generate(300).texts
    batch = full.tokenize(texts)
    assert max(len(ids) for ids in batch) == 256  # long posts, truncated, are part of the set
    got = [auto.encode(batch[i : i + 16]) for i in range(0, len(batch), 16)]
    want = [full.encode(batch[i : i + 16]) for i in range(0, len(batch), 16)]
    embeddings = np.concatenate([g.embeddings for g in got]), np.concatenate([w.embeddings for w in want])
    cosine = (embeddings[0] * embeddings[1]).sum(axis=1)  # unit vectors
    assert cosine.min() >= MIN_COSINE, f"bfloat16 embedding off by cosine {cosine.min():.5f}"
    labels = [np.concatenate([o.scores for o in outs]).argmax(axis=1) for outs in (got, want)]
    # Near-ties between two labels' similarities may flip in bfloat16; a flip elsewhere would not.
    assert (labels[0] == labels[1]).mean() >= 0.98


def test_auto_keeps_float32_weights_bit_for_bit_when_bfloat16_fails_the_check(tiny_bert_dir, monkeypatch, caplog):
    """Whatever the CPU: pretend it has AVX512-BF16 and make the bound unreachable; the check then runs
    bfloat16 (natively or emulated) and must hand back the untouched float32 model."""
    import worker.encoder
    import worker.precision

    monkeypatch.setattr(worker.encoder, "cpu_capabilities", lambda: {"avx512_bf16": True})
    monkeypatch.setattr(worker.precision, "MIN_COSINE", 1.01)
    with caplog.at_level(logging.INFO, logger="worker.encoder"):
        auto = Encoder(EncoderOptions(path=tiny_bert_dir, max_length=32, device="cpu"))
    full = Encoder(EncoderOptions(path=tiny_bert_dir, max_length=32, device="cpu", dtype="float32"))
    assert auto.dtype == torch.float32 and auto.precision.dtype == "float32"
    assert "bfloat16 failed the check" in auto.precision.reason
    chosen = next(r for r in caplog.records if r.getMessage() == "precision chosen")
    assert chosen.dtype == "float32" and chosen.reason == auto.precision.reason
    for a, b in zip(auto.model.state_dict().values(), full.model.state_dict().values()):
        assert a.dtype == torch.float32 and torch.equal(a, b)
    ids = full.tokenize(TEXTS)
    np.testing.assert_array_equal(auto.encode(ids).embeddings, full.encode(ids).embeddings)


def test_auto_without_native_bfloat16_runs_float32_and_skips_the_check(tiny_bert_dir, monkeypatch):
    import worker.encoder

    monkeypatch.setattr(worker.encoder, "cpu_capabilities", lambda: {"avx512_bf16": False, "avx2": True})
    monkeypatch.setattr(worker.encoder, "compare_outputs", lambda *a: pytest.fail("check run without native bfloat16"))
    encoder = Encoder(EncoderOptions(path=tiny_bert_dir, max_length=32, device="cpu"))
    assert encoder.dtype == torch.float32 and "without native bfloat16" in encoder.precision.reason


def test_an_explicit_dtype_wins_over_auto(tiny_bert_dir):
    encoder = Encoder(EncoderOptions(path=tiny_bert_dir, max_length=32, device="cpu", dtype="float32"))
    assert encoder.dtype == torch.float32 and encoder.precision.reason == "set by WORKER_MODEL__DTYPE=float32"


# Half precision on the GPU against float32 on the CPU: unit vectors agree to about 1e-3.
CUDA_TOLERANCE = {"float32": 1e-4, "float16": 5e-3, "bfloat16": 3e-2}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device; CI has none (run on a GPU machine)")
@pytest.mark.parametrize("dtype", list(CUDA_TOLERANCE))
def test_cuda_path_matches_the_cpu(dtype, minilm, tiny_bert_dir):
    """Pinned-memory copies in, one copy back per batch, results in float32 on the host."""
    for cpu in (minilm, Encoder(EncoderOptions(path=tiny_bert_dir, max_length=64, device="cpu", dtype="float32"))):
        gpu = Encoder(EncoderOptions(path=cpu.options.path, max_length=cpu.options.max_length, device="cuda",
                                     dtype=dtype))
        assert gpu.device.type == "cuda" and next(gpu.model.parameters()).dtype == getattr(torch, dtype)
        batch = cpu.tokenize(TEXTS)
        expected, got = cpu.encode(batch), gpu.encode(batch)
        for name in ("embeddings", "scores"):
            array = getattr(got, name)
            assert array.dtype == np.float32 and isinstance(array, np.ndarray)
            np.testing.assert_allclose(array, getattr(expected, name), atol=CUDA_TOLERANCE[dtype], err_msg=name)
        gpu.warm_up(max_size=8, max_tokens=8 * cpu.options.max_length)


def test_device_and_precision_defaults():
    from worker.encoder import resolve_device, resolve_dtype

    assert resolve_dtype("auto", torch.device("cuda")) == torch.float16
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("bfloat16", torch.device("cuda")) == torch.bfloat16
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu").type == "cpu"


LOADER_PROBE = """
import os, sys, time, torch
from worker.cli import load_encoder
from worker.settings import WorkerSettings

def threads():
    # Exiting threads (the loader's) leave asynchronously: wait until the count holds for 0.5 s.
    count, steady_since, deadline = None, time.monotonic(), time.monotonic() + 10
    while time.monotonic() < deadline:
        now = len(os.listdir("/proc/self/task"))
        if now != count:
            count, steady_since = now, time.monotonic()
        elif time.monotonic() - steady_since >= 0.5:
            break
        time.sleep(0.05)
    return count

settings = WorkerSettings(model={"path": sys.argv[1], "num_threads": 2, "device": "cpu"}, batch={"max_size": 4, "max_tokens": 256})
encoder = load_encoder(settings)
after_load = threads()
torch.ones(1 << 22).add_(1)  # large enough for a parallel region: this thread's first OpenMP team
print(after_load, threads())
"""


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts threads through Linux's /proc")
def test_loading_leaves_no_openmp_team_behind_on_the_calling_thread(tiny_bert_dir):
    # The model thread must own the process's only OpenMP team (see on_short_lived_thread). The
    # calling thread's first parallel op starting a helper thread shows it had no team yet.
    result = subprocess.run(
        [sys.executable, "-c", LOADER_PROBE, str(tiny_bert_dir)],
        capture_output=True, text=True, timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stderr
    after_load, after_first_op = map(int, result.stdout.split())
    assert after_first_op == after_load + 1


def test_short_lived_thread_returns_results_and_raises_errors():
    import threading

    from worker.encoder import on_short_lived_thread

    assert on_short_lived_thread(lambda: threading.current_thread() is not threading.main_thread())
    with pytest.raises(ModelLoadError, match="WORKER_MODEL__PATH"):
        on_short_lived_thread(lambda: Encoder(EncoderOptions(path=Path("/nonexistent"))))


@pytest.mark.parametrize("overflow", [0, 1])
def test_tokenize_gives_the_ids_of_the_transformers_tokenizer(tiny_bert_dir, overflow):
    """The worker calls the Rust tokenizer directly (one call per chunk); the ids must not change."""
    from bench import dataset

    encoder = Encoder(EncoderOptions(path=str(tiny_bert_dir), max_length=32, trace=False, dtype="float32"))
    texts = [*dataset.generate(300).texts, "Ünïcödé  spaces\tand\nlines", "x " * 200]
    expected = encoder.tokenizer(texts, truncation=True, max_length=32 + overflow)["input_ids"]
    assert encoder.tokenize(texts, overflow) == expected
    assert max(len(ids) for ids in expected) == 32 + overflow  # truncation was exercised


def test_tokenize_falls_back_to_the_wrapper_without_a_rust_tokenizer(tiny_bert_dir, monkeypatch):
    encoder = Encoder(EncoderOptions(path=str(tiny_bert_dir), max_length=16, trace=False, dtype="float32"))
    expected = encoder.tokenize(["a short text", "and a much longer text " * 10])
    monkeypatch.setattr(type(encoder.tokenizer), "backend_tokenizer", property(lambda self: None))
    encoder._tokenizers.clear()
    assert encoder.tokenize(["a short text", "and a much longer text " * 10]) == expected
    assert encoder._tokenizers == {}  # the wrapper did it
