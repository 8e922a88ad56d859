"""The suite's human-readable output: summary.md and PNG plots, each naming the hardware."""

from __future__ import annotations

import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on a server
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

logger = logging.getLogger(__name__)


def hardware_line(hw: dict) -> str:
    gpu = hw.get("gpu") or "no GPU"
    return f"{hw.get('cpu')} ({hw.get('cores')} cores, {hw.get('memory_gib')} GiB), {gpu}"


def _fmt(v) -> str:  # noqa: ANN001
    return "–" if v is None else (f"{v:.0f}" if isinstance(v, float) else str(v))


def _row(name: str, s: dict) -> str:
    return f"| {name} | {_fmt(s.get('n'))} | {_fmt(s.get('median'))} | {_fmt(s.get('p95'))} | {_fmt(s.get('worst'))} |"


def summary_markdown(r: dict) -> str:
    hw = hardware_line(r["hardware"])
    lines = [
        "# Benchmark results", "",
        f"- Hardware: **{hw}**",
        f"- Command: `{r['command']}` at commit `{r.get('commit', '')[:10]}`, {r['when']}",
        f"- Took {r.get('duration_s')} s", "",
    ]
    e2e = r.get("end_to_end")
    if e2e:
        lines += ["## End to end, in headless Chromium (ms after the end of the user's speech)", "",
                  "| figure | n | median | p95 | worst |", "|---|---|---|---|---|",
                  _row("first avatar audio heard (last word above -40 dBFS -> answer above -40 dBFS)",
                       e2e.get("heard_ms", {})),
                  _row("- uplink + VAD", e2e.get("uplink_vad_ms", {})),
                  _row("- server (gateway end of speech -> first unit sent)", e2e.get("server_ms", {})),
                  _row("- downlink + playout", e2e.get("downlink_ms", {})),
                  _row("first avatar audio, old definition (from the end of the WAV)", e2e["first_audio_ms"]),
                  _row("first lip-synced frame", e2e["first_lipsynced_frame_ms"]),
                  _row("A/V onset offset (video - audio)", e2e["av_onset_offset_ms"]),
                  _row("received video fps", e2e["fps"]), "",
                  "## Per stage, per turn (ms)", "", "| stage | n | median | p95 | worst |", "|---|---|---|---|---|"]
        lines += [_row(k.removesuffix("_ms"), v) for k, v in e2e["per_stage_ms"].items()]
        lines.append("")
    drift = r.get("av_drift")
    if drift:
        lines += ["## A/V drift over a long answer", "",
                  f"Answer of {drift.get('answer_s')} s: best audio-to-mouth lag {_fmt(drift.get('lag_first_third_ms'))} ms "
                  f"in the first third, {_fmt(drift.get('lag_last_third_ms'))} ms in the last; drift "
                  f"{_fmt(drift.get('drift_ms'))} ms (40 ms resolution).", ""]
    barge = r.get("barge_in")
    if barge:
        b, e = barge["barge_in_ms"], barge["endpoint_ms"]
        lines += ["## Barge-in", "",
                  f"User onset to avatar silent, as heard in the browser: median {_fmt(b['median'])} ms, worst "
                  f"{_fmt(b['worst'])} ms over {b['n']} runs; endpointing delay median {_fmt(e['median'])} ms, "
                  f"worst {_fmt(e['worst'])} ms.", ""]
    ep = r.get("endpointing")
    if ep:
        lines += ["## Endpointing (offline, media time)", "", "| trailing silence | delay median | delay worst | cut in two |",
                  "|---|---|---|---|"]
        lines += [f"| {s['silence_ms']} ms | {_fmt(s['endpoint_delay_ms']['median'])} | {_fmt(s['endpoint_delay_ms']['worst'])} | "
                  f"{s['cut_off_rate']:.0%} |" for s in ep["settings"]]
        lines.append("")
    sm = r.get("smoothness")
    if sm:
        lines += ["## Smoothness", "",
                  f"Over {sm['seconds']:.0f} s of conversation: delivered fps median {_fmt(sm['fps']['median'])}, "
                  f"lowest second {_fmt(sm['fps']['min'])}; Chromium counted {_fmt(sm['freeze_count'])} freezes "
                  f"({_fmt(sm['total_freezes_s'])} s) and {_fmt(sm['frames_dropped'])} dropped frames.", ""]
    ls = r.get("lipsync_speed") or {}
    anim, w2l = ls.get("animation") or {}, ls.get("wav2lip") or {}
    lines += ["## Lip-sync speed", ""]
    if "frames_per_s" in anim:
        lines.append(f"- Embedded animation: {anim['frames_per_s']} frames/s on one core "
                     f"(render median {anim['render_ms_median']} ms).")
    if "fps_by_batch" in w2l:
        by_batch = ", ".join(f"b{k} {v}" for k, v in w2l["fps_by_batch"].items())
        lines.append(f"- Wav2Lip generator ({w2l['chosen_dtype']}, channels_last={w2l['channels_last']}), frames/s: "
                     f"{by_batch}; upstream-style fp32 loop: {w2l['upstream_fp32_batch16_fps']}.")
    mt = ls.get("musetalk") or {}
    skipped = (mt.get("gpu") or {}).get("skipped") if isinstance(mt.get("gpu"), dict) else None
    lines.append(f"- MuseTalk: {skipped or 'see musetalk.json (GPU frames/s by batch size)'}.")
    lines.append("")
    cap = r.get("capacity")
    if cap:
        lines += ["## Capacity", "", f"Sessions held at >= 24 fps received with no late frame: "
                  f"**{cap['sessions_at_25fps']}** (searched up to {cap['searched_up_to']}).", "",
                  "| sessions | min fps | mean fps | late frames |", "|---|---|---|---|"]
        lines += [f"| {lv['sessions']} | {lv['fps_min']} | {lv['fps_mean']} | {lv['late_frames']:.0f} |" for lv in cap["levels"]]
        lines.append("")
    return "\n".join(lines)


