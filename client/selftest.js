// Connection self-test: checks, in order, what a call with the avatar needs, and prints for
// every failure the fix. Plain JS, nothing loaded from elsewhere; text is only ever written with
// textContent.
//
// The loopback check talks to the gateway exactly as client.js does: a WebSocket on /ws, a
// {"type":"hello","version":1}, the server's {"type":"config"} with the ICE servers, then one
// non-trickle offer (sent when ICE gathering is complete) and the server's answer.
//
// window.avatarSelfTest exposes the results for automated tests: {running, done, results}, where
// results maps a check id ("secure", "mic", ...) to {status, detail, fix}. A status is "pass",
// "fail", or "unused": STUN or TURN is not configured, which is fine on one machine or a flat
// LAN, so it is not a failure.
//
// `?ice=relay` in the URL makes the loopback call relay-only (iceTransportPolicy "relay"), as it
// does on the avatar's page: the media check then passes only through the TURN server.
"use strict";

(() => {
  const PROTOCOL_VERSION = 1;
  const GATHER_CAP_MS = 8000; // STUN/TURN answers from far away take a while
  const CONFIG_WAIT_MS = 3000;
  const ANSWER_WAIT_MS = 10000;
  const MEDIA_WAIT_MS = 10000;
  const STATS_POLL_MS = 500;

  const CHECK_IDS = ["secure", "mic", "ice-servers", "host", "srflx", "relay", "signaling", "media"];

  const $ = (id) => {
    const el = document.getElementById(id);
    if (!el) throw new Error(`selftest.html lacks #${id}`);
    return el;
  };

  const ui = { run: $("run"), summary: $("summary"), audio: $("loopback-audio") };
  const api = { running: false, done: false, results: {} };
  window.avatarSelfTest = api;

  // ------------------------------------------------------------------ reporting

  function report(id, status, detail, fix) {
    const li = $(`check-${id}`);
    li.dataset.status = status;
    li.querySelector(".check-status").textContent = status.toUpperCase();
    li.querySelector(".check-detail").textContent = detail || "";
    li.querySelector(".check-fix").textContent = fix ? `Fix: ${fix}` : "";
    api.results[id] = { status, detail: detail || "", fix: fix || "" };
  }

  function resetAll() {
    for (const id of CHECK_IDS) report(id, "pending", "", "");
    api.results = {};
  }

  const relayOnly = new URLSearchParams(window.location.search).get("ice") === "relay";
  const NOT_CONFIGURED = "not configured (not needed on one machine or a flat LAN)";

  function summarize() {
    const failed = CHECK_IDS.filter((id) => api.results[id] && api.results[id].status === "fail");
    if (failed.length === 0) {
      const unused = CHECK_IDS.filter((id) => api.results[id] && api.results[id].status === "unused");
      ui.summary.textContent = "All checks passed: this browser and network can talk to the avatar."
        + (unused.length ? ` Not configured: ${unused.join(", ")}.` : "");
      ui.summary.dataset.status = "pass";
    } else {
      ui.summary.textContent = `${failed.length} check(s) failed (${failed.join(", ")}). `
        + "Each failed line below says how to fix it; start with the first one.";
      ui.summary.dataset.status = "fail";
    }
  }

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  function withTimeout(promise, ms, what) {
    let timer;
    const timeout = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no ${what} within ${ms / 1000} s`)), ms);
    });
    return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
  }

  // ------------------------------------------------------------------ 1. secure context

  function checkSecureContext() {
    if (window.isSecureContext) {
      report("secure", "pass", `${window.location.origin} is a secure context.`);
      return true;
    }
    report("secure", "fail",
      `${window.location.origin} is not a secure context, so the browser refuses the microphone.`,
      "open the page over https:// (the Docker setup serves https://HOST:8443/; accept the "
      + "self-signed certificate once), or as http://localhost:PORT/ on the machine that runs it.");
    return false;
  }

  // ------------------------------------------------------------------ 2. microphone

  async function checkMicrophone() {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      report("mic", "fail", "This page cannot ask for the microphone (no navigator.mediaDevices).",
        "fix the secure-context check first; if it passes, use a current Chrome, Edge, Firefox or Safari.");
      return null;
    }
    try {
      const stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: false });
      const track = stream.getAudioTracks()[0];
      report("mic", "pass", `Microphone granted: ${track ? track.label || "unnamed device" : "no track"}.`);
      return stream;
    } catch (err) {
      const name = err && err.name;
      let fix = `the browser said ${name || "an unknown error"}; reload the page and try again.`;
      if (name === "NotAllowedError" || name === "SecurityError") {
        fix = "allow the microphone for this site (the icon left of the address bar, or the "
          + "browser's site settings), then run the checks again. On macOS also allow the "
          + "browser in System Settings > Privacy & Security > Microphone.";
      } else if (name === "NotFoundError" || name === "OverconstrainedError") {
        fix = "connect a microphone (or headset) and run the checks again.";
      } else if (name === "NotReadableError" || name === "AbortError") {
        fix = "another program holds the microphone, or the OS blocks it; close it and run again.";
      }
      report("mic", "fail", `The microphone was not granted (${name || "error"}: ${err && err.message}).`, fix);
      return null;
    }
  }

  // ------------------------------------------------------------------ 3. ICE servers

  function describeServers(servers) {
    const urls = [];
    for (const s of servers) urls.push(...(Array.isArray(s.urls) ? s.urls : [s.urls]));
    return urls;
  }

  async function checkIceServers() {
    let servers;
    try {
      const response = await withTimeout(fetch(`/api/ice-servers${window.location.search}`, { cache: "no-store" }), 5000, "answer");
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      const body = await response.json();
      if (!body || !Array.isArray(body.iceServers)) throw new Error("the answer has no iceServers list");
      servers = body.iceServers;
    } catch (err) {
      report("ice-servers", "fail", `Could not read /api/ice-servers: ${err.message || err}.`,
        "make sure this page comes from the avatar's gateway and that it is running "
        + "(docker compose ps; docker compose logs gateway).");
      return null;
    }
    const urls = describeServers(servers);
    if (urls.length === 0) {
      report("ice-servers", "pass",
        "The gateway lists no STUN/TURN servers: only direct connections are possible "
        + "(fine on one machine or a flat LAN).");
    } else {
      // URLs only: the credentials stay off the screen.
      report("ice-servers", "pass", `The gateway lists: ${urls.join(", ")}.`);
    }
    return servers;
  }

  // ------------------------------------------------------------------ 4-6. ICE candidates

  function candidateType(candidate) {
    if (candidate.type) return candidate.type;
    const match = / typ (\w+)/.exec(candidate.candidate || "");
    return match ? match[1] : "unknown";
  }

  // Gathers candidates for a throw-away connection and returns {types, errors}.
  async function gatherCandidates(servers) {
    const pc = new RTCPeerConnection({ iceServers: servers });
    const types = new Map(); // type -> example addresses
    const errors = [];
    pc.addEventListener("icecandidateerror", (event) => {
      errors.push({ url: event.url || "", code: event.errorCode, text: event.errorText || "" });
    });
    const finished = new Promise((resolve) => {
      pc.addEventListener("icecandidate", (event) => {
        if (!event.candidate) { resolve(); return; }
        if (!event.candidate.candidate) return; // end-of-candidates marker of some browsers
        const type = candidateType(event.candidate);
        const where = `${event.candidate.protocol || ""} ${event.candidate.address || "?"}:${event.candidate.port || "?"}`.trim();
        if (!types.has(type)) types.set(type, []);
        types.get(type).push(where);
      });
      pc.addEventListener("icegatheringstatechange", () => {
        if (pc.iceGatheringState === "complete") resolve();
      });
    });
    try {
      pc.createDataChannel("probe");
      await pc.setLocalDescription(await pc.createOffer());
      await Promise.race([finished, sleep(GATHER_CAP_MS)]);
    } finally {
      pc.close();
    }
    return { types, errors };
  }

  function serverErrorsText(errors, scheme) {
    const mine = errors.filter((e) => e.url.startsWith(scheme));
    if (mine.length === 0) return "";
    return ` The browser reported: ${mine.map((e) => `${e.url} → ${e.code} ${e.text}`.trim()).join("; ")}.`;
  }

  async function checkCandidates(servers) {
    const urls = describeServers(servers || []);
    const hasStun = urls.some((u) => u.startsWith("stun:") || u.startsWith("stuns:"));
    const hasTurn = urls.some((u) => u.startsWith("turn:") || u.startsWith("turns:"));
    let gathered;
    try {
      gathered = await gatherCandidates(servers || []);
    } catch (err) {
      const detail = `Could not gather candidates: ${err.message || err}.`;
      const fix = "WebRTC is unavailable or disabled in this browser (a privacy extension or "
        + "policy may block it); allow WebRTC for this site.";
      for (const id of ["host", "srflx", "relay"]) report(id, "fail", detail, fix);
      return;
    }
    const { types, errors } = gathered;
    const found = (t) => (types.get(t) || []);

    if (found("host").length) {
      report("host", "pass", `${found("host").length} host candidate(s), e.g. ${found("host")[0]} `
        + "(browsers may hide the address behind a .local name).");
    } else {
      report("host", "fail", "The browser offered no host candidate.",
        "a VPN, a privacy extension or a browser policy (WebRTC IP handling) is hiding local "
        + "addresses; allow WebRTC for this site. Calls can still work through the TURN relay.");
    }

    if (found("srflx").length) {
      report("srflx", "pass", `Public address seen by STUN: ${found("srflx")[0]}.`);
    } else if (!hasStun) {
      report("srflx", "unused", `STUN: ${NOT_CONFIGURED}.`,
        "only for browsers behind NAT on other networks: list a stun: URL in AVATAR_ICE_SERVERS "
        + "(docker compose adds stun:AVATAR_PUBLIC_HOST:TURN_PORT).");
    } else {
      report("srflx", "fail",
        `The STUN server did not answer.${serverErrorsText(errors, "stun")}`,
        "check that AVATAR_PUBLIC_HOST in .env is an address this browser can reach, that the "
        + "turn (coturn) service runs (docker compose ps), and that UDP TURN_PORT (3478) is open "
        + "on the server's firewall and not blocked by this network.");
    }

    if (found("relay").length) {
      report("relay", "pass", `TURN relay allocated: ${found("relay")[0]}.`);
    } else if (!hasTurn) {
      report("relay", relayOnly ? "fail" : "unused", `TURN: ${NOT_CONFIGURED}.`,
        "for browsers on other networks, or a server in a container: set AVATAR_TURN_URLS and "
        + "AVATAR_TURN_SECRET (the gateway mints a credential per session from the secret it "
        + "shares with the TURN server; docker compose sets both from AVATAR_PUBLIC_HOST and "
        + "AVATAR_TURN_SECRET in .env).");
    } else {
      const auth = errors.some((e) => e.url.startsWith("turn") && (e.code === 401 || e.code === 403));
      report("relay", "fail",
        `The TURN server gave no relay.${serverErrorsText(errors, "turn")}`,
        auth
          ? "the TURN server refused the credential the gateway minted: AVATAR_TURN_SECRET must "
            + "be the TURN server's static-auth-secret (docker compose gives both the one from "
            + ".env: docker compose up -d after editing it), and the clocks of both must agree."
          : "check that the turn service runs (docker compose ps; docker compose logs turn), "
            + "that TURN_PORT (3478) UDP and TCP is open on the server's firewall, and that "
            + "AVATAR_PUBLIC_HOST (in AVATAR_TURN_URLS) is reachable from this browser.");
    }
  }

  // ------------------------------------------------------------------ 7-8. loopback call

  function wsUrl() {
    const scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
    const token = new URLSearchParams(window.location.search).get("token");
    return `${scheme}//${window.location.host}/ws${token ? `?token=${encodeURIComponent(token)}` : ""}`;
  }

  // Opens /ws, says hello and resolves with {ws, config, messages} once the config arrives.
  function openSignaling() {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(wsUrl());
      const waiters = [];
      const state = { ws, config: null, errors: [], waiters };
      ws.addEventListener("error", () => reject(new Error(`could not connect to ${wsUrl()}`)), { once: true });
      ws.addEventListener("close", (event) => {
        state.closed = event;
        reject(new Error(`the socket closed (code ${event.code}${event.reason ? `: ${event.reason}` : ""})`));
      });
      ws.addEventListener("open", () => {
        ws.send(JSON.stringify({ type: "hello", version: PROTOCOL_VERSION }));
      });
      ws.addEventListener("message", (event) => {
        let msg;
        try { msg = JSON.parse(event.data); } catch (err) { return; }
        if (!msg || typeof msg.type !== "string") return;
        if (msg.type === "config") {
          state.config = msg;
          resolve(state);
        } else if (msg.type === "error") {
          state.errors.push(`${msg.code || "error"}: ${msg.message || ""}`);
        }
        for (const w of waiters.slice()) w(msg);
      });
    });
  }

  function waitForMessage(state, type, ms) {
    return withTimeout(new Promise((resolve) => {
      const waiter = (msg) => {
        if (msg.type !== type) return;
        state.waiters.splice(state.waiters.indexOf(waiter), 1);
        resolve(msg);
      };
      state.waiters.push(waiter);
    }), ms, `"${type}" message`);
  }

  async function checkSignaling() {
    try {
      const state = await withTimeout(openSignaling(), CONFIG_WAIT_MS + 2000, "config message");
      report("signaling", "pass", `Connected to ${wsUrl()}; session ${state.config.session || "?"}.`);
      return state;
    } catch (err) {
      report("signaling", "fail", `Signalling failed: ${err.message || err}.`,
        "the gateway must be running and reachable on this same address and port; a proxy in "
        + "front of it must pass WebSocket upgrades on /ws. If the gateway refused the session, "
        + "it may be full (AVATAR_MAX_SESSIONS).");
      return null;
    }
  }

  async function inboundBytes(pc) {
    const report_ = await pc.getStats();
    let bytes = 0;
    let pairTypes = "";
    const byId = new Map();
    report_.forEach((s) => byId.set(s.id, s));
    report_.forEach((s) => {
      if (s.type === "inbound-rtp") bytes += s.bytesReceived || 0;
      if (s.type === "transport" && s.selectedCandidatePairId) {
        const pair = byId.get(s.selectedCandidatePairId);
        const local = pair && byId.get(pair.localCandidateId);
        const remote = pair && byId.get(pair.remoteCandidateId);
        if (local && remote) pairTypes = `${local.candidateType} → ${remote.candidateType}`;
      }
    });
    return { bytes, pairTypes };
  }

  async function checkMedia(signaling, mic) {
    if (!signaling) {
      report("media", "fail", "Skipped: the signalling socket did not connect.", "fix the signalling check first.");
      return;
    }
    if (!mic) {
      report("media", "fail", "Skipped: a call needs the microphone.", "fix the microphone check first.");
      return;
    }
    const servers = Array.isArray(signaling.config.iceServers) ? signaling.config.iceServers : [];
    const pc = new RTCPeerConnection({ iceServers: servers, iceTransportPolicy: relayOnly ? "relay" : "all" });
    const remote = new MediaStream();
    try {
      pc.addEventListener("track", (event) => {
        remote.addTrack(event.track);
        ui.audio.srcObject = remote;
        ui.audio.volume = 0; // the idle avatar is silent anyway; the test must not be heard
        ui.audio.play().catch(() => {});
      });
      for (const track of mic.getAudioTracks()) pc.addTrack(track, mic);
      pc.addTransceiver("video", { direction: "recvonly" });
      await pc.setLocalDescription(await pc.createOffer());
      await Promise.race([
        new Promise((resolve) => {
          if (pc.iceGatheringState === "complete") resolve();
          pc.addEventListener("icegatheringstatechange", () => {
            if (pc.iceGatheringState === "complete") resolve();
          });
        }),
        sleep(GATHER_CAP_MS),
      ]);
      const answerPromise = waitForMessage(signaling, "answer", ANSWER_WAIT_MS);
      signaling.ws.send(JSON.stringify({ type: "offer", sdp: pc.localDescription.sdp }));
      const answer = await answerPromise;
      await pc.setRemoteDescription({ type: "answer", sdp: answer.sdp });

      // Media flows when the inbound byte counters grow; wait up to MEDIA_WAIT_MS for it.
      const start = performance.now();
      let first = null;
      let last = { bytes: 0, pairTypes: "" };
      while (performance.now() - start < MEDIA_WAIT_MS) {
        if (pc.connectionState === "failed") break;
        last = await inboundBytes(pc);
        if (first === null && last.bytes > 0) first = last.bytes;
        if (first !== null && last.bytes > first) break;
        await sleep(STATS_POLL_MS);
      }
      const seconds = ((performance.now() - start) / 1000).toFixed(1);
      if (first !== null && last.bytes > first) {
        report("media", "pass", `Received ${last.bytes} bytes of audio+video in ${seconds} s`
          + `${last.pairTypes ? ` over a ${last.pairTypes} path` : ""}`
          + `${relayOnly ? " (relay only: ?ice=relay)" : ""}.`);
      } else if (pc.connectionState !== "connected") {
        report("media", "fail",
          `No media path: the connection is "${pc.connectionState}" after ${seconds} s.`,
          "no network path joined this browser and the gateway. Fix the relay (TURN) check "
          + "above first; then make sure that no VPN or corporate firewall blocks UDP to "
          + "TURN_PORT (TURN over TCP on the same port is the fallback).");
      } else {
        report("media", "fail",
          `Connected${last.pairTypes ? ` (${last.pairTypes})` : ""}, but no media arrived in ${seconds} s.`,
          "the gateway accepted the call but sends nothing: look at docker compose logs gateway "
          + "lipsync for errors (a missing model or Wav2Lip checkpoint stops the avatar).");
      }
      if (signaling.errors.length) {
        const li = api.results.media;
        report("media", li.status, `${li.detail} The server reported: ${signaling.errors.join("; ")}.`, li.fix);
      }
    } catch (err) {
      report("media", "fail", `The test call failed: ${err.message || err}.`,
        "see the gateway's log (docker compose logs gateway); the server may have refused the offer.");
    } finally {
      ui.audio.srcObject = null;
      pc.close();
    }
  }

  // ------------------------------------------------------------------ the run

  async function runAll() {
    if (api.running) return;
    api.running = true;
    api.done = false;
    ui.run.disabled = true;
    resetAll();
    ui.summary.textContent = "Running…";
    ui.summary.dataset.status = "running";
    let mic = null;
    let signaling = null;
    try {
      checkSecureContext();
      mic = await checkMicrophone();
      const servers = await checkIceServers();
      await checkCandidates(servers);
      signaling = await checkSignaling();
      await checkMedia(signaling, mic);
    } catch (err) {
      // A bug in this page must not leave the run hanging: report it where it happened.
      for (const id of CHECK_IDS) {
        if (!api.results[id]) report(id, "fail", `The self-test itself failed: ${err.message || err}.`, "reload the page.");
      }
    } finally {
      if (signaling && signaling.ws.readyState <= WebSocket.OPEN) signaling.ws.close(1000, "self-test done");
      if (mic) mic.getTracks().forEach((t) => t.stop());
      summarize();
      api.running = false;
      api.done = true;
      ui.run.disabled = false;
    }
  }

  ui.run.addEventListener("click", () => { runAll(); });
  // The first check needs no permission, so show it at once.
  checkSecureContext();
})();
