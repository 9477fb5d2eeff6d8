"""Receivers (OTLP gRPC/HTTP, CloudEvents, label feedback) and the normalising step."""
