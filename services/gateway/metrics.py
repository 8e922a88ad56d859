"""Prometheus metrics of the gateway, on a registry owned by the gateway (no module globals)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS_MS = (25, 50, 100, 150, 200, 300, 400, 600, 800, 1000, 1500, 2000, 3000, 5000, 10000)


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.stage_latency = Histogram(
            "avatar_stage_latency_ms", "Per-turn latency of a pipeline stage, in ms",
            ["stage", "name"], buckets=_LATENCY_BUCKETS_MS, registry=r,
        )
        self.first_audio = Histogram(
            "avatar_first_audio_ms", "End of user speech to first avatar audio sent, in ms",
            buckets=_LATENCY_BUCKETS_MS, registry=r,
        )
        self.active_sessions = Gauge("avatar_active_sessions", "Open sessions", registry=r)
        self.queued_frames = Gauge("avatar_queued_frames", "Frames waiting in output queues", registry=r)
        self.frames = Counter(
            "avatar_frames_total",
            "Output frames by kind: talking and idle as played, dropped by a barge-in, late (skipped)",
            ["kind"], registry=r,
        )
        self.delivered_fps = Gauge("avatar_delivered_fps", "Video frames sent per second, all sessions", registry=r)
        self.stale_frames = Counter("avatar_stale_frames_total", "Frames of stale turns dropped on arrival", registry=r)
        self.interrupts = Counter("avatar_interrupts_total", "Barge-ins (the avatar was cut off)", registry=r)
        self.speculations = Counter(
            "avatar_speculations_total", "Speculative answers at a tentative end of turn", ["outcome"], registry=r
        )
        self.lost_finals = Counter(
            "avatar_lost_finals_total", "Utterances whose final transcript never came (the latest words stood in)",
            registry=r,
        )
        self.client_errors = Counter("avatar_client_errors_total", "Refused browser messages", ["code"], registry=r)
        self.service_restarts = Counter(
            "avatar_service_restarts_total", "Services restarted by the supervisor", ["service"], registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
