"""Metrics, probes, logs and the small HTTP server that serves them; read by nobody inside."""
