from media_node.announce import announce

SDP = "\r\n".join(
    [
        "v=0",
        "o=- 1 1 IN IP4 0.0.0.0",
        "s=-",
        "t=0 0",
        "m=video 40000 UDP/TLS/RTP/SAVPF 96",
        "c=IN IP4 10.0.0.5",
        "a=candidate:1 1 udp 2130706431 10.0.0.5 40000 typ host",
        "a=candidate:2 1 udp 1694498815 203.0.113.9 40000 typ srflx raddr 10.0.0.5 rport 40000",
        "a=end-of-candidates",
        "",
    ]
)


def test_host_candidates_and_connection_line_get_the_announced_address() -> None:
    out = announce(SDP, "198.51.100.7")
    assert "a=candidate:1 1 udp 2130706431 198.51.100.7 40000 typ host" in out
    assert "c=IN IP4 198.51.100.7" in out
    assert "203.0.113.9 40000 typ srflx" in out, "non-host candidates are left alone"
    assert "o=- 1 1 IN IP4 0.0.0.0" in out


def test_empty_address_changes_nothing() -> None:
    assert announce(SDP, "") == SDP
