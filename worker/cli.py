"""Entry point: `encoder-worker run | demo | schemas | classify | evaluate`. Logging, signals and telemetry are set up here, once."""

from __future__ import annotations

import argparse
import gc
import logging
import signal
import sys
import threading
from pathlib import Path

from worker.settings import ModelSettings, SettingsError, WorkerSettings, load_settings

log = logging.getLogger("worker")

EXIT_BAD_CONFIG = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="encoder-worker", description="Classify and embed Kafka text events with an encoder model."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run the worker (settings from WORKER_* variables and --config)")
    run.add_argument("--config", type=Path, help="YAML settings file; environment variables win over it")
    demo = commands.add_parser("demo", help="start a local broker, send sample events, classify them, print them")
    demo.add_argument("--events", type=int, default=0, help="extra generated events besides the samples")
    schemas = commands.add_parser("schemas", help="write the JSON Schemas of the event contract")
    schemas.add_argument("--out", type=Path, default=Path("schemas"), help="directory to write (default: schemas)")
    schemas.add_argument("--check", action="store_true", help="fail if the files differ instead of writing")
    classify = commands.add_parser(
        "classify",
        help="label texts without Kafka: one JSON line per text (the fields of a labels record)",
        description="Label texts with the model settings of `run`. With no TEXT, reads standard input: "
        'a line per event, a JSON object with "text" (and an optional "id") or the plain text.',
    )
    classify.add_argument("texts", nargs="*", metavar="TEXT", help="texts to label (default: standard input)")
    evaluate = commands.add_parser(
        "evaluate",
        help="per-label precision, recall and F1 of a labels file on labelled examples, and tuned thresholds",
        description='DATA is a JSON-lines file of {"text": ..., "label": ...} objects.',
    )
    evaluate.add_argument("data", type=Path, metavar="DATA.jsonl", help="labelled examples, one JSON object a line")
    evaluate.add_argument("--json", action="store_true", help="print the report as one JSON object")
    for command in (classify, evaluate):
        command.add_argument("--labels-file", type=Path, help="labels file to use instead of WORKER_MODEL__LABELS_FILE")
        command.add_argument("--config", type=Path, help="YAML settings file, as for `run`")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "run":
        return run_command(args.config)
    if args.command == "demo":
        from worker.demo import run_demo

        return run_demo(extra_events=args.events)
    if args.command in ("classify", "evaluate"):
        from worker import label_commands
        from worker.logs import configure_logging

        configure_logging("text", "WARNING")  # stdout carries the results only
        if args.command == "classify":
            return label_commands.classify_command(args.texts, args.labels_file, args.config, sys.stdin, sys.stdout)
        return label_commands.evaluate_command(args.data, args.labels_file, args.config, args.json, sys.stdout)
    from worker.schemas import write_schemas

    return write_schemas(args.out, check=args.check)


GIL_SWITCH_INTERVAL_S = 0.001


def run_command(config_file: Path | None) -> int:
    from worker.memory import tune_allocator

    tune_allocator()  # before torch allocates anything
    # The model thread needs the GIL between torch ops; Python hands it to a waiting thread only
    # after the switch interval (5 ms by default), so the poll thread's decoding stalled forward
    # passes. 1 ms took the worker from 0.85× to 0.93× of the model alone (docs/benchmarks.md,
    # "Tried and measured").
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    try:
        settings = load_settings(config_file)
    except SettingsError as exc:
        print(f"encoder-worker: {exc}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    from worker.logs import configure_logging

    configure_logging(settings.log.format.value, settings.log.level)
    log.info("effective settings", extra={"settings": settings.masked()})
    stop = threading.Event()
    install_signal_handlers(stop)
    if settings.process.count > 1:
        from worker.processes import run_processes

        return run_processes(settings, config_file, stop)
    try:
        return serve(settings, stop)
    except SettingsError as exc:
        log.error("bad configuration: %s", exc)
        print(f"encoder-worker: {exc}", file=sys.stderr)
        return EXIT_BAD_CONFIG


def serve(settings: WorkerSettings, stop: threading.Event) -> int:
    """Serve the health endpoints, check the brokers, load and warm the model, consume until `stop`."""
    from worker.health import WorkerStatus
    from worker.http_server import HealthServer
    from worker.kafka_clients import check_client_configs, check_topics, instance_id
    from worker.runner import Worker
    from worker.telemetry import setup_telemetry

    telemetry = setup_telemetry(settings.telemetry, instance_id(settings))
    status = WorkerStatus()
    server = None
    if settings.http.port:
        # Up before the model loads, so that probes see "alive, not ready" during start-up.
        server = HealthServer(
            settings.http.host, settings.http.port, status, telemetry.registry, settings.telemetry.liveness_timeout_s
        ).start()
    try:
        check_client_configs(settings)
        check_topics(settings, timeout_s=settings.kafka.startup_timeout_s)
        encoder = load_encoder(settings)
        if stop.is_set():
            return 0
        freeze_startup_objects()
        return Worker(settings, encoder, telemetry.metrics, telemetry.tracing, status).run(stop)
    finally:
        if server is not None:
            server.stop()
        telemetry.shutdown()


def freeze_startup_objects() -> None:
    """Leave what start-up built (torch, transformers, the model: ~10^5 objects) out of garbage collection.

    They live as long as the process, yet every full collection, which the poll loop's per-event
    objects set off, walked them all: 17% of the poll thread's samples were in the collector.
    """
    gc.collect()
    gc.freeze()


def load_encoder(settings: WorkerSettings):  # type: ignore[no-untyped-def]
    """The model, loaded and warmed up at the largest batch the settings allow."""
    from worker.encoder import Encoder, ModelLoadError, on_short_lived_thread
    from worker.labels import LabelsFileError

    def load_and_warm_up() -> Encoder:
        encoder = Encoder(encoder_options(settings.model))
        encoder.warm_up(settings.batch.max_size, settings.batch.max_tokens)
        return encoder

    try:
        # Off this thread: torch work here would leave an OpenMP team behind beside the model thread's.
        return on_short_lived_thread(load_and_warm_up)
    except LabelsFileError as exc:
        raise SettingsError(f"invalid setting WORKER_MODEL__LABELS_FILE: {exc}") from None
    except ModelLoadError as exc:
        raise SettingsError(str(exc)) from None


def encoder_options(model: ModelSettings):  # type: ignore[no-untyped-def]
    """The encoder's options from the model settings (the worker's, or the benchmark's model alone)."""
    from worker.encoder import EncoderOptions, default_model_path

    return EncoderOptions(
        path=model.path or default_model_path(),
        device=model.device,
        dtype=model.dtype,
        max_length=model.max_length,
        pooling=model.pooling.value,
        normalize=model.normalize,
        labels_file=model.labels_file,
        num_threads=model.num_threads,
        name=model.name,
        trace=model.trace,
    )


def install_signal_handlers(stop: threading.Event) -> None:
    def request_stop(signum: int, frame: object) -> None:
        if stop.is_set():
            log.warning("second signal: exiting now")
            raise SystemExit(130)
        log.info("signal received, stopping", extra={"signal": signal.Signals(signum).name})
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)


if __name__ == "__main__":
    sys.exit(main())
