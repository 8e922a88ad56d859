"""The gateway: serves client/, does WebSocket signaling, and routes messages between the
browser and the pipeline.

    browser --ws/json--> Gateway --AudioIn--> asr        (data, PUSH)
                         Gateway --UserText--> llm       (spoken or typed, with the history)
                         Gateway <--AvatarFrame-- lipsync (data, PULL)
                         Gateway <--events-- every stage (PULL)
                         Gateway --control--> every stage (PUB)

The ``Gateway`` holds the sessions and the loops that read the pipeline; each job is its own
piece: turns and what the user heard (``turn_keeper.TurnKeeper``), WebRTC calls and admission
(``calls.Calls``), per-session credits (``flow.FlowControl``), the conversation kept on disk
and sent with every LLM request (``conversation.ConversationStore``), and the access checks
(``access.AccessPolicy``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import ssl
import time
from collections.abc import Callable

import numpy as np
from aiohttp import WSMsgType, web

from services import messages
from services.gateway import signaling, turn_credentials
from services.gateway.access import HOST_REFUSED_MESSAGE, TOKEN_COOKIE, AccessPolicy, host_check_names, host_name
from services.gateway.avatar_library import AvatarLibrary
from services.gateway.avatars_api import AvatarsApi, UploadSettings
from services.gateway.calls import MIC_BACKLOG_CHUNKS, Calls
from services.gateway.engine_prep import EnginePreparations
from services.gateway.conversation import ConversationStore
from services.gateway.flow import FlowControl
from services.gateway.idle_frames import IdleFrames
from services.gateway.limits import AddressCounter, SessionLimits
from services.gateway.llm_outbox import llm_outbox
from services.gateway.media_clock import OutputUnit, SessionMedia
from services.gateway.metrics import GatewayMetrics
from services.gateway.say import SAY_BACKLOG_CLAUSES, Speaker
from services.gateway.session import Session
from services.gateway.settings import GatewaySettings
from services.gateway.stage_outbox import StageOutbox
from services.gateway.turn_keeper import TurnKeeper
from services.media import frames_for_ms
from services.transport import Transport

logger = logging.getLogger(__name__)

IdleImage = Callable[[int], np.ndarray]

_SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": (
        "default-src 'self'; connect-src 'self' ws: wss:; media-src 'self' blob: mediastream:; "
        "img-src 'self' data:; style-src 'self'; script-src 'self'"
    ),
}


# Names the page's stats panel shows for the stage timings (the rest are stage_name_ms).
_STAGE_KEYS = {("asr", "endpoint"): "endpoint_ms", ("asr", "final"): "asr_ms"}


class Gateway:
    def __init__(
        self, settings: GatewaySettings, transport: Transport, idle_image: IdleImage,
        library: AvatarLibrary | None = None, uploads: UploadSettings | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = GatewayMetrics()
        ep = transport.endpoints
        self._control = transport.publish(ep.control)
        self._frames = transport.pull(ep.gateway_frames)
        self._events = transport.pull(ep.gateway_events)
        self.sessions: dict[str, Session] = {}
        self.conversations = ConversationStore(settings.conversations_db)
        # The turns are built first (the flow reports lost media to them), so they reach the
        # flow they poke late-bound.
        # Never awaited by a shared loop (llm_outbox.py); ``immediate``: nothing queues in the
        # socket while the LLM is absent, so only each session's latest question is sent later.
        self.llm_outbox = llm_outbox(transport.push(ep.llm_in, immediate=True), self.sessions)
        self.turns = TurnKeeper(
            self.llm_outbox, self._control, self.conversations, self.metrics, lambda: self.flow.poke()
        )
        self.flow = FlowControl(self._control, lambda: list(self.sessions.values()), self.turns.media_lost)
        # The other stages the gateway sends to, never awaited either (stage_outbox.py).
        self.asr_outbox = StageOutbox("asr", transport.push(ep.asr_in), MIC_BACKLOG_CHUNKS, self._closed_session)
        self.tts_outbox = StageOutbox("tts", transport.push(ep.tts_in), SAY_BACKLOG_CLAUSES, self._stale_turn)
        # With the avatar library, each session shows its own avatar (services/gateway/avatars_api.py).
        self.library = library
        self.calls = Calls(
            settings, self.sessions,
            IdleFrames(idle_image) if library is None else (lambda s: library.idle_frames(s.avatar)),
            self.asr_outbox, self.flow.poke, self._refuse,
            None if library is None else self._avatar_refusal,
        )
        self._tasks: list[asyncio.Task[None]] = []
        self.access = AccessPolicy(
            settings.access_token, settings.allowed_origins, host_check_names(settings.host, settings.allowed_hosts)
        )
        self.speaker = Speaker(self.tts_outbox, self.turns, lambda: self.sessions, self.access, self._refuse)
        # An upload's engine step is the lip-sync stage's, asked over the bus (engine_prep.py).
        self.engine_steps = EnginePreparations(self._control)
        self.avatars = None if library is None else AvatarsApi(
            library, self.access, uploads or UploadSettings(), lambda: {s.avatar for s in self.sessions.values()},
            engine_step=self.engine_steps.run,
        )
        self._per_address = AddressCounter(settings.limits.sessions_per_address)

    # --- HTTP ------------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(middlewares=[_security_headers, self._check_host, self._require_token])
        client = self.settings.client_dir
        app.router.add_get("/", self._index)
        app.router.add_get("/ws", self._websocket)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/api/ice-servers", self._ice_servers)
        app.router.add_post("/api/say", self.speaker.http)
        if self.avatars is not None:
            self.avatars.register(app)
        app.router.add_static("/", client, show_index=False, follow_symlinks=False)
        app.on_startup.append(self._start_background)
        app.on_shutdown.append(self._shutdown)
        return app

    async def _index(self, request: web.Request) -> web.StreamResponse:
        response = web.FileResponse(os.path.join(self.settings.client_dir, "client.html"))
        offered = request.query.get("token")
        if self.access.token and offered and self.access.token_ok(offered):
            # The page keeps the token: same-site requests (/ws, /api/*) carry it from now on.
            response.set_cookie(
                TOKEN_COOKIE, offered, httponly=True, samesite="Strict",
                secure=request.scheme == "https", max_age=30 * 24 * 3600,
            )
        return response

    @web.middleware
    async def _check_host(self, request: web.Request, handler) -> web.StreamResponse:  # noqa: ANN001
        # Every route, the page included: a rebound name must not even load the page.
        if not self.access.host_ok(request.host):
            self.metrics.client_errors.labels("bad_host").inc()
            logger.info("refused a request for %s with Host %r", request.path, request.host)
            return web.json_response(
                {"type": "error", "code": "bad_host",
                 "message": HOST_REFUSED_MESSAGE.format(name=host_name(request.host))},
                status=403,
            )
        return await handler(request)

    @web.middleware
    async def _require_token(self, request: web.Request, handler) -> web.StreamResponse:  # noqa: ANN001
        path = request.path
        if self.access.token and (path in ("/ws", "/metrics") or path.startswith("/api/")):
            if not self.access.token_ok(_offered_token(request)):
                self.metrics.client_errors.labels("no_token").inc()
                return web.json_response(
                    {"type": "error", "code": "token_required",
                     "message": "this avatar needs its access token: open the URL it printed at start "
                                "(it ends in ?token=...)"},
                    status=401,
                )
        return await handler(request)

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "sessions": len(self.sessions)})

    async def _metrics(self, request: web.Request) -> web.Response:
        self.metrics.active_sessions.set(len(self.sessions))
        self.metrics.queued_frames.set(sum(s.media.queued() for s in self.sessions.values()))
        return web.Response(body=self.metrics.render(), content_type="text/plain", charset="utf-8")

    async def _ice_servers(self, request: web.Request) -> web.Response:
        # Only reached past the token check; TURN credentials are minted fresh and expire.
        return web.json_response({"iceServers": self._client_ice_servers("api-" + secrets.token_urlsafe(6))})

    def _client_ice_servers(self, session_id: str) -> list[dict]:
        servers = list(self.settings.ice_servers)
        if self.settings.turn.enabled:
            servers.append(turn_credentials.mint(self.settings.turn, session_id))
        return servers

    # --- background loops ---------------------------------------------------------------------

    async def _start_background(self, app: web.Application) -> None:
        self._tasks = [
            asyncio.create_task(self._frame_loop(), name="gateway-frames"),
            asyncio.create_task(self._event_loop(), name="gateway-events"),
            asyncio.create_task(self._fps_loop(), name="gateway-fps"),
            asyncio.create_task(self.flow.run(), name="gateway-flow"),
            asyncio.create_task(self._idle_loop(), name="gateway-idle"),
            asyncio.create_task(self.llm_outbox.run(), name="gateway-llm-outbox"),
            asyncio.create_task(self.asr_outbox.run(), name="gateway-asr-outbox"),
            asyncio.create_task(self.tts_outbox.run(), name="gateway-tts-outbox"),
        ]

    async def _shutdown(self, app: web.Application) -> None:
        for session in list(self.sessions.values()):
            await self._close_session(session)
        for task in self._tasks:
            task.cancel()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.gather(*self._tasks, return_exceptions=True), 3)

    async def _frame_loop(self) -> None:
        # Never awaits a session: each one's backpressure is its flow credit (services/gateway/
        # flow.py), so one slow or absent consumer cannot stop the frames of the others.
        while True:
            msg = await self._frames.recv()
            try:
                self.on_frame_message(msg)
            except Exception:
                logger.exception("failed to handle %s", type(msg).__name__)

    def on_frame_message(self, msg: object) -> None:
        if isinstance(msg, messages.AvatarText):
            session = self.sessions.get(msg.session)
            if session is not None and msg.turn >= session.turn:
                self.turns.deliver_text(session, msg.turn, msg.text, msg.final)
            return
        if not isinstance(msg, messages.AvatarFrame):
            logger.warning("frames socket got %s", type(msg).__name__)
            return
        session = self.sessions.get(msg.session)
        if session is None:
            self.metrics.stale_frames.inc()
            return
        session.frames_received += 1
        if msg.turn < session.turn:
            self.metrics.stale_frames.inc()
            self.flow.poke()  # dropped, so its credit is free again at once
            return
        unit = OutputUnit(msg.index, msg.audio, msg.image, msg.turn, msg.text, msg.final, idle=False)
        if not session.has_media():
            # Nobody can watch it: drop the frame now, but the page still gets the words.
            self.metrics.frames.labels("dropped").inc()
            self.flow.poke()
            self.turns.deliver_text(session, unit.turn, unit.text, unit.final)
        elif not session.media.offer(unit):
            self.metrics.frames.labels("dropped").inc()
            logger.warning("Session(%s) frame %d beyond its credit: dropped", session.id, msg.index)
            self.turns.deliver_text(session, unit.turn, unit.text, unit.final)

    async def _event_loop(self) -> None:
        while True:
            msg = await self._events.recv()
            try:
                await self._on_event(msg)
            except Exception:
                logger.exception("failed to handle %s", type(msg).__name__)

    async def _idle_loop(self) -> None:
        """Close sessions that have had no media and sent nothing for the idle timeout."""
        timeout = self.settings.limits.idle_timeout_s
        while True:
            await asyncio.sleep(min(5.0, timeout / 4))
            now = time.monotonic()
            for session in list(self.sessions.values()):
                if not session.has_media() and now - session.last_message_at > timeout:
                    logger.info("Session(%s) idle for %.0f s without media: closing", session.id, timeout)
                    session.error("idle_timeout", f"closed after {timeout:.0f} s without a call or a message; press Start to talk again")
                    await session.flush_events()
                    await session.ws.close()

    async def _fps_loop(self) -> None:
        # Once a second: delivered fps, and frames skipped because a track fell behind.
        last = {sid: (s.media.counters.units, s.media.counters.late_units) for sid, s in self.sessions.items()}
        while True:
            await asyncio.sleep(1.0)
            now = {sid: (s.media.counters.units, s.media.counters.late_units) for sid, s in self.sessions.items()}
            self.metrics.delivered_fps.set(sum(now[sid][0] - last.get(sid, now[sid])[0] for sid in now))
            late = sum(now[sid][1] - last.get(sid, now[sid])[1] for sid in now)
            if late:
                self.metrics.frames.labels("late").inc(late)
            last = now

    async def _on_event(self, msg: object) -> None:
        if isinstance(msg, messages.ServiceRestarted):
            self.metrics.service_restarts.labels(msg.service).inc()
            for s in list(self.sessions.values()):
                s.error("service_restarted", f"the {msg.service} service restarted; the current answer may be lost")
                if msg.service == "asr":  # what it was hearing gets no final: ask what was heard
                    await self.turns.asr_restarted(s)
            return
        if isinstance(msg, messages.AvatarPrepared):
            self.engine_steps.on_event(msg)
            return
        session = self.sessions.get(getattr(msg, "session", ""))
        if session is None:
            return
        if isinstance(msg, messages.SpeechStarted):
            await self.turns.speech_started(session)
        elif isinstance(msg, messages.SpeechResumed):
            await self.turns.speech_resumed(session, msg)
        elif isinstance(msg, messages.Transcript):
            await self.turns.transcript(session, msg)
        elif isinstance(msg, messages.StageTiming):
            self.metrics.stage_latency.labels(msg.stage, msg.name).observe(msg.ms)
            key = _STAGE_KEYS.get((msg.stage, msg.name), f"{msg.stage}_{msg.name}_ms")
            session.turn_stats(msg.turn).stages[key] = round(msg.ms, 1)
        elif isinstance(msg, messages.StageNote):
            session.turn_stats(msg.turn).stages[f"{msg.stage}_{msg.name}"] = msg.value
        elif isinstance(msg, messages.LlmStatus):
            # Which model answered, and a slow one said in words (issue 27).
            session.send({"type": "llm", "turn": msg.turn, "model": msg.model, "state": msg.state, "detail": msg.detail})
        elif isinstance(msg, messages.StageError):
            logger.warning("Session(%s) %s error: %s", session.id, msg.stage, msg.message)
            session.error(f"{msg.stage}_error", msg.message)
        else:
            logger.warning("events socket got unexpected %s", type(msg).__name__)

    # --- WebSocket ----------------------------------------------------------------------------

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if not self.access.origin_ok(origin, request.scheme, request.host):
            self.metrics.client_errors.labels("bad_origin").inc()
            logger.info("refused a WebSocket from origin %r (serving %s://%s)", origin, request.scheme, request.host)
            return web.json_response(
                {"type": "error", "code": "bad_origin", "message": "this origin may not use the avatar"},
                status=403,
            )
        # A generous transport limit, so an oversized message gets our clear error instead of
        # a bare close code; signaling.parse enforces the real limit.
        ws = web.WebSocketResponse(heartbeat=20, max_msg_size=4 * signaling.MAX_MESSAGE_BYTES)
        await ws.prepare(request)
        address = request.remote or "?"
        refusal = None
        if len(self.sessions) >= self.settings.max_sessions:
            refusal = ("busy", "the avatar is busy: too many sessions, try again later")
        elif not self._per_address.acquire(address):
            refusal = ("too_many_sessions", f"at most {self.settings.limits.sessions_per_address} sessions per address")
        if refusal is not None:
            self.metrics.client_errors.labels(refusal[0]).inc()
            await ws.send_json({"type": "error", "code": refusal[0], "message": refusal[1]})
            await ws.close()
            return ws
        sid = secrets.token_urlsafe(9)
        # ``session`` is looked up when a unit plays, which is after it is assigned below.
        media = SessionMedia(
            frames_for_ms(self.settings.queue_ms),
            on_unit=lambda unit: self.turns.unit_played(session, unit),
        )
        session = Session(sid, ws, media)
        session.address = address
        session.limits = SessionLimits(self.settings.limits)
        session.conversation = self.conversations.open(None)
        self.sessions[sid] = session
        self.metrics.active_sessions.set(len(self.sessions))
        await self._control.send(messages.SessionOpened(sid))
        self.flow.poke()
        logger.info("Session(%s) opened from %s", sid, address)
        try:
            async for msg in ws:
                if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                    try:
                        await self._on_client_message(session, msg.data)
                    except Exception as exc:  # never let one message end the session
                        logger.exception("Session(%s) failed to handle a message", sid)
                        session.error("internal", f"the server could not handle that message: {exc}")
                elif msg.type == WSMsgType.ERROR:
                    logger.info("Session(%s) websocket error: %s", sid, ws.exception())
        finally:
            await self._close_session(session)
        return ws

    def _resume(self, session: Session, conversation_id: str) -> None:
        """Continue the page's conversation (after a reconnect or a gateway restart), or start one."""
        if session.conversation.id and session.conversation.id == conversation_id:
            return
        session.conversation = self.conversations.open(conversation_id or None)
        if session.conversation.exchanges:
            # Turn numbers continue, so stored exchanges are never overwritten.
            session.turn = max(session.turn, session.conversation.exchanges[-1].turn)
            logger.info("Session(%s) continues a conversation of %d exchanges", session.id, len(session.conversation.exchanges))

    def _closed_session(self, msg: messages.AudioIn) -> bool:
        return msg.session not in self.sessions

    def _stale_turn(self, msg: messages.TextChunk) -> bool:
        session = self.sessions.get(msg.session)
        return session is None or msg.turn < session.turn

    def _refuse(self, session: Session, code: str, message: str) -> None:
        self.metrics.client_errors.labels(code).inc()
        logger.info("Session(%s) refused a message: %s", session.id, message)
        session.error(code, message)

    async def _on_client_message(self, session: Session, raw: str | bytes) -> None:
        session.last_message_at = time.monotonic()
        limits = session.limits
        if not limits.message.take():
            self._refuse(session, "rate_limited", "too many messages: slow down")
            return
        try:
            msg = signaling.parse(raw)
        except signaling.ClientMessageError as exc:
            self._refuse(session, exc.code, str(exc))
            return
        if isinstance(msg, (signaling.Text, signaling.Say)) and not limits.text.take():
            self._refuse(session, "rate_limited", f"too many questions: wait {limits.text.retry_after_s():.0f} s")
            return
        if isinstance(msg, signaling.Offer) and not limits.offer.take():
            self._refuse(session, "rate_limited", f"too many calls: wait {limits.offer.retry_after_s():.0f} s")
            return
        if isinstance(msg, signaling.Hello):
            self._resume(session, msg.conversation)
            await self._choose_avatar(session, msg.avatar)
            session.send({
                "type": "config", "session": session.id, "iceServers": self._client_ice_servers(session.id),
                "conversation": session.conversation.id, "history": session.conversation.transcript(),
                "avatar": session.avatar,
            })
            session.set_state("idle")
        elif isinstance(msg, signaling.Offer):
            await self.calls.offer(session, msg)
        elif isinstance(msg, signaling.Candidate):
            await self.calls.candidate(session, msg)
        elif isinstance(msg, signaling.Text):
            await self.turns.typed(session, msg.text)
        elif isinstance(msg, signaling.Say):
            await self.speaker.say(session, msg.text)
        elif isinstance(msg, signaling.InterruptRequest):
            await self.turns.new_turn(session, reason="stop button")
        elif isinstance(msg, signaling.Ping):
            session.send({"type": "pong", "t": msg.t})
        elif isinstance(msg, signaling.ChooseAvatar):
            await self._choose_avatar(session, msg.avatar)

    async def _choose_avatar(self, session: Session, wanted: str) -> None:
        """The session shows ``wanted`` from now on; lip-sync is told (it loads it from the store)."""
        if self.library is None:
            return
        avatar, problem = self.library.resolve(wanted)
        if problem is not None:
            self._refuse(session, "bad_avatar", problem)
        if avatar == session.avatar:
            return
        if session.pc is not None and session.avatar:
            # The call's video keeps one size; the page hangs up, chooses, and calls again.
            self._refuse(session, "avatar_in_call", "hang up before choosing another face")
            return
        session.avatar = avatar
        await self._control.send(messages.SessionAvatar(session.id, session.turn, avatar))
        session.send({"type": "avatar", "id": avatar})
        self.library.prune(s.avatar for s in self.sessions.values())

    def _avatar_refusal(self, session: Session) -> str | None:
        assert self.library is not None
        if not session.avatar:
            session.avatar = self.library.default_id
        return self.library.call_refusal(session.avatar, [s.avatar for s in self.sessions.values() if s.pc is not None and s is not session])

    async def _close_session(self, session: Session) -> None:
        if self.sessions.pop(session.id, None) is None:
            return
        self._per_address.release(session.address)
        session.media.flush(session.turn + 1)
        self.llm_outbox.forget(session.id)
        self.asr_outbox.forget(session.id)
        self.tts_outbox.forget(session.id)
        await self._control.send(messages.SessionClosed(session.id))
        await session.close()
        if self.library is not None:  # its face's idle pictures go with its last session
            self.library.prune(s.avatar for s in self.sessions.values())
        self.metrics.active_sessions.set(len(self.sessions))
        logger.info("Session(%s) closed", session.id)


def _offered_token(request: web.Request) -> str | None:
    """The token from the query, an ``Authorization: token ...`` header, or the page's cookie."""
    auth = request.headers.get("Authorization", "")
    if auth.lower().startswith("token "):
        return auth[6:].strip()
    return request.query.get("token") or request.cookies.get(TOKEN_COOKIE)


@web.middleware
async def _security_headers(request: web.Request, handler) -> web.StreamResponse:  # noqa: ANN001
    response = await handler(request)
    for key, value in _SECURITY_HEADERS.items():
        response.headers.setdefault(key, value)
    return response


def ssl_context(settings: GatewaySettings) -> ssl.SSLContext | None:
    if not (settings.tls_cert and settings.tls_key):
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(settings.tls_cert, settings.tls_key)
    return ctx