def _save(fig, path: Path, hw: str) -> None:  # noqa: ANN001
    fig.text(0.01, 0.01, hw, fontsize=7, color="0.35")
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_plots(r: dict, out_dir: Path) -> list[Path]:
    hw = hardware_line(r["hardware"])
    written = []
    e2e = r.get("end_to_end")
    if e2e:
        stages = {k.removesuffix("_ms"): v for k, v in e2e["per_stage_ms"].items() if v.get("n")}
        fig, ax = plt.subplots(figsize=(8, 4))
        names = list(stages)
        ax.barh(names, [stages[n]["median"] for n in names], color="#4c78a8", label="median")
        ax.scatter([stages[n]["p95"] for n in names], names, color="#e45756", zorder=3, label="p95")
        ax.set_xlabel("ms")
        ax.set_title("Latency per stage, per turn")
        ax.legend()
        path = out_dir / "latency_by_stage.png"
        _save(fig, path, hw)
        written.append(path)
    sm = r.get("smoothness")
    if sm and sm["fps_per_second"]:
        fig, ax = plt.subplots(figsize=(8, 3))
        ax.plot(range(len(sm["fps_per_second"])), sm["fps_per_second"], drawstyle="steps-post")
        ax.axhline(25, color="0.6", linestyle="--", linewidth=1)
        ax.set_ylim(0, 30)
        ax.set_xlabel("s")
        ax.set_ylabel("frames received per s")
        ax.set_title("Delivered video fps in the browser")
        path = out_dir / "smoothness_fps.png"
        _save(fig, path, hw)
        written.append(path)
    cap = r.get("capacity")
    if cap and cap["levels"]:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot([lv["sessions"] for lv in cap["levels"]], [lv["fps_min"] for lv in cap["levels"]], marker="o")
        ax.axhline(24, color="0.6", linestyle="--", linewidth=1)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("concurrent sessions")
        ax.set_ylabel("lowest received fps")
        ax.set_title("Capacity (embedded default)")
        path = out_dir / "capacity.png"
        _save(fig, path, hw)
        written.append(path)
    w2l = (r.get("lipsync_speed") or {}).get("wav2lip") or {}
    if "fps_by_batch" in w2l:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        batches = list(w2l["fps_by_batch"])
        ax.bar(batches, [w2l["fps_by_batch"][b] for b in batches], color="#54a24b",
               label=f"ours ({w2l['chosen_dtype']})")
        ax.axhline(w2l["upstream_fp32_batch16_fps"], color="#e45756", label="upstream-style fp32")
        ax.axhline(25, color="0.6", linestyle="--", linewidth=1)
        ax.set_xlabel("batch size")
        ax.set_ylabel("frames/s")
        ax.set_title("Wav2Lip generator speed")
        ax.legend()
        path = out_dir / "wav2lip_fps.png"
        _save(fig, path, hw)
        written.append(path)
    return written


def write_report(r: dict, out_dir: Path) -> str:
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = write_plots(r, out_dir)
    text = summary_markdown(r) + "\n" + "\n".join(f"![{p.stem}]({p.name})" for p in plots) + "\n"
    (out_dir / "summary.md").write_text(text)
    return text
