"""The log's contract: the event catalog, the topic registry and the Kafka wrappers.

Every service imports this package; it imports no service.
"""
