"""DNS rebinding: on loopback the gateway answers only to this machine's host names.

A page on ``http://evil.example:8080`` whose name resolves to 127.0.0.1 sends ``Host`` and
``Origin`` of ``evil.example``; they match each other, and loopback needs no token, so without a
host check that page could drive the avatar. Each test runs the real gateway on a real socket
and sends the headers such a page would send.
"""

import aiohttp
import pytest

from services.gateway.access import AccessConfigError, AccessPolicy, host_check_names, host_name, parse_hosts
from services.gateway.settings import GatewaySettings
from services.settings_util import SettingsError

TOKEN = "t0ken-" + "x" * 24
ROUTES = ("/", "/client.js", "/ws", "/healthz", "/metrics", "/api/ice-servers")


async def _status(http: aiohttp.ClientSession, url, host: str, **headers) -> tuple[int, dict | None]:
    async with http.get(url, headers={"Host": host, **headers}) as r:
        body = await r.json() if r.content_type == "application/json" else None
        return r.status, body


async def test_a_rebound_name_is_refused_on_every_route_with_a_message_naming_the_setting(serve):
    server = await serve()
    port = server.port
    async with aiohttp.ClientSession() as http:
        for path in ROUTES:
            status, body = await _status(
                http, server.make_url(path), f"evil.example:{port}", Origin=f"http://evil.example:{port}"
            )
            assert status == 403, path
            assert body["code"] == "bad_host" and "AVATAR_ALLOWED_HOSTS" in body["message"], body
            assert "evil.example" in body["message"]
        # A POST too (the say command): refused before its handler reads the body.
        async with http.post(server.make_url("/api/say"), json={"text": "hello"},
                             headers={"Host": f"evil.example:{port}"}) as r:
            assert r.status == 403 and (await r.json())["code"] == "bad_host"
        # The WebSocket handshake the issue measured: refused before any session opens.
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(
                server.make_url("/ws"),
                headers={"Host": f"evil.example:{port}", "Origin": f"http://evil.example:{port}"},
            )
        assert refused.value.status == 403
        # Names that only look like ours are not ours.
        for host in (f"localhost.evil.example:{port}", f"127.0.0.1.nip.io:{port}", "evil.example"):
            assert (await _status(http, server.make_url("/metrics"), host))[0] == 403, host


async def test_this_machines_names_are_served_with_or_without_the_port(serve):
    server = await serve()
    port = server.port
    async with aiohttp.ClientSession() as http:
        for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}", f"LOCALHOST.:{port}", "localhost"):
            for path in ("/", "/metrics", "/healthz"):
                assert (await _status(http, server.make_url(path), host))[0] == 200, (host, path)
        async with http.ws_connect(
            server.make_url("/ws"), headers={"Host": f"localhost:{port}", "Origin": f"http://localhost:{port}"}
        ) as ws:
            await ws.send_json({"type": "hello", "version": 1})
            assert (await ws.receive_json(timeout=3))["type"] == "config"


async def test_allowed_hosts_add_names_and_apply_off_loopback_too(serve):
    kiosk = await serve(allowed_hosts=("kiosk.local",))
    async with aiohttp.ClientSession() as http:
        assert (await _status(http, kiosk.make_url("/metrics"), f"kiosk.local:{kiosk.port}"))[0] == 200
        assert (await _status(http, kiosk.make_url("/metrics"), f"evil.example:{kiosk.port}"))[0] == 403

        # Off loopback the token guards; any Host passes the host check, but not the token check.
        lan = await serve(host="0.0.0.0", access_token=TOKEN)
        status, body = await _status(http, lan.make_url("/metrics"), "avatar.lan:8080")
        assert status == 401 and body["code"] == "token_required"
        status, _ = await _status(http, lan.make_url("/metrics"), "avatar.lan:8080", Authorization=f"token {TOKEN}")
        assert status == 200
        # ... and with AVATAR_ALLOWED_HOSTS set, the host check applies there as well.
        proxied = await serve(host="0.0.0.0", access_token=TOKEN, allowed_hosts=("avatar.lan",))
        auth = {"Authorization": f"token {TOKEN}"}
        assert (await _status(http, proxied.make_url("/metrics"), "avatar.lan", **auth))[0] == 200
        assert (await _status(http, proxied.make_url("/metrics"), "localhost:1", **auth))[0] == 200
        assert (await _status(http, proxied.make_url("/metrics"), "evil.example", **auth))[0] == 403


def test_host_names_parse_as_browsers_send_them_and_settings_read_the_environment():
    assert host_name("[::1]:8080") == "::1"
    assert host_name("Localhost.:8080") == "localhost"
    assert host_name("127.0.0.1") == "127.0.0.1"
    assert parse_hosts(" Kiosk.Local, [::1] ,") == ("kiosk.local", "::1")
    for bad in ("kiosk.local:8080", "http://kiosk.local", "a/b"):
        with pytest.raises(AccessConfigError):
            parse_hosts(bad)
    # The bound address counts as this machine; 127.0.0.0/8 is loopback too.
    policy = AccessPolicy(allowed_hosts=host_check_names("127.0.0.1", ()))
    assert policy.host_ok("127.0.0.2:1") and not policy.host_ok("192.168.1.5:8080")
    lan = AccessPolicy(allowed_hosts=host_check_names("192.168.1.5", ("kiosk",)))
    assert lan.host_ok("192.168.1.5:8080") and lan.host_ok("kiosk") and not lan.host_ok("evil.example")
    assert host_check_names("0.0.0.0", ()) is None
    settings = GatewaySettings.from_env({"AVATAR_ALLOWED_HOSTS": "kiosk.local", "AVATAR_CACHE_DIR": "/nonexistent"})
    assert settings.allowed_hosts == ("kiosk.local",)
    with pytest.raises(SettingsError, match="AVATAR_ALLOWED_HOSTS"):
        GatewaySettings.from_env({"AVATAR_ALLOWED_HOSTS": "kiosk:1", "AVATAR_CACHE_DIR": "/nonexistent"})
