// Browser client for the local talking avatar.
//
// One WebSocket (/ws, same origin) carries signalling and control as JSON messages; one
// RTCPeerConnection carries the microphone up and the avatar's video + voice down. The offer is
// sent once ICE gathering has finished (no trickle), so the server needs no candidate messages.
//
// Every call lives in its own `Call` object; handlers of an old call check `call.closed` so that
// late events from a hung-up call never touch the page of a newer one.
//
// Server text is only ever written with textContent, never parsed as HTML.
"use strict";

(() => {
  const PROTOCOL_VERSION = 1;
  const MAX_TEXT_CHARS = 500;
  const PING_INTERVAL_MS = 5000;
  const ICE_GATHER_CAP_MS = 3000;
  const CONFIG_WAIT_CAP_MS = 2000;
  const STATS_INTERVAL_MS = 1000;
  // Holding the picture back to the voice (alignVideo): how often, how much of the gap at once,
  // what gap is left alone (the receiver's clocks move in 10-40 ms steps), and at most how much.
  const AV_ALIGN_INTERVAL_MS = 500;
  const AV_ALIGN_GAIN = 0.5;
  const AV_ALIGN_DEADBAND_MS = 10;
  const AV_ALIGN_MAX_MS = 1000;

  const STAGE_LABELS = {
    endpoint_ms: "End of speech detected",
    asr_ms: "Speech recognition",
    llm_request_ms: "LLM asked",
    llm_first_token_ms: "LLM first token",
    llm_first_clause_ms: "LLM first clause",
    tts_first_audio_ms: "TTS first audio",
    lipsync_first_frame_ms: "Lip-sync first frame",
    first_audio_ms: "First audio (total)",
  };

  const $ = (id) => {
    const el = document.getElementById(id);
    if (!el) throw new Error(`client.html lacks #${id}`);
    return el;
  };

  const ui = {
    start: $("start"),
    stop: $("stop"),
    hangup: $("hangup"),
    video: $("avatar"),
    audio: $("avatar-audio"),
    placeholder: $("video-placeholder"),
    transcript: $("transcript"),
    form: $("text-form"),
    input: $("text-input"),
    send: $("send"),
    error: $("error"),
    errorMessage: $("error-message"),
    errorDismiss: $("error-dismiss"),
    connState: $("conn-state"),
    avatarState: $("avatar-state"),
    statsToggle: $("stats-toggle"),
    stats: $("stats"),
    statsTurn: $("stats-turn"),
    statsStages: $("stats-stages"),
    statsFps: $("stats-fps"),
    statsAudioLevel: $("stats-audio-level"),
    statsRtt: $("stats-rtt"),
    statsModel: $("stats-model"),
    micMeter: $("mic-meter"),
  };

  // The public handle the end-to-end test reads. Updated in place, never replaced.
  const api = {
    pc: null,
    ws: null,
    session: null,
    connectionState: "idle",
    avatarState: "idle",
    // Why the question waits ("thinking is starting up", "thinking is retrying"), or "".
    waiting: "",
    // The turn of the user's latest speech onset as the server heard it (0: none yet).
    speechTurn: 0,
    stats: {},
    transcript: [],
    getInboundStats: () => readInboundStats(),
  };
  window.avatarClient = api;

  let call = null; // the current Call, or null between calls
  // Inbound stats of the previous sample, to derive fps where framesPerSecond is missing.
  let lastVideoSample = null;

  // ---------------------------------------------------------------- error banner

  function showError(message, code) {
    ui.errorMessage.textContent = String(message || "Unknown error");
    if (code) ui.error.dataset.code = String(code);
    else delete ui.error.dataset.code;
    ui.error.hidden = false;
  }

  function clearError() {
    ui.errorMessage.textContent = "";
    delete ui.error.dataset.code;
    ui.error.hidden = true;
  }

  ui.errorDismiss.addEventListener("click", clearError);

  // ---------------------------------------------------------------- state display

  function setConnState(state) {
    api.connectionState = state;
    ui.connState.textContent = state;
    ui.connState.dataset.state = state;
  }

  function setAvatarState(state) {
    const word = ["idle", "listening", "thinking", "speaking"].includes(state) ? state : "idle";
    api.avatarState = word;
    ui.avatarState.textContent = api.waiting ? `${word}: ${api.waiting}` : word;
    ui.avatarState.dataset.state = word;
  }

  function setButtons() {
    const inCall = call !== null && !call.closed;
    const wsOpen = inCall && call.ws && call.ws.readyState === WebSocket.OPEN;
    ui.start.disabled = inCall;
    ui.stop.disabled = !wsOpen;
    ui.hangup.disabled = !inCall;
  }

  // Combines the WebSocket and the peer connection into the one word the header shows.
  function refreshConnState() {
    if (!call || call.closed) return;
    const ws = call.ws;
    const pcState = call.pc ? call.pc.connectionState : "new";
    if (pcState === "failed") setConnState("failed");
    else if (!ws || ws.readyState === WebSocket.CONNECTING) setConnState("connecting");
    else if (ws.readyState !== WebSocket.OPEN) setConnState("disconnected");
    else if (pcState === "connected") setConnState("connected");
    else if (pcState === "disconnected") setConnState("disconnected");
    else setConnState("connecting");
    setButtons();
  }

  // ---------------------------------------------------------------- transcript

  // One element per (role, turn); typed messages wait as "pending" user entries until the
  // server's own user transcript for them arrives with a turn number.
  const entries = new Map();

  function entryKey(role, turn) {
    return `${role}:${turn}`;
  }

  function makeEntry(role, turn) {
    const el = document.createElement("div");
    el.className = "entry";
    el.dataset.role = role;
    el.dataset.turn = turn === null ? "" : String(turn);
    el.dataset.final = "false";
    const who = document.createElement("span");
    who.className = "who";
    who.textContent = role === "user" ? "You" : "Avatar";
    const text = document.createElement("span");
    text.className = "text";
    el.append(who, text);
    // `view` is the plain copy that window.avatarClient.transcript exposes.
    const view = { role, turn, text: "", final: false, interrupted: false };
    api.transcript.push(view);
    return { role, turn, text: "", final: false, interrupted: false, el, textEl: text, view };
  }

  function syncRecord(record) {
    record.textEl.textContent = record.text;
    record.el.dataset.final = String(record.final);
    record.el.dataset.turn = record.turn === null ? "" : String(record.turn);
    Object.assign(record.view, {
      turn: record.turn,
      text: record.text,
      final: record.final,
      interrupted: record.interrupted,
    });
  }

  function appendEntry(record) {
    const box = ui.transcript;
    // Only follow the conversation if the person has not scrolled up to read.
    const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
    box.append(record.el);
    if (atBottom) box.scrollTop = box.scrollHeight;
  }

  function scrollIfNearBottom() {
    const box = ui.transcript;
    if (box.scrollHeight - box.scrollTop - box.clientHeight < 120) box.scrollTop = box.scrollHeight;
  }

  function adoptPendingUserEntry(turn, text) {
    const pending = entries.get("pending");
    if (!pending) return null;
    const index = pending.findIndex((r) => r.text === text.trim());
    if (index < 0) return null;
    const [record] = pending.splice(index, 1);
    if (pending.length === 0) entries.delete("pending");
    record.turn = turn;
    return record;
  }

  function onTranscript(msg) {
    const role = msg.role === "user" ? "user" : "avatar";
    const turn = Number.isFinite(msg.turn) ? msg.turn : null;
    const text = typeof msg.text === "string" ? msg.text : "";
    const final = msg.final === true;
    const key = entryKey(role, turn);
    let record = entries.get(key);
    if (msg.merged === true) {
      // The user went on speaking before the answer started: this line joined the next turn,
      // which the server shows whole.
      if (record) {
        record.el.remove();
        entries.delete(key);
      }
      return;
    }
    if (!record && role === "user") record = adoptPendingUserEntry(turn, text);
    if (!record) {
      // An avatar answer that ends with nothing said leaves no empty bubble behind.
      if (role === "avatar" && final && text.trim() === "") return;
      record = makeEntry(role, turn);
      appendEntry(record);
    }
    entries.set(key, record);
    if (role === "user") {
      // User partials replace the line; the final replaces it once more.
      if (text.trim() !== "") record.text = text.trim();
    } else if (text.trim() !== "") {
      // Avatar clauses arrive one by one as they are spoken.
      record.text = record.text ? `${record.text} ${text.trim()}` : text.trim();
    }
    if (final) record.final = true;
    syncRecord(record);
    scrollIfNearBottom();
  }

  // The server dropped the interrupted answer before it sent this event; what is still on its
  // way (the jitter buffer: ~100 ms) would play on over the user. Mute it here until drained;
  // the next answer cannot start this soon (it waits for the user to finish).
  const INTERRUPT_MUTE_MS = 300;
  let unmuteTimer = null;

  function muteInterruptedTail() {
    ui.audio.muted = true;
    api.lastMuteAt = performance.now();
    clearTimeout(unmuteTimer);
    unmuteTimer = setTimeout(() => { ui.audio.muted = false; }, INTERRUPT_MUTE_MS);
  }

  function onInterrupted(msg) {
    muteInterruptedTail();
    const turn = Number.isFinite(msg.turn) ? msg.turn : null;
    const heard = typeof msg.heard === "string" ? msg.heard.trim() : "";
    const key = entryKey("avatar", turn);
    let record = entries.get(key);
    if (!record) {
      if (!heard) return;
      record = makeEntry("avatar", turn);
      record.text = heard;
      entries.set(key, record);
      appendEntry(record);
    }
    if (!record.interrupted) {
      const cut = document.createElement("span");
      cut.className = "cut";
      cut.textContent = " —";
      cut.title = "interrupted";
      record.el.append(cut);
    }
    record.interrupted = true;
    record.final = true;
    record.el.classList.add("interrupted");
    record.el.dataset.interrupted = "true";
    syncRecord(record);
  }

  function addTypedEntry(text) {
    const record = makeEntry("user", null);
    record.text = text;
    record.final = true;
    record.el.classList.add("pending");
    const pending = entries.get("pending") || [];
    pending.push(record);
    entries.set("pending", pending);
    appendEntry(record);
    syncRecord(record);
    ui.transcript.scrollTop = ui.transcript.scrollHeight;
  }

  // ---------------------------------------------------------------- stats

  function onStats(msg) {
    const stages = {};
    if (msg.stages && typeof msg.stages === "object") {
      for (const [name, value] of Object.entries(msg.stages)) {
        if (typeof value === "number" && Number.isFinite(value)) stages[name] = value;
        else if (typeof value === "string" && value.length <= 40) stages[name] = value;  // a mode
      }
    }
    api.stats.turn = Number.isFinite(msg.turn) ? msg.turn : null;
    api.stats.stages = stages;
    renderStages();
  }

  // Which model answered (issue 27); a slow one is said in the error banner until it answers.
  function onLlmStatus(msg) {
    if (typeof msg.model !== "string" || typeof msg.state !== "string") return;
    const model = msg.model.slice(0, 200);
    api.stats.model = model;
    api.stats.llmState = msg.state;
    ui.statsModel.textContent = msg.state === "slow" ? `${model} (slow)` : model;
    if (msg.state === "slow") {
      showError(typeof msg.detail === "string" && msg.detail ? msg.detail.slice(0, 300)
        : "The language model is slow to answer.", "llm_slow");
    } else if (ui.error.dataset.code === "llm_slow") {
      clearError();
    }
  }

  function renderStages() {
    const stages = api.stats.stages || {};
    const rows = [];
    const names = Object.keys(STAGE_LABELS).filter((n) => n in stages)
      .concat(Object.keys(stages).filter((n) => !(n in STAGE_LABELS)));
    for (const name of names) {
      const dt = document.createElement("dt");
      dt.textContent = STAGE_LABELS[name] || name;
      const dd = document.createElement("dd");
      dd.textContent = typeof stages[name] === "string" ? stages[name] : `${Math.round(stages[name])} ms`;
      dd.dataset.stage = name;
      rows.push(dt, dd);
    }
    if (rows.length === 0) {
      const dt = document.createElement("dt");
      dt.className = "muted";
      dt.textContent = "No turn yet";
      rows.push(dt, document.createElement("dd"));
    }
    ui.statsStages.replaceChildren(...rows);
    ui.statsTurn.textContent = api.stats.turn === null || api.stats.turn === undefined
      ? "" : `(turn ${api.stats.turn})`;
  }

  async function readInboundStats() {
    const result = { audioBytes: 0, audioEnergy: 0, audioLevel: 0, videoFrames: 0, fps: 0 };
    const pc = call && !call.closed ? call.pc : null;
    if (!pc) return result;
    let report;
    try {
      report = await pc.getStats();
    } catch (err) {
      console.warn("getStats failed", err);
      return result;
    }
    let fpsReported = null;
    let framesDecoded = 0;
    report.forEach((s) => {
      if (s.type !== "inbound-rtp") return;
      const kind = s.kind || s.mediaType;
      if (kind === "audio") {
        result.audioBytes += s.bytesReceived || 0;
        result.audioEnergy += s.totalAudioEnergy || 0;
        if (typeof s.audioLevel === "number") result.audioLevel = s.audioLevel;
      } else if (kind === "video") {
        framesDecoded += s.framesDecoded || 0;
        if (typeof s.framesPerSecond === "number") fpsReported = s.framesPerSecond;
      }
    });
    result.videoFrames = framesDecoded;
    const now = performance.now();
    if (fpsReported !== null) {
      result.fps = fpsReported;
    } else if (lastVideoSample && now - lastVideoSample.time > 200) {
      // Firefox has no framesPerSecond on inbound-rtp; derive it from the frame counter.
      result.fps = ((framesDecoded - lastVideoSample.frames) * 1000) / (now - lastVideoSample.time);
    } else if (lastVideoSample) {
      result.fps = lastVideoSample.fps;
    }
    if (!lastVideoSample || now - lastVideoSample.time > 200) {
      lastVideoSample = { time: now, frames: framesDecoded, fps: result.fps };
    }
    return result;
  }

  // Chrome lines a call's audio and video up only once both streams have sent RTCP sender
  // reports, then by at most 80 ms a second and never within 30 ms; meanwhile the voice waits
  // longer in its jitter buffer than the picture does in its own, and the mouth runs ahead of
  // the voice (measured: the video playing 100-500 ms of sender time ahead on a busy machine).
  // The receiver's playout clocks (estimatedPlayoutTimestamp, in the sender's time) say by how
  // much; the video receiver's jitterBufferTarget holds the picture back by that, smoothed.
  // Those clocks need two sender reports per stream: for the first 2-4 s of a call they are
  // missing, and the first answer's mouth led its voice by 30-55 ms (bench/av_sync.py). Until
  // then the two jitter buffers' recent delays stand in (the voice's minus the picture's: within
  // 5 ms of the clocks' gap once both exist, measured).
  async function alignVideo(c) {
    const pc = c.pc;
    const receiver = pc && pc.getReceivers().find((r) => r.track && r.track.kind === "video");
    if (!receiver || !("jitterBufferTarget" in receiver)) return;
    let audio = null;
    let video = null;
    const buffers = {};
    try {
      (await pc.getStats()).forEach((s) => {
        if (s.type !== "inbound-rtp") return;
        if (s.kind === "audio" || s.kind === "video") buffers[s.kind] = [s.jitterBufferDelay || 0, s.jitterBufferEmittedCount || 0];
        if (!s.estimatedPlayoutTimestamp) return;
        if (s.kind === "audio") audio = s.estimatedPlayoutTimestamp;
        else if (s.kind === "video") video = s.estimatedPlayoutTimestamp;
      });
    } catch (err) {
      return;
    }
    if (c.closed) return;
    const recent = (kind) => {
      const now = buffers[kind];
      const before = c.alignBuffers && c.alignBuffers[kind];
      if (!now || !before || now[1] <= before[1]) return null;
      return (1000 * (now[0] - before[0])) / (now[1] - before[1]);
    };
    const audioWait = recent("audio");
    const videoWait = recent("video");
    c.alignBuffers = buffers;
    // > 0: the picture shows sender time the voice has not reached.
    let lead = null;
    if (audio !== null && video !== null) {
      lead = video - audio;
      api.stats.videoAlignedBy = "playout-clocks";
    } else if (audioWait !== null && videoWait !== null) {
      lead = audioWait - videoWait;
      api.stats.videoAlignedBy = "jitter-buffers";
    }
    if (lead === null) return;
    api.stats.videoLeadMs = lead;
    if (Math.abs(lead) < AV_ALIGN_DEADBAND_MS) return;
    const hold = Math.min(AV_ALIGN_MAX_MS, Math.max(0, (receiver.jitterBufferTarget || 0) + AV_ALIGN_GAIN * lead));
    try {
      receiver.jitterBufferTarget = hold;
      api.stats.videoHoldMs = hold;
    } catch (err) {
      console.warn("jitterBufferTarget refused", err);
    }
  }

  async function pollStats(c) {
    const s = await readInboundStats();
    if (c.closed) return;
    api.stats.fps = s.fps;
    api.stats.audioLevel = s.audioLevel;
    api.stats.videoFrames = s.videoFrames;
    api.stats.audioBytes = s.audioBytes;
    ui.statsFps.textContent = s.videoFrames > 0 ? s.fps.toFixed(1) : "–";
    ui.statsAudioLevel.textContent = s.audioBytes > 0 ? s.audioLevel.toFixed(3) : "–";
  }

  function setStatsVisible(visible) {
    ui.stats.hidden = !visible;
    ui.statsToggle.setAttribute("aria-expanded", String(visible));
    if (visible && call && !call.closed) startMicMeter(call);
  }

  ui.statsToggle.addEventListener("click", () => setStatsVisible(ui.stats.hidden));
  document.addEventListener("keydown", (event) => {
    if (event.key !== "s" && event.key !== "S") return;
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const target = event.target;
    if (target instanceof HTMLElement && (target.isContentEditable
        || ["INPUT", "TEXTAREA", "SELECT"].includes(target.tagName))) return;
    setStatsVisible(ui.stats.hidden);
  });

  // The meter only animates while the panel is visible and the call is live.
  function startMicMeter(c) {
    if (!c.analyser || c.meterRunning) return;
    c.meterRunning = true;
    const samples = new Float32Array(c.analyser.fftSize);
    const draw = () => {
      if (c.closed || ui.stats.hidden) {
        c.meterRunning = false;
        ui.micMeter.style.width = "0";
        return;
      }
      c.analyser.getFloatTimeDomainData(samples);
      let sum = 0;
      for (const v of samples) sum += v * v;
      const rms = Math.sqrt(sum / samples.length);
      // Map -60..0 dBFS onto the meter so that quiet speech still moves it.
      const db = 20 * Math.log10(Math.max(rms, 1e-6));
      const fraction = Math.min(1, Math.max(0, (db + 60) / 60));
      api.stats.micLevel = rms;
      ui.micMeter.style.width = `${(fraction * 100).toFixed(0)}%`;
      requestAnimationFrame(draw);
    };
    requestAnimationFrame(draw);
  }

  // ---------------------------------------------------------------- call lifecycle

  function micConstraints() {
    const query = new URLSearchParams(window.location.search);
    const flag = (name) => query.get(name) !== "0";
    return {
      audio: {
        echoCancellation: flag("ec"),
        noiseSuppression: flag("ns"),
        autoGainControl: flag("agc"),
      },
      video: false,
    };
  }

  function describeMicError(err) {
    const name = err && err.name;
    if (name === "NotAllowedError" || name === "SecurityError") {
      return "Microphone access was refused. Allow the microphone for this page and press Start "
        + "again. (Browsers only allow it on http://localhost or HTTPS.)";
    }
    if (name === "NotFoundError" || name === "OverconstrainedError") {
      return "No microphone was found. Connect one and press Start again.";
    }
    if (name === "NotReadableError") {
      return "The microphone is in use by another program or could not be opened.";
    }
    return `Could not open the microphone: ${err && err.message ? err.message : err}`;
  }

  const INSECURE_MESSAGE = "This page is not in a secure context, so the browser will not give it "
    + "the microphone. Open it via http://localhost:<port>/ on this machine, or serve it over "
    + "HTTPS.";

  // The access token (needed off localhost) comes in the URL the server printed. The server
  // also sets a cookie when the page loads with it; this copy covers browsers that drop it.
  const TOKEN_KEY = "avatar-token";
  (function keepToken() {
    const fromUrl = new URLSearchParams(window.location.search).get("token");
    try {
      if (fromUrl) window.sessionStorage.setItem(TOKEN_KEY, fromUrl);
    } catch (err) { /* storage disabled: the cookie still works */ }
  })();

  // The conversation id the server gave us: sent with hello, so a reconnect (or a restarted
  // server) continues the same conversation instead of starting over.
  const CONVERSATION_KEY = "avatar-conversation";

  function keptConversation() {
    try {
      return window.sessionStorage.getItem(CONVERSATION_KEY) || "";
    } catch (err) {
      return "";
    }
  }

  function keepConversation(id) {
    try {
      if (typeof id === "string" && id) window.sessionStorage.setItem(CONVERSATION_KEY, id);
    } catch (err) { /* storage disabled: a reconnect starts a new conversation */ }
  }

  // After a reconnect the server sends what was said so far; show it once, as finished lines.
  function showHistory(history) {
    if (!Array.isArray(history) || ui.transcript.childElementCount > 0) return;
    for (const item of history) {
      if (!item || typeof item.text !== "string" || !item.text.trim()) continue;
      const record = makeEntry(item.role === "user" ? "user" : "avatar", null);
      record.text = item.text.trim();
      record.final = true;
      appendEntry(record);
      syncRecord(record);
    }
    ui.transcript.scrollTop = ui.transcript.scrollHeight;
  }

  function tokenQuery() {
    let token = new URLSearchParams(window.location.search).get("token");
    try {
      token = token || window.sessionStorage.getItem(TOKEN_KEY);
    } catch (err) { /* ignore */ }
    return token ? `?token=${encodeURIComponent(token)}` : "";
  }

  function wsUrl() {
    const scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
    return `${scheme}//${window.location.host}/ws${tokenQuery()}`;
  }

  // A refused WebSocket shows no reason to the page; the same check over HTTP says why.
  async function refusalReason() {
    try {
      const response = await fetch(`/api/ice-servers${tokenQuery()}`, { cache: "no-store" });
      if (response.ok) return null;
      const body = await response.json();
      return typeof body.message === "string" ? body.message : `the server refused (HTTP ${response.status})`;
    } catch (err) {
      return null;
    }
  }

  function send(c, message) {
    if (c.closed || !c.ws || c.ws.readyState !== WebSocket.OPEN) return false;
    c.ws.send(JSON.stringify(message));
    return true;
  }

  function waitForIceGathering(pc) {
    if (pc.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        pc.removeEventListener("icegatheringstatechange", onChange);
        pc.removeEventListener("icecandidate", onCandidate);
        resolve();
      };
      const onChange = () => { if (pc.iceGatheringState === "complete") done(); };
      const onCandidate = (event) => { if (!event.candidate) done(); };
      // Send what we have after the cap: some networks never finish gathering.
      const timer = setTimeout(done, ICE_GATHER_CAP_MS);
      pc.addEventListener("icegatheringstatechange", onChange);
      pc.addEventListener("icecandidate", onCandidate);
    });
  }

  function openSocket(c) {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(wsUrl());
      c.ws = ws;
      api.ws = ws;
      ws.addEventListener("open", () => resolve(ws), { once: true });
      ws.addEventListener("error", async () => {
        const reason = await refusalReason();
        reject(new Error(reason ? `The server refused the connection: ${reason}.`
          : `Could not connect to ${window.location.host}.`));
      }, { once: true });
      ws.addEventListener("message", (event) => onSocketMessage(c, event));
      ws.addEventListener("close", (event) => onSocketClose(c, event));
    });
  }

  function onSocketMessage(c, event) {
    if (c.closed) return;
    let msg;
    try {
      msg = JSON.parse(event.data);
    } catch (err) {
      console.warn("ignoring a message that is not JSON", event.data);
      return;
    }
    if (!msg || typeof msg.type !== "string") return;
    switch (msg.type) {
      case "config":
        c.session = typeof msg.session === "string" ? msg.session : null;
        api.session = c.session;
        keepConversation(msg.conversation);
        api.conversation = typeof msg.conversation === "string" ? msg.conversation : null;
        showHistory(msg.history);
        reconnectAttempts = 0;
        c.iceServers = Array.isArray(msg.iceServers) ? msg.iceServers : [];
        api.avatar = typeof msg.avatar === "string" ? msg.avatar : null;
        c.resolveConfig();
        break;
      case "answer":
        onAnswer(c, msg);
        break;
      case "state":
        setAvatarState(msg.state);
        break;
      case "waiting":
        api.waiting = typeof msg.message === "string" ? msg.message : "";
        setAvatarState(api.avatarState);
        break;
      case "speech":
        if (Number.isInteger(msg.turn)) api.speechTurn = msg.turn;
        break;
      case "transcript":
        onTranscript(msg);
        break;
      case "interrupted":
        onInterrupted(msg);
        break;
      case "stats":
        onStats(msg);
        break;
      case "llm":
        onLlmStatus(msg);
        break;
      case "error":
        showError(typeof msg.message === "string" ? msg.message : "The server reported an error.",
          typeof msg.code === "string" ? msg.code : "");
        break;
      case "pong":
        if (typeof msg.t === "number") {
          api.stats.rttMs = Date.now() - msg.t;
          ui.statsRtt.textContent = `${Math.round(api.stats.rttMs)} ms`;
        }
        break;
      default:
        console.debug("ignoring message of unknown type", msg.type);
    }
  }

  async function onAnswer(c, msg) {
    if (!c.pc || typeof msg.sdp !== "string") return;
    try {
      await c.pc.setRemoteDescription({ type: "answer", sdp: msg.sdp });
    } catch (err) {
      if (c.closed) return;
      showError(`The server's answer could not be used: ${err.message || err}`);
      endCall(c, "failed");
    }
  }

  // A connection lost by accident (server restart, network blip) comes back by itself, with
  // the same conversation; one the server closed on purpose (1000: busy, idle, refused) does not.
  const RECONNECT_MAX_ATTEMPTS = 30;
  const RECONNECT_MAX_DELAY_MS = 5000;
  let reconnectAttempts = 0;
  let reconnectTimer = null;

  function onSocketClose(c, event) {
    if (c.closed) return;
    const reason = event.reason ? `: ${event.reason}` : "";
    const accidental = event.code !== 1000 && c.session !== null;
    endCall(c, accidental ? "connecting" : (event.code === 1000 ? "closed" : "disconnected"));
    if (accidental && reconnectAttempts < RECONNECT_MAX_ATTEMPTS) {
      const delay = Math.min(RECONNECT_MAX_DELAY_MS, 500 * 2 ** reconnectAttempts);
      reconnectAttempts += 1;
      showError(`The connection to the server was lost (code ${event.code}${reason}); `
        + `reconnecting in ${(delay / 1000).toFixed(1)} s...`, "reconnecting");
      clearTimeout(reconnectTimer);
      reconnectTimer = setTimeout(() => { startCall({ reconnect: true }); }, delay);
      return;
    }
    showError(`The connection to the server closed (code ${event.code}${reason}). `
      + "Press Start to connect again.");
  }

  function onTrack(c, event) {
    if (c.closed) return;
    // One stream holds both remote tracks; the video element stays muted and the audio element
    // plays the voice, so getStats counts the audio and nothing plays twice.
    if (!c.remoteStream) c.remoteStream = new MediaStream();
    if (!c.remoteStream.getTracks().includes(event.track)) c.remoteStream.addTrack(event.track);
    if (ui.video.srcObject !== c.remoteStream) ui.video.srcObject = c.remoteStream;
    if (ui.audio.srcObject !== c.remoteStream) ui.audio.srcObject = c.remoteStream;
    if (event.track.kind === "video") ui.placeholder.hidden = true;
    // The Start click is the user gesture that allows this; report if the browser refuses.
    ui.video.play().catch(() => {});
    ui.audio.play().catch((err) => {
      // AbortError only means a newer play() or source change superseded this one.
      if (!c.closed && err.name !== "AbortError") showError(`The browser blocked the avatar's voice: ${err.message || err}`);
    });
  }

  // `?ice=relay` in the page's URL: media only through the TURN relay (iceTransportPolicy
  // "relay"), for checking a TURN set-up; without it the browser takes the best path it finds.
  function iceTransportPolicy() {
    return new URLSearchParams(window.location.search).get("ice") === "relay" ? "relay" : "all";
  }

  function createPeer(c) {
    const pc = new RTCPeerConnection({ iceServers: c.iceServers || [], iceTransportPolicy: iceTransportPolicy() });
    c.pc = pc;
    api.pc = pc;
    pc.addEventListener("track", (event) => onTrack(c, event));
    pc.addEventListener("connectionstatechange", () => {
      if (c.closed) return;
      refreshConnState();
      if (pc.connectionState === "failed") {
        showError("The media connection failed (no network path between the browser and the "
          + "server). Press Start to try again.");
        endCall(c, "failed");
      }
    });
    for (const track of c.mic.getAudioTracks()) pc.addTrack(track, c.mic);
    pc.addTransceiver("video", { direction: "recvonly" });
    return pc;
  }

  function startMicAnalyser(c) {
    try {
      const AudioCtx = window.AudioContext || window.webkitAudioContext;
      c.audioContext = new AudioCtx();
      const source = c.audioContext.createMediaStreamSource(c.mic);
      c.analyser = c.audioContext.createAnalyser();
      c.analyser.fftSize = 1024;
      source.connect(c.analyser);
      // Created after an await, so some browsers start it suspended; the Start click's sticky
      // user activation lets it resume.
      c.audioContext.resume().catch(() => {});
    } catch (err) {
      // The meter is a nicety; the call works without it.
      console.warn("mic level meter unavailable", err);
      c.analyser = null;
    }
  }

  async function startCall(options = {}) {
    if (call && !call.closed) return;
    clearTimeout(reconnectTimer);
    if (!options.reconnect) reconnectAttempts = 0;
    else api.reconnects = (api.reconnects || 0) + 1;
    clearError();
    if (!window.isSecureContext || !navigator.mediaDevices
        || !navigator.mediaDevices.getUserMedia) {
      showError(INSECURE_MESSAGE, "insecure_context");
      setConnState("failed");
      return;
    }
    const c = {
      closed: false,
      ws: null,
      pc: null,
      mic: null,
      session: null,
      iceServers: [],
      remoteStream: null,
      audioContext: null,
      analyser: null,
      meterRunning: false,
      pingTimer: null,
      statsTimer: null,
      alignTimer: null,
      alignBuffers: null,
      resolveConfig: () => {},
    };
    call = c;
    api.pc = null;
    api.ws = null;
    api.session = null;
    for (const key of Object.keys(api.stats)) delete api.stats[key];
    renderStages();
    // A new session numbers its turns anew: keep the old lines on screen but never update them
    // from the new session.
    entries.clear();
    setConnState("connecting");
    setAvatarState("idle");
    setButtons();
    try {
      c.mic = await navigator.mediaDevices.getUserMedia(micConstraints());
    } catch (err) {
      if (c.closed) return;
      showError(describeMicError(err), "microphone");
      endCall(c, "failed");
      return;
    }
    if (c.closed) {
      c.mic.getTracks().forEach((t) => t.stop());
      return;
    }
    startMicAnalyser(c);
    if (!ui.stats.hidden) startMicMeter(c);

    const configReceived = new Promise((resolve) => { c.resolveConfig = resolve; });
    try {
      await openSocket(c);
    } catch (err) {
      if (c.closed) return;
      endCall(c, "failed");
      if (options.reconnect && reconnectAttempts < RECONNECT_MAX_ATTEMPTS) {
        // The server is still restarting: keep trying, with the same backoff.
        const delay = Math.min(RECONNECT_MAX_DELAY_MS, 500 * 2 ** reconnectAttempts);
        reconnectAttempts += 1;
        showError(`${err.message} Reconnecting in ${(delay / 1000).toFixed(1)} s...`, "reconnecting");
        reconnectTimer = setTimeout(() => { startCall({ reconnect: true }); }, delay);
        return;
      }
      showError(`${err.message} Is the server running?`, "websocket");
      return;
    }
    if (c.closed) return;
    refreshConnState();
    // The face chosen in avatars.js ("" = the server's default).
    const avatar = window.avatarPicker ? window.avatarPicker.chosen() : "";
    send(c, { type: "hello", version: PROTOCOL_VERSION, conversation: keptConversation(), avatar });
    c.pingTimer = setInterval(() => send(c, { type: "ping", t: Date.now() }), PING_INTERVAL_MS);
    c.statsTimer = setInterval(() => pollStats(c), STATS_INTERVAL_MS);
    c.alignTimer = setInterval(() => alignVideo(c), AV_ALIGN_INTERVAL_MS);

    // The config carries the ICE servers; an older server may not send one, so don't wait forever.
    await Promise.race([configReceived, new Promise((r) => setTimeout(r, CONFIG_WAIT_CAP_MS))]);
    if (c.closed) return;
    try {
      const pc = createPeer(c);
      refreshConnState();
      await pc.setLocalDescription(await pc.createOffer());
      await waitForIceGathering(pc);
      if (c.closed) return;
      send(c, { type: "offer", sdp: pc.localDescription.sdp });
    } catch (err) {
      if (c.closed) return;
      showError(`Could not start the call: ${err.message || err}`, "webrtc");
      endCall(c, "failed");
    }
  }

  // Tears a call down; `finalState` is what the header shows afterwards.
  function endCall(c, finalState) {
    if (c.closed) return;
    c.closed = true;
    clearInterval(c.pingTimer);
    clearInterval(c.statsTimer);
    clearInterval(c.alignTimer);
    if (c.pc) c.pc.close();
    if (c.ws && (c.ws.readyState === WebSocket.OPEN || c.ws.readyState === WebSocket.CONNECTING)) {
      c.ws.close(1000, "hang up");
    }
    if (c.mic) c.mic.getTracks().forEach((t) => t.stop());
    if (c.audioContext) c.audioContext.close().catch(() => {});
    ui.video.srcObject = null;
    ui.audio.srcObject = null;
    ui.placeholder.hidden = false;
    ui.micMeter.style.width = "0";
    ui.statsFps.textContent = "–";
    ui.statsAudioLevel.textContent = "–";
    lastVideoSample = null;
    // pc and ws stay on the handle so a test can still read their final states.
    setConnState(finalState);
    setAvatarState("idle");
    setButtons();
  }

  // ---------------------------------------------------------------- controls

  ui.start.addEventListener("click", () => { startCall(); });

  ui.stop.addEventListener("click", () => {
    if (call) send(call, { type: "interrupt" });
  });

  ui.hangup.addEventListener("click", () => {
    clearTimeout(reconnectTimer);
    reconnectAttempts = RECONNECT_MAX_ATTEMPTS;  // a hang-up is on purpose: no reconnect
    if (call) endCall(call, "closed");
  });

  ui.form.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = ui.input.value.trim().slice(0, MAX_TEXT_CHARS).trim();
    if (!text) return;
    if (!call || !send(call, { type: "text", text })) {
      showError("Not connected. Press Start first, then send your message.", "not_connected");
      return;
    }
    addTypedEntry(text);
    ui.input.value = "";
  });

  window.addEventListener("pagehide", () => {
    if (call) endCall(call, "closed");
  });

  // The send button stays usable outside a call so that pressing it explains what to do.
  setButtons();
  if (!window.isSecureContext) showError(INSECURE_MESSAGE, "insecure_context");
})();
