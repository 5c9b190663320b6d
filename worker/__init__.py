"""encoder-worker: classify and embed Kafka text events with encoder-only transformers."""

__version__ = "0.1.0"
