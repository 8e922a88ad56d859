"""WebRTC calls: admission, the SDP offer and answer, ICE candidates, and the microphone.

Invariants:
- At most ``max_calls`` calls are up at once (admission): one more would take every call below
  25 fps, so the page gets a clean "busy" and can still type.
- A session has at most one call; a new offer replaces it.
- The session's tracks read only its own ``SessionMedia``; its microphone goes to the ASR
  stamped with its session and turn, through the ASR's outbox (stage_outbox.py): never awaited,
  so an ASR that is down or restarting leaves the microphone read and its backlog bounded.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping

import numpy as np
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.sdp import candidate_from_sdp

from services import messages
from services.gateway import signaling
from services.gateway.idle_frames import IdleFrames
from services.gateway.session import Session
from services.gateway.settings import GatewaySettings
from services.gateway.stage_outbox import StageOutbox
from services.gateway.tracks import (
    AvatarAudioTrack,
    AvatarVideoTrack,
    forward_microphone,
    shorten_mic_jitter_buffer,
)
from services.gateway.vp8_encoder import use_rendered_vp8_encoder

logger = logging.getLogger(__name__)

# Microphone audio one session may have waiting for the ASR, in 20 ms chunks: the ASR's inbox
# never waits (its lanes take each chunk at once), so only an ASR that is down or restarting
# leaves audio here, and the second before it came back is all that is still worth hearing.
MIC_BACKLOG_CHUNKS = 50

Refuse = Callable[[Session, str, str], None]


class Calls:
    def __init__(
        self,
        settings: GatewaySettings,
        sessions: Mapping[str, Session],
        idle_frames: IdleFrames | Callable[[Session], IdleFrames],
        asr: StageOutbox[messages.AudioIn],
        poke_flow: Callable[[], None],
        refuse: Refuse,
        admit: Callable[[Session], str | None] | None = None,
    ) -> None:
        self._settings = settings
        self._sessions = sessions
        self._idle_frames = idle_frames
        self._asr = asr
        # A call coming or going changes what a session can play: credits now.
        self._poke_flow = poke_flow
        self._refuse = refuse
        # More than the call count: e.g. the memory of the avatars the calls show (avatar_library).
        self._admit = admit

    async def offer(self, session: Session, offer: signaling.Offer) -> None:
        calls = sum(1 for s in self._sessions.values() if s.pc is not None and s is not session)
        if calls >= self._settings.max_calls:
            self._refuse(session, "busy", f"the avatar is busy: {calls} calls at once is all this machine can hold at "
                                          "full frame rate; try again shortly (typed questions still work)")
            return
        refusal = self._admit(session) if self._admit is not None else None
        if refusal is not None:
            self._refuse(session, "busy", refusal)
            return
        if session.pc is not None:
            # A new offer replaces the call (e.g. the page restarted it).
            old, session.pc = session.pc, None
            await old.close()
        own = self._settings.server_ice_servers
        servers = self._settings.ice_servers if own is None else own
        config = RTCConfiguration(iceServers=[RTCIceServer(**s) for s in servers])
        pc = RTCPeerConnection(config)
        session.pc = pc

        @pc.on("track")
        def on_track(track) -> None:  # noqa: ANN001 (aiortc callback)
            if track.kind == "audio":
                session.own(asyncio.create_task(
                    forward_microphone(track, lambda pcm: self._send_mic(session, pcm)),
                    name=f"mic-{session.id}",
                ))

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            logger.info("Session(%s) WebRTC %s", session.id, pc.connectionState)
            session.send({"type": "webrtc", "state": pc.connectionState})
            if pc.connectionState == "connected":
                session.connected_at = time.monotonic()
            self._poke_flow()
            if pc.connectionState == "failed":
                session.error("ice_failed", "the media connection failed (see /selftest.html for a connection check)")
                await pc.close()

        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer.sdp, type="offer"))
            for transceiver in pc.getTransceivers():
                # Before any media flows (that starts after ICE and DTLS).
                if transceiver.kind == "audio":
                    shorten_mic_jitter_buffer(transceiver.receiver)
            pc.addTrack(AvatarAudioTrack(session.media))
            idle = self._idle_frames if isinstance(self._idle_frames, IdleFrames) else self._idle_frames(session)
            pc.addTrack(AvatarVideoTrack(session.media, idle))
            answer = await pc.createAnswer()
            await pc.setLocalDescription(answer)
            for transceiver in pc.getTransceivers():
                # The codec is negotiated now; the first frame is encoded after ICE and DTLS.
                if transceiver.kind == "video":
                    use_rendered_vp8_encoder(transceiver)
        except Exception as exc:  # aiortc raises ValueError and others for bad SDP
            logger.info("Session(%s) bad offer: %s", session.id, exc)
            session.pc = None
            await pc.close()
            session.error("bad_sdp", f"could not use the SDP offer: {exc}")
            return
        session.send({"type": "answer", "sdp": pc.localDescription.sdp})
        session.set_state("listening")

    async def candidate(self, session: Session, msg: signaling.Candidate) -> None:
        if session.pc is None or not msg.candidate:
            return
        try:
            cand = candidate_from_sdp(msg.candidate.removeprefix("candidate:"))
            cand.sdpMid, cand.sdpMLineIndex = msg.sdp_mid, msg.sdp_mline_index
            await session.pc.addIceCandidate(cand)
        except Exception as exc:
            session.error("bad_candidate", f"could not use the ICE candidate: {exc}")

    def _send_mic(self, session: Session, pcm: np.ndarray) -> None:
        # While the avatar's voice plays (or echoes), the ASR asks for stronger evidence of speech.
        audible = session.media.avatar_audible(self._settings.echo_tail_ms / 1000)
        self._asr.put(messages.AudioIn(session.id, session.turn, pcm, audible))
