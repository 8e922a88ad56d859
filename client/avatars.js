// The face you talk to: choose one from the library, or bring your own (photo, short video, or
// a photo from the camera). Uploads go to /api/avatars (same origin; the token cookie rides
// along), the page polls the preparation's progress, shows the thumbnail as a preview, and
// selects the new face. client.js sends the chosen id with its hello (window.avatarPicker).
//
// Server text is only ever written with textContent, never parsed as HTML.
"use strict";

(() => {
  const POLL_MS = 250;
  const KEY = "avatar.choice";
  const $ = (id) => document.getElementById(id);
  const ui = {
    list: $("avatar-list"),
    file: $("avatar-file"),
    name: $("avatar-name"),
    cameraBtn: $("avatar-camera-btn"),
    camera: $("avatar-camera"),
    cameraVideo: $("avatar-camera-video"),
    snap: $("avatar-snap"),
    progress: $("avatar-progress"),
    bar: $("avatar-progress-bar"),
    step: $("avatar-progress-step"),
    preview: $("avatar-preview"),
    message: $("avatar-message"),
  };
  if (!ui.list) return;

  const state = { avatars: [], chosen: localStorage.getItem(KEY) || "", busy: false, stream: null };
  const picker = {
    chosen: () => state.chosen,
    state,
  };
  window.avatarPicker = picker;

  function inCall() {
    return Boolean(window.avatarClient && window.avatarClient.pc);
  }

  function say(text, bad) {
    ui.message.textContent = text;
    ui.message.dataset.kind = bad ? "error" : "info";
    ui.message.hidden = !text;
  }

  function choose(id) {
    if (inCall()) {
      say("Hang up before choosing another face.", true);
      render();
      return;
    }
    state.chosen = id;
    localStorage.setItem(KEY, id);
    render();
  }

  function render() {
    ui.list.replaceChildren();
    for (const a of state.avatars) {
      if (a.status !== "ready") continue;
      const item = document.createElement("button");
      item.type = "button";
      item.className = "avatar-item";
      item.setAttribute("role", "radio");
      item.setAttribute("aria-checked", String(a.id === state.chosen || (!state.chosen && a.id === state.default)));
      item.dataset.id = a.id;
      item.title = a.warnings && a.warnings.length ? `${a.name}: ${a.warnings.join("; ")}` : a.name;
      const img = document.createElement("img");
      img.src = a.thumbnail;
      img.alt = "";
      const label = document.createElement("span");
      label.textContent = a.name;
      item.append(img, label);
      item.addEventListener("click", () => choose(a.id));
      ui.list.append(item);
    }
  }

  async function refresh() {
    try {
      const r = await fetch("/api/avatars");
      const body = await r.json();
      if (!r.ok) throw new Error(body.message || `HTTP ${r.status}`);
      state.avatars = body.avatars;
      state.default = body.default;
      if (state.chosen && !state.avatars.some((a) => a.id === state.chosen && a.status === "ready")) {
        state.chosen = "";
      }
      render();
    } catch (err) {
      say(`Could not load the faces: ${err.message}`, true);
    }
  }

  function showProgress(status) {
    ui.progress.hidden = false;
    ui.bar.value = status.progress || 0;
    ui.step.textContent = `${status.step || "preparing"} (${Math.round(100 * (status.progress || 0))} %)`;
  }

  async function upload(blob, filename) {
    if (state.busy) return;
    state.busy = true;
    say("", false);
    ui.preview.hidden = true;
    showProgress({ step: "uploading", progress: 0 });
    try {
      const form = new FormData();
      if (ui.name.value.trim()) form.append("name", ui.name.value.trim());
      form.append("file", blob, filename);
      const r = await fetch("/api/avatars", { method: "POST", body: form });
      let status = await r.json();
      if (!r.ok && r.status !== 202) throw new Error(status.message || `HTTP ${r.status}`);
      while (status.status === "preparing") {
        showProgress(status);
        await new Promise((res) => setTimeout(res, POLL_MS));
        const p = await fetch(`/api/avatars/${encodeURIComponent(status.id)}`);
        status = await p.json();
        if (!p.ok) throw new Error(status.message || `HTTP ${p.status}`);
      }
      if (status.status === "failed") throw new Error(status.error.message);
      showProgress({ step: "ready", progress: 1 });
      ui.preview.src = `/api/avatars/${encodeURIComponent(status.id)}/thumbnail`;
      ui.preview.hidden = false;
      if (status.warnings && status.warnings.length) say(status.warnings.join("; "), false);
      await refresh();
      choose(status.id);
    } catch (err) {
      ui.progress.hidden = true;
      say(err.message, true);
    } finally {
      state.busy = false;
      ui.file.value = "";
    }
  }

  ui.file.addEventListener("change", () => {
    const f = ui.file.files && ui.file.files[0];
    if (f) upload(f, f.name);
  });

  // The camera: a live preview, then one still as a JPEG.
  ui.cameraBtn.addEventListener("click", async () => {
    if (state.stream) return;
    try {
      state.stream = await navigator.mediaDevices.getUserMedia({ video: { width: 1280, height: 720 } });
    } catch (err) {
      say(`The camera is not available: ${err.message}`, true);
      return;
    }
    ui.cameraVideo.srcObject = state.stream;
    ui.camera.hidden = false;
  });

  ui.snap.addEventListener("click", () => {
    const v = ui.cameraVideo;
    const canvas = document.createElement("canvas");
    canvas.width = v.videoWidth;
    canvas.height = v.videoHeight;
    canvas.getContext("2d").drawImage(v, 0, 0);
    for (const t of state.stream.getTracks()) t.stop();
    state.stream = null;
    ui.camera.hidden = true;
    canvas.toBlob((blob) => { if (blob) upload(blob, "camera.jpg"); }, "image/jpeg", 0.92);
  });

  picker.upload = upload;
  picker.refresh = refresh;
  refresh();
})();
