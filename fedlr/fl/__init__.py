"""Flower glue: strategies, ServerApp, ClientApp, message keys."""
