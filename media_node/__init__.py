"""aiortc SFU executor. At this stage: registers and heartbeats its load."""
