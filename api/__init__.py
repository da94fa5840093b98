"""FastAPI gateway: REST, WebSocket signaling, health, metrics. Publishes intents."""
