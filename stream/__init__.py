"""stream: a Kafka stream processor for SMS."""

__version__ = "0.1.0"
