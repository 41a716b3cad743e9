"""service/protocol.py extends uvicorn's HttpToolsProtocol: the pin and the internals it relies on."""

from __future__ import annotations

import inspect
import tomllib
from importlib.metadata import version

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.config import Settings
from service.protocol import HttpProtocol, protocol_class
from tests.conftest import ROOT


def test_uvicorn_is_pinned_exactly_and_the_installed_version_is_the_pin() -> None:
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (pin,) = [d for d in dependencies if d.startswith("uvicorn")]
    assert pin.startswith("uvicorn=="), f"{pin}: an upgrade could break service/protocol.py"
    assert version("uvicorn") == pin.split("==")[1]


def test_every_method_the_protocol_overrides_exists_in_uvicorn_with_the_same_parameters() -> None:
    overridden = [
        name
        for name, member in vars(HttpProtocol).items()
        if callable(member) and not name.startswith("_") and hasattr(HttpToolsProtocol, name)
    ]
    assert {"connection_made", "connection_lost", "data_received", "on_url", "on_header"} <= set(overridden)
    for name in overridden:
        ours = list(inspect.signature(getattr(HttpProtocol, name)).parameters)
        theirs = list(inspect.signature(getattr(HttpToolsProtocol, name)).parameters)
        assert ours == theirs, f"{name}: {ours} vs uvicorn's {theirs}"


def test_the_internals_the_protocol_uses_are_still_there() -> None:
    source = inspect.getsource(HttpToolsProtocol)
    for internal in (
        "self.parser",
        "self.transport",
        "self.cycle",
        "self.connections",
        "self.server_state",
        "_unset_keepalive_if_required",
        "send_400_response",
        "_should_upgrade",
        "handle_websocket_upgrade",
        "_unsupported_upgrade_warning",
    ):
        assert internal in source, f"uvicorn's HttpToolsProtocol no longer has {internal}"


def test_protocol_class_carries_the_limits_of_the_settings() -> None:
    settings = Settings(max_header_bytes=4096, max_headers=20, header_timeout_s=3, max_connections=7)
    limits = protocol_class(settings).limits
    assert limits is not None
    assert (limits.max_bytes, limits.max_count, limits.timeout_s, limits.max_connections) == (4096, 20, 3, 7)
