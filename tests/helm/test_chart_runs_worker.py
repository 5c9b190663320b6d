"""The chart really configures the worker: run exactly the rendered command and environment."""

from __future__ import annotations

import os
import signal
import subprocess
import uuid

import pytest

from tests.support.kafka_support import FAST_GROUP, json_event, produce, read_json

from worker.local_broker import free_port

from .rendering import rendered_worker

pytestmark = pytest.mark.integration


def test_rendered_command_and_environment_process_events(helm_bin, bootstrap, worker_topics, tiny_bert_dir, tmp_path):
    topics = worker_topics
    group = f"helm-{uuid.uuid4().hex[:8]}"
    rendered = rendered_worker(
        "exactly-once",
        {
            "worker": {
                "kafka": {"bootstrap_servers": bootstrap, "group_id": group, "consumer_config": {**FAST_GROUP, "auto.offset.reset": "earliest"}},
                "topics": {
                    "input": [topics["input"]],
                    "labels": topics["labels"],
                    "embeddings": topics["embeddings"],
                    "dead_letter": topics["dead_letter"],
                },
                "model": {"path": str(tiny_bert_dir), "max_length": 64},
                "http": {"port": free_port()},
            }
        },
    )
    assert rendered.command[:2] == ["encoder-worker", "run"]
    config_file = tmp_path / "config.yaml"
    config_file.write_text(rendered.config_yaml)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("WORKER_")},
        **rendered.local_env(pod_name="rel-encoder-worker-abc12"),
        "HOME": str(tmp_path),
        "HF_HOME": str(tmp_path / "hf"),
    }
    assert env["WORKER_DELIVERY__INSTANCE_ID"] == "rel-encoder-worker-abc12"
    produce(bootstrap, topics["input"], [(None, json_event(f"h{i}", f"chart event {i}")) for i in range(30)])
    log = (tmp_path / "worker.log").open("w")
    process = subprocess.Popen(rendered.local_command(config_file), env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        labels = read_json(bootstrap, topics["labels"], 30, timeout_s=120)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0, (tmp_path / "worker.log").read_text()[-3000:]
    finally:
        if process.poll() is None:
            process.kill()
    assert sorted(r["id"] for r in labels) == sorted(f"h{i}" for i in range(30))
    logs = (tmp_path / "worker.log").read_text()
    assert '"mode": "exactly_once"' in logs or '"mode":"exactly_once"' in logs
