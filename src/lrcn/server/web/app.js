// lrcn's page: upload a clip or a long video, show the label, the timeline and the annotated
// video; or stream the webcam over a WebSocket. Plain JS, no build step, nothing fetched from
// elsewhere.
"use strict";

const $ = (id) => document.getElementById(id);
const COLOURS = ["#3b6ee8", "#e8743b", "#19a979", "#ed4a7b", "#945ecf", "#13a4b4",
                 "#525df4", "#bf399e", "#6c8893", "#ee6868"];
let model = null;
let token = sessionStorage.getItem("lrcn-token") || "";

function headers() {
  return token ? { Authorization: "Bearer " + token } : {};
}

function withToken(url) {
  return token ? url + (url.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token)
               : url;
}

function status(text, error = false) {
  $("status").textContent = text;
  $("status").className = error ? "error" : "";
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: { ...headers(), ...(options.headers || {}) } });
  if (response.status === 401) {
    token = prompt("This server needs its token:") || "";
    sessionStorage.setItem("lrcn-token", token);
    return api(path, options);
  }
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

async function loadModel() {
  model = await api("/v1/model");
  const f = model.frames;
  $("model").textContent = `${model.classes.length} classes (${model.classes.join(", ")}); ` +
    `${f.num_frames} frames of ${f.width}x${f.height}; clips of ${model.clip_seconds || "?"} s`;
}

function showBars(container, probabilities) {
  container.innerHTML = "";
  const ranked = Object.entries(probabilities).sort((a, b) => b[1] - a[1]);
  for (const [name, p] of ranked) {
    const row = document.createElement("div");
    row.className = "prob";
    row.innerHTML = `<span class="name"></span><span class="track"><span class="fill"></span>` +
                    `</span><span class="value"></span>`;
    row.querySelector(".name").textContent = name;
    row.querySelector(".fill").style.width = (100 * p).toFixed(1) + "%";
    row.querySelector(".value").textContent = (100 * p).toFixed(1) + "%";
    container.appendChild(row);
  }
}

function upload(path, file) {
  // XMLHttpRequest, not fetch: it reports the upload's progress.
  return new Promise((resolve, reject) => {
    const request = new XMLHttpRequest();
    request.open("POST", path);
    for (const [k, v] of Object.entries(headers())) request.setRequestHeader(k, v);
    request.upload.onprogress = (e) => {
      if (e.lengthComputable) $("upload-bar").value = e.loaded / e.total;
    };
    request.upload.onload = () => { $("upload-bar").value = 1; status("processing…"); };
    request.onload = () => {
      let body = {};
      try { body = JSON.parse(request.responseText); } catch (e) { /* not JSON */ }
      if (request.status >= 200 && request.status < 300) resolve(body);
      else reject(new Error(body.error || `HTTP ${request.status}`));
    };
    request.onerror = () => reject(new Error("the upload failed (connection lost)"));
    const form = new FormData();
    form.append("file", file, file.name);
    request.send(form);
  });
}

async function chooseMode(file) {
  const mode = document.querySelector("input[name=mode]:checked").value;
  if (mode !== "auto") return mode;
  const long = 2 * (model.clip_seconds || 6);
  const duration = await new Promise((resolve) => {
    const probe = document.createElement("video");
    probe.preload = "metadata";
    probe.onloadedmetadata = () => resolve(probe.duration);
    probe.onerror = () => resolve(NaN);     // a format the browser does not play (AVI)
    probe.src = URL.createObjectURL(file);
  });
  if (Number.isFinite(duration)) return duration > long ? "timeline" : "clip";
  return file.size > 30e6 ? "timeline" : "clip";
}

async function handle(file) {
  $("result").hidden = true;
  $("timeline-section").hidden = true;
  $("upload-bar").value = 0;
  $("process-bar").value = 0;
  $("process-bar").removeAttribute("value");   // indeterminate until there is progress
  try {
    const mode = await chooseMode(file);
    status(`uploading ${file.name} (${(file.size / 1e6).toFixed(1)} MB) for ` +
           (mode === "clip" ? "a label" : "a timeline") + "…");
    if (mode === "clip") {
      const result = await upload("/v1/predict", file);
      $("process-bar").value = 1;
      showResult(result.label, result.probability, result.probabilities);
      status(`${file.name}: ${result.frames.length} frames in ${result.seconds.toFixed(2)} s`);
    } else {
      const job = await upload("/v1/timeline", file);
      await follow(job.id, file.name);
    }
  } catch (error) {
    $("process-bar").value = 0;
    status(error.message, true);
  }
}

function showResult(label, probability, probabilities) {
  $("result").hidden = false;
  $("label").textContent = label;
  $("probability").textContent = (100 * probability).toFixed(1) + "%";
  showBars($("bars"), probabilities);
}

async function follow(id, name) {
  for (;;) {
    const job = await api(`/v1/jobs/${id}`);
    $("process-bar").value = job.progress;
    if (job.state === "done") return showTimeline(job.result, name);
    if (job.state === "failed" || job.state === "cancelled") {
      throw new Error(`${name}: ${job.error || job.state}`);
    }
    status(`${name}: ${job.state}, ${(100 * job.progress).toFixed(0)}%`);
    await new Promise((r) => setTimeout(r, 400));
  }
}

