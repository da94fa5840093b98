"""ICE servers and TURN REST credentials (api/ice.py), without a server."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from pydantic import SecretStr, ValidationError

from api.ice import ice_servers, turn_credential, turn_urls
from api.settings import ApiSettings


def test_credential_is_the_coturn_rest_api_hmac() -> None:
    username, credential = turn_credential("s3cret", "alice:home", 1_700_000_000)
    assert username == "1700000000:alice:home"
    digest = hmac.new(b"s3cret", b"1700000000:alice:home", hashlib.sha1).digest()
    assert base64.b64decode(credential) == digest and len(digest) == 20


def test_turn_url_without_transport_means_udp_and_tcp() -> None:
    assert turn_urls("turn:h:3478") == ["turn:h:3478?transport=udp", "turn:h:3478?transport=tcp"]
    assert turn_urls("turn:h:3478?transport=tcp") == ["turn:h:3478?transport=tcp"]
    assert turn_urls("turns:h:5349") == ["turns:h:5349"]


def test_servers_from_settings() -> None:
    settings = ApiSettings(
        stun_urls=["stun:h:3478"],
        turn_urls=["turn:h:3478"],
        turn_secret=SecretStr("k"),
        turn_ttl_s=600,
        ice_servers=[{"urls": ["stun:extra:19302"]}],
    )
    servers = ice_servers(settings, "bob", now=1000.9)
    assert servers[0] == {"urls": ["stun:h:3478"]}
    assert servers[1]["username"] == "1600:bob"
    assert servers[1]["credential"] == turn_credential("k", "bob", 1600)[1]
    assert servers[2] == {"urls": ["stun:extra:19302"]}
    assert ice_servers(ApiSettings(), "bob") == []


def test_settings_accept_comma_lists_and_refuse_bad_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROOMLOG_API_TURN_URLS", "turn:a:1, turn:b:2")
    monkeypatch.setenv("ROOMLOG_API_TURN_SECRET", "xyzzy-turn-secret")
    monkeypatch.setenv("ROOMLOG_API_STUN_URLS", '["stun:a:1"]')
    settings = ApiSettings()
    assert settings.turn_urls == ["turn:a:1", "turn:b:2"] and settings.stun_urls == ["stun:a:1"]
    assert "xyzzy" not in repr(settings)
    for name in ("ROOMLOG_API_TURN_URLS", "ROOMLOG_API_TURN_SECRET", "ROOMLOG_API_STUN_URLS"):
        monkeypatch.delenv(name)
    for bad in (
        {"turn_urls": ["turn:a:1"]},
        {"turn_urls": ["http://a"], "turn_secret": "k"},
        {"stun_urls": ["turn:a:1"]},
        {"tls_cert": "/c.pem"},
        {"turn_ttl_s": 5},
    ):
        with pytest.raises(ValidationError):
            ApiSettings(**bad)  # type: ignore[arg-type]
