"""aiortc SFU executor: forwards RTP between WebRTC peers without decoding (see README.md)."""