function showTimeline(result, name) {
  const facts = result.facts;
  status(`${name}: ${facts.duration.toFixed(1)} s, ${result.segments.length} segment(s), ` +
         `${result.windows.length} windows`);
  // The bars: each class's smoothed probability averaged over the video's windows.
  const classes = result.classes;
  const mean = classes.map((c, k) =>
    result.windows.reduce((sum, w) => sum + w.smoothed[k], 0) / result.windows.length);
  const top = mean.indexOf(Math.max(...mean));
  showResult(classes[top], mean[top], Object.fromEntries(classes.map((c, k) => [c, mean[k]])));
  $("timeline-section").hidden = false;
  drawTimeline(result);
  const video = $("video");
  video.src = withToken(result.links.video);
  video.load();
}

function drawTimeline(result) {
  const canvas = $("timeline");
  const scale = window.devicePixelRatio || 1;
  canvas.width = canvas.clientWidth * scale;
  canvas.height = canvas.clientHeight * scale;
  const ctx = canvas.getContext("2d");
  ctx.scale(scale, scale);
  const w = canvas.clientWidth, h = canvas.clientHeight, band = 36;
  const duration = result.facts.duration;
  const x = (t) => (t / duration) * w;
  const colour = (name) => result.classes.includes(name)
    ? COLOURS[result.classes.indexOf(name) % COLOURS.length] : "#9aa3b5";   // "unknown"
  ctx.clearRect(0, 0, w, h);
  for (const s of result.segments) {           // segments coloured by class
    ctx.fillStyle = colour(s.label);
    ctx.fillRect(x(s.start), 0, Math.max(1, x(s.end) - x(s.start)), band);
  }
  result.classes.forEach((name, k) => {        // each class's smoothed probability over time
    ctx.strokeStyle = COLOURS[k % COLOURS.length];
    ctx.lineWidth = 1.5;
    ctx.beginPath();
    result.windows.forEach((win, i) => {
      const px = x((win.start + win.end) / 2), py = h - 4 - win.smoothed[k] * (h - band - 12);
      if (i === 0) ctx.moveTo(px, py); else ctx.lineTo(px, py);
    });
    ctx.stroke();
  });
  $("legend").innerHTML = result.classes.map((c, k) =>
    `<span><i style="background:${COLOURS[k % COLOURS.length]}"></i>${c}</span>`).join("");
  canvas.onmousemove = (e) => {
    const t = (e.offsetX / w) * duration;
    const seg = result.segments.find((s) => t >= s.start && t < s.end) ||
                result.segments[result.segments.length - 1];
    const win = result.windows.reduce((a, b) =>
      Math.abs((b.start + b.end) / 2 - t) < Math.abs((a.start + a.end) / 2 - t) ? b : a);
    const top = result.classes.map((c, k) => [c, win.smoothed[k]])
      .sort((a, b) => b[1] - a[1]).slice(0, 3)
      .map(([c, p]) => `${c} ${(100 * p).toFixed(0)}%`).join("\n");
    const tip = $("tip");
    tip.hidden = false;
    tip.textContent = `${t.toFixed(1)} s: ${seg.label} (${seg.start.toFixed(1)}-` +
                      `${seg.end.toFixed(1)} s)\n${top}`;
    tip.style.left = Math.min(e.offsetX + 12, w - 180) + "px";
    tip.style.top = "8px";
  };
  canvas.onmouseleave = () => { $("tip").hidden = true; };
  canvas.onclick = (e) => { $("video").currentTime = (e.offsetX / w) * duration; };
}

// The webcam: one JPEG per grid step (the model's frame spacing), 8 bytes of time first.
let camera = null;
async function toggleCamera() {
  if (camera) { camera.stop(); camera = null; $("camera-section").hidden = true; return; }
  const stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: false });
  const video = $("camera");
  video.srcObject = stream;
  $("camera-section").hidden = false;
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const socket = new WebSocket(withToken(`${scheme}://${location.host}/v1/stream`));
  socket.binaryType = "arraybuffer";
  const grab = document.createElement("canvas");
  grab.width = 160; grab.height = 120;
  let timer = null;
  socket.onopen = () => {
    timer = setInterval(() => {
      if (video.readyState < 2 || socket.bufferedAmount > 1e6) return;
      grab.getContext("2d").drawImage(video, 0, 0, grab.width, grab.height);
      grab.toBlob(async (blob) => {
        const jpeg = new Uint8Array(await blob.arrayBuffer());
        const message = new Uint8Array(8 + jpeg.length);
        new DataView(message.buffer).setFloat64(0, performance.now());
        message.set(jpeg, 8);
        if (socket.readyState === WebSocket.OPEN) socket.send(message);
      }, "image/jpeg", 0.8);
    }, 1000 * model.frame_spacing_s);
  };
  socket.onmessage = (event) => {
    const reply = JSON.parse(event.data);
    if (reply.t !== undefined) $("lag").textContent = `lag ${(performance.now() - reply.t).toFixed(0)} ms`;
    if (reply.error) $("camera-label").textContent = reply.error;
    else if (reply.warming !== undefined) $("camera-label").textContent = `collecting frames ${reply.warming}/${reply.of}`;
    else {
      $("camera-label").textContent = reply.label;
      $("camera-probability").textContent = (100 * reply.probability).toFixed(0) + "%";
    }
  };
  camera = { stop() { clearInterval(timer); socket.close(); stream.getTracks().forEach((t) => t.stop()); } };
}

const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  if (e.dataTransfer.files.length) handle(e.dataTransfer.files[0]);
});
$("file").addEventListener("change", (e) => { if (e.target.files.length) handle(e.target.files[0]); });
$("camera-button").addEventListener("click", () => toggleCamera().catch((e) => status(e.message, true)));
loadModel().catch((e) => status(e.message, true));
