"""bench/host_path.py over a real broker and a real (tiny) model: every stage of the worker runs,
every output is delivered, and wider embeddings cost the publisher more."""

from __future__ import annotations

from bench import host_path
from bench.topics import InputWriter, fresh_topics
from worker.cli import encoder_options
from worker.encoder import Encoder
from worker.settings import ModelSettings

EVENTS = 600


def test_the_stages_run_over_consumed_records_and_their_cpu_per_event_is_measured(bootstrap, tiny_bert_dir):
    topics = fresh_topics(bootstrap, "host-path-test")
    writer = InputWriter(bootstrap, topics.input)
    writer.send_all((f"e{i}", f"event number {i} " + "word " * (i % 40)) for i in range(EVENTS))
    writer.flush()
    encoder = Encoder(encoder_options(ModelSettings(path=tiny_bert_dir)))
    batch = {"max_size": 64, "max_tokens": 8192, "sort_window": 256}
    path = host_path.measure(bootstrap, topics, EVENTS, encoder, batch, chunk=100, repetitions=2)
    assert len(path.repetitions) == 2 and path.events == EVENTS
    for width in host_path.WIDTHS:
        stages = path.stage_us(width)
        assert all(us > 0 for us in stages.values()), stages
        assert path.locked_us(width) == sum(stages[s] for s in host_path.LOCKED)
    # 768 floats per event to render as JSON against 32: many times the work, on any machine.
    assert path.stage_us(768)["publish"] > path.stage_us(32)["publish"] * 1.5
