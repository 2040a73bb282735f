"""Kafka and MongoDB clients, implementing the engine's `Sink` and `Publisher` protocols."""
