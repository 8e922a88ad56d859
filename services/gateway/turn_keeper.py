"""Each session's turns: the question, its answer as the user hears it, and the cut-offs.

The gateway owns the turn of every session. A turn begins when the user starts speaking,
types, or presses Stop; beginning one broadcasts ``Interrupt`` and flushes the session's own
output queue at once, so every stage drops the old answer by its stamp (a barge-in).

Invariants:
- What the user heard is what was played (``OutputUnit`` by ``OutputUnit``), or, for a session
  without media, what was delivered as text. Only that is recorded as the avatar's answer.
- A speculative answer (started at the first silence, before the endpoint) runs in a turn of its
  own and stays unplayed (``hold_turn``) until the endpoint commits it; the user going on drops it.
- One turn for one thought: speaking again before the answer is audible continues the question,
  it is not a barge-in on an answer nobody heard.
- A question is never lost with the endpoint's final transcript: when that final does not come
  (the ASR restarted or died mid-utterance), the latest tentative transcript stands in for it,
  once: after ``FINAL_WAIT_S``, at once when the ASR reports its restart, or when the user's next
  onset shows the utterance is over. A final that turns up after that is ignored, unless the
  user had gone on speaking (a SpeechResumed after it): then that utterance is reopened.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from services import messages
from services.gateway.conversation import ConversationStore
from services.gateway.media_clock import OutputUnit
from services.gateway.metrics import GatewayMetrics
from services.gateway.session import Session
from services.gateway.stage_outbox import StageOutbox
from services.transport import Sender

logger = logging.getLogger(__name__)

# How long after a tentative transcript the gateway waits for the endpoint's final. The ASR sends
# it ~220 ms of audio later (the rest of the endpoint's silence, no second decode), so seconds
# mean it was lost; generous, since a busy ASR may run behind its microphone.
FINAL_WAIT_S = 3.0


class TurnKeeper:
    """Turn bookkeeping for all sessions; every method acts on the one session it is given,
    so sessions never wait for each other here."""

    def __init__(
        self,
        llm: StageOutbox[messages.UserText],
        control: Sender,
        conversations: ConversationStore,
        metrics: GatewayMetrics,
        poke_flow: Callable[[], None],
    ) -> None:
        self._llm = llm
        self._control = control
        self._conversations = conversations
        self._metrics = metrics
        # A session's room changed (a flush, a unit played, a held turn released): credits now.
        self._poke_flow = poke_flow
        self.final_wait_s = FINAL_WAIT_S
        # Per session: the tentative transcript whose final is awaited, and the task that stands
        # it in for the final if none comes (owned by the session, so closing it cancels this).
        self._awaiting: dict[str, tuple[messages.Transcript, asyncio.Task[None]]] = {}

    # --- the user ---------------------------------------------------------------------------

    async def speech_started(self, session: Session) -> None:
        if session.id in self._awaiting:
            # A new utterance began, so the last one ended: its final was lost on the way.
            await self._final_lost(session, "speech again before the final")
        await self.new_turn(session, reason="speech")
        session.utterance_turn = session.turn
        session.utterance_open = True
        session.stood_in_carry = None
        session.said_so_far = ""
        # The page may show that it is heard; benchmarks time the onset by it.
        session.send({"type": "speech", "turn": session.turn})

    async def speech_resumed(self, session: Session, msg: messages.SpeechResumed) -> None:
        self._stop_awaiting(session)  # the utterance goes on: its final comes later
        if not session.utterance_open and session.stood_in_carry is not None:
            # The ASR ran so far behind that the deadline stood in for a final, yet the user
            # had gone on: that utterance is not over, and its real final will have it all.
            carry = session.stood_in_carry
            await self.new_turn(session, reason="speech")  # drops the stood-in question's answer
            session.carry = carry
            session.utterance_open = True
            session.stood_in_carry = None
            return
        if msg.turn >= session.utterance_turn and session.speculative is not None:
            await self._drop_speculation(session, "speech resumed")

    async def transcript(self, session: Session, msg: messages.Transcript) -> None:
        # A speculative answer moves the turn on while the utterance goes on, so the ASR may
        # still tag it with the turn it began in.
        if msg.turn < session.utterance_turn:
            return
        if msg.tentative:
            session.said_so_far = msg.text
            self._await_final(session, msg)
            await self._speculate(session, msg)
        elif msg.final:
            if not session.utterance_open and session.stood_in_carry is not None:
                logger.info("Session(%s) final %r came after its tentative stood in for it: ignored",
                            session.id, msg.text)
                session.stood_in_carry = None
                return
            await self._utterance_done(session, msg)
        else:
            session.said_so_far = msg.text
            # The page shows one line per utterance, keyed by the turn it began in.
            session.send({"type": "transcript", "role": "user", "text": msg.text, "final": False,
                          "turn": session.utterance_turn})

    async def typed(self, session: Session, text: str) -> None:
        turn = await self.new_turn(session, reason="typed")
        session.send({"type": "transcript", "role": "user", "text": text, "final": True, "turn": turn,
                      "answer_turn": turn})
        session.turn_stats(turn).speech_end_unix_s = time.time()
        session.set_state("thinking")
        await self._ask(session, turn, text, "typed", time.time())
        session.asked_line = turn

    async def new_turn(self, session: Session, reason: str) -> int:
        """Start a new turn; if the avatar was answering, cut it off (barge-in).

        One turn for one thought: if the user speaks again while the avatar is still thinking
        (its voice has not started), that is the same thought continuing, not a barge-in on an
        answer nobody heard: the answer in flight is dropped, and the question asked so far is
        carried into the new turn, to be asked again together with what is said now.
        """
        continuation = reason == "speech" and session.state == "thinking" and session.asked is not None
        barge_in = session.state in ("thinking", "speaking") and not continuation
        heard = " ".join(session.heard).strip()
        old_turn = session.turn
        if continuation:
            asked_turn, asked_text = session.asked
            session.carry = f"{session.carry} {asked_text}".strip() if session.carry else asked_text
            self._conversations.discard(session.conversation, asked_turn)
            session.send({"type": "transcript", "role": "user", "text": "", "final": True,
                          "turn": session.asked_line, "merged": True})
            logger.info("Session(%s) turn %d continues in turn %d (spoke again before the answer)",
                        session.id, old_turn, old_turn + 1)
        session.asked = None
        session.turn += 1
        dropped = session.media.flush(session.turn)
        self._poke_flow()
        if dropped:
            self._metrics.frames.labels("dropped").inc(dropped)
        session.heard = []
        if barge_in:
            self._conversations.record_answer(session.conversation, old_turn, heard, interrupted=True)
        await self._control.send(messages.Interrupt(session.id, session.turn, heard, barge_in))
        if barge_in:
            self._metrics.interrupts.inc()
            logger.info(
                "Session(%s) barge-in (%s) at turn %d: dropped %d queued frames, heard %r",
                session.id, reason, old_turn, dropped, heard,
            )
            session.send({"type": "interrupted", "turn": old_turn, "heard": heard})
        session.set_state("listening")
        return session.turn

    # --- speculative end of turn -----------------------------------------------------------

    async def _speculate(self, session: Session, msg: messages.Transcript) -> None:
        """Silence after speech: answer what was said so far now, but hold the answer back.

        The LLM (and TTS, and lip-sync within the session's credit) start at once, in a turn of
        their own; its frames wait in the session's queue, unplayed, until the endpoint
        confirms the utterance ended as heard. If the user goes on, that turn is dropped.
        """
        text = " ".join(t for t in (session.carry, msg.text) if t)
        if session.speculative is not None:
            if session.speculative[1] == text:
                return
            await self._drop_speculation(session, "newer tentative text")
        if not text or session.state != "listening":
            return
        turn = await self.new_turn(session, reason="speculative")
        session.media.hold_turn = turn
        session.speculative = (turn, text)
        session.turn_stats(turn).speech_end_unix_s = msg.speech_end_unix_s
        history = session.conversation.history_json(before_turn=turn)
        _request_sent(session, turn, msg.speech_end_unix_s)
        self._llm.put(messages.UserText(session.id, turn, text, "speech", msg.speech_end_unix_s, history))
        self._metrics.speculations.labels("started").inc()

    async def _drop_speculation(self, session: Session, why: str) -> None:
        turn, _text = session.speculative or (session.turn, "")
        session.speculative = None
        session.media.hold_turn = None
        await self.new_turn(session, reason="speculation dropped")
        self._metrics.speculations.labels("dropped").inc()
        logger.info("Session(%s) speculative turn %d dropped (%s)", session.id, turn, why)

    # --- a final that never comes -----------------------------------------------------------

    def _await_final(self, session: Session, tentative: messages.Transcript) -> None:
        self._stop_awaiting(session)
        task = asyncio.create_task(self._final_deadline(session), name=f"final-wait-{session.id}")
        session.own(task)
        self._awaiting[session.id] = (tentative, task)
        task.add_done_callback(lambda t: self._forget(session.id, t))

    async def _final_deadline(self, session: Session) -> None:
        await asyncio.sleep(self.final_wait_s)
        try:
            await self._final_lost(session, f"no final {self.final_wait_s:.1f} s after the tentative")
        except Exception:  # nobody awaits this task: say what went wrong here
            logger.exception("Session(%s) could not stand in for a lost final", session.id)

    def _forget(self, sid: str, task: asyncio.Task[None]) -> None:
        if sid in self._awaiting and self._awaiting[sid][1] is task:
            del self._awaiting[sid]

    def _stop_awaiting(self, session: Session) -> messages.Transcript | None:
        """No longer wait for the final (it came, or speech resumed); the tentative waited on."""
        entry = self._awaiting.pop(session.id, None)
        if entry is None:
            return None
        tentative, task = entry
        if task is not asyncio.current_task():
            task.cancel()
        return tentative

    async def asr_restarted(self, session: Session) -> None:
        """The ASR restarted: an utterance it was hearing will never get its final."""
        if session.utterance_open:
            await self._final_lost(session, "the asr restarted")

    async def _final_lost(self, session: Session, why: str) -> None:
        """The endpoint's final will not come: what was heard so far stands in for it, once."""
        tentative = self._stop_awaiting(session)
        if tentative is None and not session.utterance_open:
            return
        text = tentative.text if tentative is not None else session.said_so_far
        end = tentative.speech_end_unix_s if tentative is not None else 0.0
        logger.warning("Session(%s) turn %d: the final transcript was lost (%s); asking %r",
                       session.id, session.utterance_turn, why, text)
        self._metrics.lost_finals.inc()
        carry = session.carry
        await self._utterance_done(session, messages.Transcript(session.id, session.turn, text, True, end))
        session.stood_in_carry = carry

    async def _utterance_done(self, session: Session, msg: messages.Transcript) -> None:
        """The endpoint: commit the speculative answer if it answers what was said, else ask."""
        self._stop_awaiting(session)
        session.utterance_open = False
        session.stood_in_carry = None
        session.said_so_far = ""
        # What was said before a pause that the avatar had not answered yet joins in.
        text = " ".join(t for t in (session.carry, msg.text) if t)
        spec = session.speculative
        session.speculative = None
        session.media.hold_turn = None
        if spec is not None and spec[1] == text and session.turn == spec[0]:
            session.carry = ""
            turn = spec[0]
            self._conversations.record_user(session.conversation, turn, text)
            session.asked = (turn, text)
            session.asked_line = session.utterance_turn
            session.turn_stats(turn).speech_end_unix_s = msg.speech_end_unix_s
            self._user_final(session, text, answer_turn=turn)
            session.set_state("thinking")
            self._poke_flow()  # its frames may play now
            self._metrics.speculations.labels("committed").inc()
            return
        if spec is not None:
            await self.new_turn(session, reason="speculation replaced")
            self._metrics.speculations.labels("dropped").inc()
        session.carry = ""
        turn = session.turn
        session.turn_stats(turn).speech_end_unix_s = msg.speech_end_unix_s
        self._user_final(session, text, answer_turn=turn if text else None)
        if text:
            session.set_state("thinking")
            await self._ask(session, turn, text, "speech", msg.speech_end_unix_s)
            session.asked_line = session.utterance_turn

    @staticmethod
    def _user_final(session: Session, text: str, answer_turn: int | None) -> None:
        """The user's line, final. The page keys it by the turn the utterance began in; a
        speculative answer runs in a later turn, so ``answer_turn`` says which one answers it."""
        event = {"type": "transcript", "role": "user", "text": text, "final": True, "turn": session.utterance_turn}
        if answer_turn is not None:
            event["answer_turn"] = answer_turn
        session.send(event)

    async def _ask(self, session: Session, turn: int, text: str, source: str, speech_end_unix_s: float) -> None:
        """Record the question and send it to the LLM with the conversation so far (through the
        outbox: this never waits for the LLM, whatever state it is in)."""
        history = session.conversation.history_json(before_turn=turn)
        self._conversations.record_user(session.conversation, turn, text)
        session.asked = (turn, text)
        _request_sent(session, turn, speech_end_unix_s)
        self._llm.put(messages.UserText(session.id, turn, text, source, speech_end_unix_s, history))

    # --- the answer, as heard -----------------------------------------------------------------

    def unit_played(self, session: Session, unit: OutputUnit) -> None:
        """Called by the media clock as each unit starts playing (what the user hears now)."""
        if not unit.idle:
            self._poke_flow()  # its slot in the queue is free again
        self._metrics.frames.labels("idle" if unit.idle else "talking").inc()
        if unit.idle or unit.turn != session.turn:
            return
        stats = session.turn_stats(unit.turn)
        if not stats.first_audio_sent:
            stats.first_audio_sent = True
            session.asked = None  # the answer is audible now: speaking again is a barge-in
            session.set_state("speaking")
            if stats.speech_end_unix_s:
                ms = (time.time() - stats.speech_end_unix_s) * 1000
                stats.stages["first_audio_ms"] = round(ms, 1)
                self._metrics.first_audio.observe(ms)
                logger.info("Session(%s) turn %d: first avatar audio %.0f ms after end of speech",
                            session.id, unit.turn, ms)
        if unit.text:
            session.heard.append(unit.text)
            session.send({"type": "transcript", "role": "avatar", "text": unit.text, "final": False, "turn": unit.turn})
        if unit.final:
            self._answer_done(session, unit.turn)

    def deliver_text(self, session: Session, turn: int, text: str, final: bool) -> None:
        """The answer's words and its end, for a session that does not play them (it reads them)."""
        if text:
            session.heard.append(text)
            session.send({"type": "transcript", "role": "avatar", "text": text, "final": False, "turn": turn})
        if final:
            self._answer_done(session, turn)

    def media_lost(self, session: Session) -> None:
        """The call went away mid-answer: what was queued is not played, but its text is shown."""
        units = session.media.drain()
        if units:
            self._metrics.frames.labels("dropped").inc(len(units))
            logger.info("Session(%s) lost its media: %d queued frames dropped", session.id, len(units))
        for unit in units:
            if unit.turn >= session.turn:
                self.deliver_text(session, unit.turn, unit.text, unit.final)

    def _answer_done(self, session: Session, turn: int) -> None:
        self._conversations.record_answer(session.conversation, turn, " ".join(session.heard), interrupted=False)
        session.send({"type": "transcript", "role": "avatar", "text": "", "final": True, "turn": turn})
        stats = session.turn_stats(turn)
        # The ASR's end of speech on the wall clock: with first_audio_ms it splits a listener's
        # latency into uplink, server and downlink (bench/heard.py).
        end = {"speech_end_unix_ms": round(stats.speech_end_unix_s * 1000, 1)} if stats.speech_end_unix_s else {}
        session.send({"type": "stats", "turn": turn, "stages": stats.stages, **end})
        session.heard = []
        session.set_state("listening")


def _request_sent(session: Session, turn: int, speech_end_unix_s: float) -> None:
    """How long after the end of speech the LLM was asked: the ASR's share of the server span
    (the silence waited for a tentative end, its decode, the hops); see bench/heard.py."""
    if speech_end_unix_s:
        session.turn_stats(turn).stages["llm_request_ms"] = round((time.time() - speech_end_unix_s) * 1000, 1)
