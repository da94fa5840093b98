"""Benchmarks: they print measured figures next to a baseline measured in the same run.

``python -m bench.log_throughput --json`` measures the streams worker on the Kafka log.
"""
