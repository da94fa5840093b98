"""The docs say what the code does (issue 14): each check fails when the two drift apart.

- docs/configuration.md lists the env var of every field of every ``*/settings.py``
  ``BaseSettings`` class;
- docs/protocol.md lists every message type the gateway accepts (the ``ClientMessage``
  union) and sends (``api.messages``), and exactly the ``SocketError`` codes;
- docs/api.md lists exactly the ``RestError`` codes;
- streams' and the node's codes belong to the surface they reach;
- the web SDK handles every server message type, and the web client has a sentence for
  every documented error code.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Any, get_args

from pydantic import AliasChoices
from pydantic_settings import BaseSettings

import api.errors
from api.errors import ApiError, RestError, SocketError
from api.messages import SERVER_TYPES
from api.signaling import TYPES, ClientMessage
from media_node.errors import NodeError
from producers.errors import InvalidChatText
from producers.fields import chat_text
from streams.errors import Rejection

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


def section(text: str, heading: str) -> str:
    """The body of the markdown section ``heading`` (up to the next heading of its level or higher)."""
    level = len(heading) - len(heading.lstrip("#"))
    start = text.index(heading + "\n") + len(heading) + 1
    stop = re.compile(rf"^#{{1,{level}}} ", re.M).search(text, start)
    return text[start : stop.start() if stop else len(text)]


def first_column(table_text: str) -> list[str]:
    """The backticked names in the first cell of each row of the markdown tables in the text."""
    names = []
    for line in table_text.splitlines():
        if line.startswith("|") and not line.startswith("|---"):
            names += re.findall(r"`([^`]+)`", line.split("|")[1])
    return names


# --- configuration ---------------------------------------------------------------------


def settings_classes() -> list[type[BaseSettings]]:
    found: list[type[BaseSettings]] = []
    for path in sorted(ROOT.glob("*/settings.py")):
        module = importlib.import_module(f"{path.parent.name}.settings")
        found += [
            value
            for value in vars(module).values()
            if isinstance(value, type)
            and issubclass(value, BaseSettings)
            and value.__module__ == module.__name__
            # a service's class has its own env prefix; the shared mixins of
            # producers/settings.py have none and are checked through the classes using them
            and value.model_config.get("env_prefix")
        ]
    return found


def env_names(cls: type[BaseSettings], name: str, field: Any) -> list[str]:
    alias = field.validation_alias
    if isinstance(alias, str):
        return [alias.upper()]
    if isinstance(alias, AliasChoices):
        return [choice.upper() for choice in alias.choices if isinstance(choice, str)]
    return [f"{cls.model_config.get('env_prefix', '')}{name}".upper()]


def test_configuration_md_lists_every_setting() -> None:
    documented = set(re.findall(r"`([A-Z][A-Z0-9_]+)`", (DOCS / "configuration.md").read_text()))
    classes = settings_classes()
    assert {c.__name__ for c in classes} >= {"ApiSettings", "StreamsSettings", "NodeSettings", "RecorderSettings"}
    missing = [
        f"{cls.__module__}.{cls.__name__}.{name}: {env}"
        for cls in classes
        for name, field in cls.model_fields.items()
        for env in env_names(cls, name, field)
        if env not in documented
    ]
    assert not missing, f"docs/configuration.md does not list: {missing}"


# --- the signaling protocol ------------------------------------------------------------


def client_types() -> set[str]:
    union = get_args(ClientMessage)[0]
    return {t for model in get_args(union) for t in get_args(model.model_fields["type"].annotation)}


def test_protocol_md_lists_every_client_message_type_the_gateway_accepts() -> None:
    documented = set(first_column(section((DOCS / "protocol.md").read_text(), "## Client → server")))
    assert client_types() == TYPES, "the gateway's type check and its models agree"
    assert client_types() <= documented, f"undocumented: {sorted(client_types() - documented)}"
    assert documented <= client_types(), f"documented but not accepted: {sorted(documented - client_types())}"


def test_protocol_md_lists_every_server_message_type_the_gateway_sends() -> None:
    text = (DOCS / "protocol.md").read_text()
    documented = set(first_column(section(text, "## Server → client")))
    calls = section(text, "## Calls")
    documented |= {name for name in first_column(calls) if name.startswith("call-")}
    documented.discard("call-*")  # the row that points to the Calls section
    assert SERVER_TYPES <= documented, f"undocumented: {sorted(SERVER_TYPES - documented)}"
    assert documented <= SERVER_TYPES, f"documented but never sent: {sorted(documented - SERVER_TYPES)}"


def test_protocol_md_lists_exactly_the_socket_error_codes() -> None:
    rows = first_column(section((DOCS / "protocol.md").read_text(), "## Error codes"))
    assert len(rows) == len(set(rows)), "each code once"
    assert set(rows) == set(SocketError), (
        f"missing from the docs: {sorted(set(SocketError) - set(rows))}; "
        f"not in SocketError: {sorted(set(rows) - set(SocketError))}"
    )


def test_api_md_lists_exactly_the_rest_error_codes() -> None:
    rows = first_column(section((DOCS / "api.md").read_text(), "## Errors"))
    assert len(rows) == len(set(rows)), "each code once"
    assert set(rows) == set(RestError), (
        f"missing from the docs: {sorted(set(RestError) - set(rows))}; "
        f"not in RestError: {sorted(set(rows) - set(RestError))}"
    )


def subclasses(cls: type[ApiError]) -> list[type[ApiError]]:
    return [cls] + [s for sub in cls.__subclasses__() for s in subclasses(sub)]


def test_every_code_belongs_to_the_enum_of_the_surface_it_reaches() -> None:
    for module in ("api.quality", "api.recordings", "api.rooms", "api.calls", "api.tokens"):
        importlib.import_module(module)
    assert api.errors.SocketError is SocketError
    for error in subclasses(ApiError):
        assert isinstance(error.code, RestError), f"{error.__name__}.code is not a RestError"
    # streams refusals reach a socket (an `error`) or a REST answer (RequestRejected read by the api)
    stray = set(Rejection) - set(SocketError) - set(RestError)
    assert not stray, f"streams refuse with codes no surface documents: {sorted(stray)}"
    # the node's failures reach the peer's socket through streams (CommandFailed → error)
    assert set(NodeError) <= set(SocketError)
    chat_codes = set()
    for text in ("   ", "x" * 2_001):
        try:
            chat_text(text)
        except InvalidChatText as exc:
            chat_codes.add(exc.code)
    assert chat_codes == {"chat_empty", "chat_too_long"} and chat_codes <= set(Rejection) & set(SocketError)


# --- the web client --------------------------------------------------------------------


def test_the_web_sdk_handles_every_server_message_type() -> None:
    sdk = "\n".join(p.read_text() for p in sorted((ROOT / "web" / "sdk").glob("*.js")))
    quoted = set(re.findall(r"""["']([a-z0-9-]+)["']""", sdk))
    unhandled = sorted(SERVER_TYPES - quoted)
    assert not unhandled, f"web/sdk never names these server messages: {unhandled}"


def test_the_web_client_has_a_sentence_for_every_documented_error_code() -> None:
    messages = (ROOT / "web" / "app" / "messages.js").read_text()
    table = messages[messages.index("{") : messages.index("};")]
    sentences = set(re.findall(r"^\s*([a-z_]+):", table, re.M))
    missing = sorted((set(SocketError) | set(RestError)) - sentences)
    assert not missing, f"web/app/messages.js has no sentence for: {missing}"
