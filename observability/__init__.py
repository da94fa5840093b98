"""Metric definitions, logging and tracing setup shared by every roomlog service."""
