"""The benchmark's command-line settings: `--set SECTION.FIELD=VALUE` reaches every worker it starts."""

import pytest

from bench import run


def test_set_overrides_become_worker_environment_settings():
    args = run.parse_args(["--quick", "--set", "batch.max_tokens=32768", "--set", "model.dtype=bfloat16",
                           "--set", "batch.max_size=512", "--baseline-events", "100"])
    assert args.overrides == {"batch": {"max_tokens": "32768", "max_size": "512"}, "model": {"dtype": "bfloat16"}}
    assert run.worker_settings(args.overrides) == {
        "batch__max_tokens": "32768", "batch__max_size": "512", "model__dtype": "bfloat16"}
    assert args.baseline_events == 100


@pytest.mark.parametrize("bad", ["max_tokens=1", "batch.max_tokens", "batch.=3", "a.b.c=1"])
def test_a_malformed_set_names_the_expected_form(bad, capsys):
    with pytest.raises(SystemExit):
        run.parse_args(["--quick", "--set", bad])
    assert "SECTION.FIELD=VALUE" in capsys.readouterr().err


def test_a_gpu_sweeps_larger_batches_than_a_cpu():
    assert max(run.sweep_sizes(False, "cpu")) == 128
    assert max(run.sweep_sizes(False, "cuda:0")) == 512
    assert run.sweep_sizes(True, "cpu") == (32, 64)
