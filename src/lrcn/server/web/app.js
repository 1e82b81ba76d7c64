// lrcn's page: upload a clip or a long video, show the label, the timeline and the annotated
// video; or stream the webcam over a WebSocket. Plain JS, no build step, nothing fetched from
// elsewhere; common.js (loaded first) holds the token and api().
"use strict";

let model = null;         // GET /v1/model: classes, their colours (those of the PNG), frames
let clipURL = null;       // the object URL of the file being shown
let shownTimeline = null; // redrawn when the window's width changes

async function loadModel() {
  model = await api("/v1/model");
  const f = model.frames;
  $("model").textContent = `${model.classes.length} classes (${model.classes.join(", ")}); ` +
    `${f.num_frames} frames of ${f.width}x${f.height}; clips of ${model.clip_seconds || "?"} s`;
}

function colour(name) {
  return (model && model.colours && model.colours[name]) || "#9aa3b5";
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
    row.querySelector(".fill").style.background = colour(name);
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
    probe.src = clipURL;
  });
  if (Number.isFinite(duration)) return duration > long ? "timeline" : "clip";
  return file.size > 30e6 ? "timeline" : "clip";
}

// Hide the last answer (a new file, the webcam, an error): nothing stale stays on screen.
function clearResult() {
  $("result").hidden = true;
  $("timeline-section").hidden = true;
  shownTimeline = null;
  for (const id of ["clip-video", "video"]) {
    const video = $(id);
    video.pause();
    video.onerror = null;
    video.removeAttribute("src");
    video.load();
  }
  $("clip-video").hidden = true;
  $("clip-note").textContent = "";
  if (clipURL) URL.revokeObjectURL(clipURL);
  clipURL = null;
}

async function handle(file) {
  clearResult();
  clipURL = URL.createObjectURL(file);     // the file itself, shown beside its label
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
      showResult("", result.label, (100 * result.probability).toFixed(1) + "%",
                 "each class's probability for this clip", result.probabilities);
      showClip(file);
      status(`${file.name}: ${result.frames.length} frames in ${result.seconds.toFixed(2)} s`);
    } else {
      const job = await upload("/v1/timeline", file);
      await follow(job.id, file.name);
    }
  } catch (error) {
    $("process-bar").value = 0;
    clearResult();
    status(`${file.name}: ${error.message}`, true);   // which file, and what is wrong with it
  }
}

function showResult(kind, label, figure, caption, bars) {
  $("result").hidden = false;
  $("label-kind").textContent = kind;
  $("label").textContent = label;
  $("probability").textContent = figure;
  $("bars-caption").textContent = caption;
  showBars($("bars"), bars);
}

function showClip(file) {
  const video = $("clip-video");
  video.hidden = false;
  video.onerror = () => {          // AVI, MJPEG, ...: the server reads more than browsers play
    video.hidden = true;
    $("clip-note").textContent = `${file.name}: this browser cannot play the file's format ` +
                                 "(the server can: the label above is its answer)";
  };
  video.src = clipURL;
}

async function follow(id, name) {
  for (;;) {
    const job = await api(`/v1/jobs/${id}`);
    $("process-bar").value = job.progress;
    if (job.state === "done") return showTimeline(job.result, name);
    if (job.state === "failed" || job.state === "cancelled") {
      throw new Error(job.error || job.state);
    }
    status(`${name}: ${job.state}, ${(100 * job.progress).toFixed(0)}%`);
    await new Promise((r) => setTimeout(r, 400));
  }
}

function percent(fraction) {
  return (100 * fraction).toFixed(0) + "%";
}

// A long video's answer: which label holds most of its time (from the segments), the share of
// the time of each label, the timeline, the downloads and the annotated video.
function showTimeline(result, name) {
  const facts = result.facts;
  const duration = facts.duration;
  status(`${name}: ${duration.toFixed(1)} s, ${result.segments.length} segment(s), ` +
         `${result.windows.length} windows`);
  const time = {};
  for (const s of result.segments) time[s.label] = (time[s.label] || 0) + (s.end - s.start);
  const share = Object.fromEntries(Object.entries(time).map(([c, t]) => [c, t / duration]));
  const labels = Object.keys(share);
  const top = labels.length ? labels.reduce((a, b) => (share[b] > share[a] ? b : a)) : "none";
  showResult("most frequent:", top, `${percent(share[top] || 0)} of the time`,
             `each label's share of the video's ${duration.toFixed(1)} s (its segments)`, share);
  $("timeline-section").hidden = false;
  shownTimeline = result;
  drawTimeline(result);
  showDownloads(result, name);
  const video = $("video");
  video.src = withToken(result.links.video);
  video.load();
}

function showDownloads(result, name) {
  const stem = name.replace(/\.[^.]*$/, "");
  const files = [["JSON", "json", "timeline.json"], ["CSV (segments)", "segments_csv", "segments.csv"],
                 ["CSV (windows)", "windows_csv", "windows.csv"], ["PNG", "png", "timeline.png"],
                 ["annotated video (MP4)", "video", "annotated.mp4"]];
  const links = $("downloads-links");
  links.innerHTML = "";
  for (const [text, key, suffix] of files) {
    const a = document.createElement("a");
    a.textContent = text;
    a.href = withToken(result.links[key]);
    a.download = `${stem}.${suffix}`;
    a.dataset.kind = key;
    links.appendChild(a);
  }
}

// The time axis: a step from this list that gives a tick every 80 px or more.
const STEPS = [0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200];

function tickStep(duration, width) {
  const most = Math.max(2, Math.floor(width / 80));
  return STEPS.find((step) => duration / step <= most) || STEPS[STEPS.length - 1];
}

function clock(t, duration) {
  if (duration < 60) return (Number.isInteger(t) ? t : t.toFixed(1)) + " s";
  const r = Math.round(t);
  const h = Math.floor(r / 3600), m = Math.floor((r % 3600) / 60), s = r % 60;
  const mm = h ? String(m).padStart(2, "0") : String(m);
  return (h ? h + ":" : "") + mm + ":" + String(s).padStart(2, "0");
}

let measure = null;
function textWidth(text) {       // in the font of the segments' labels (style.css)
  measure = measure || document.createElement("canvas").getContext("2d");
  measure.font = "12px system-ui, sans-serif";
  return measure.measureText(text).width;
}

function readableOn(hex) {       // dark text on light colours, white on dark ones
  const [r, g, b] = [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
  return 0.299 * r + 0.587 * g + 0.114 * b > 150 ? "#1d2330" : "#fff";
}

function drawTimeline(result) {
  const duration = result.facts.duration;
  const w = $("timeline-wrap").clientWidth;
  const at = (t) => (100 * t / duration) + "%";
  // The segments: coloured by class, the class name where it fits, the full label on hover.
  const band = $("segments");
  band.innerHTML = "";
  for (const s of result.segments) {
    const seg = document.createElement("div");
    seg.className = "seg";
    seg.style.left = at(s.start);
    seg.style.width = at(s.end - s.start);
    seg.style.background = colour(s.label);
    seg.style.color = readableOn(colour(s.label));
    seg.dataset.label = s.label;
    seg.title = `${s.label}: ${clock(s.start, duration)} to ${clock(s.end, duration)}, ` +
                `confidence ${percent(s.confidence)}`;
    const pixels = ((s.end - s.start) / duration) * w;
    if (pixels >= textWidth(s.label) + 8) seg.textContent = s.label;
    band.appendChild(seg);
  }
  // The axis: ticks at round times, labelled.
  const axis = $("axis");
  axis.innerHTML = "";
  const step = tickStep(duration, w);
  for (let t = 0; t <= duration + 1e-6; t += step) {
    const tick = document.createElement("div");
    tick.className = "tick";
    tick.style.left = at(t);
    tick.innerHTML = "<span></span>";
    tick.querySelector("span").textContent = clock(t, duration);
    axis.appendChild(tick);
  }
  // The curves, as the PNG draws them: segments shaded, each class's smoothed probability.
  const canvas = $("timeline");
  const scale = window.devicePixelRatio || 1;
  canvas.width = canvas.clientWidth * scale;
  canvas.height = canvas.clientHeight * scale;
  const ctx = canvas.getContext("2d");
  ctx.scale(scale, scale);
  const h = canvas.clientHeight;
  const x = (t) => (t / duration) * w;
  ctx.clearRect(0, 0, w, h);
  ctx.globalAlpha = 0.15;
  for (const s of result.segments) {
    ctx.fillStyle = colour(s.label);
    ctx.fillRect(x(s.start), 0, Math.max(1, x(s.end) - x(s.start)), h);
  }
  ctx.globalAlpha = 1;
  ctx.strokeStyle = "#dfe3ea";      // gridlines at the ticks
  ctx.lineWidth = 1;
  for (let t = 0; t <= duration + 1e-6; t += step) {
    ctx.beginPath(); ctx.moveTo(x(t) + 0.5, 0); ctx.lineTo(x(t) + 0.5, h); ctx.stroke();
  }
  result.classes.forEach((name, k) => {
    ctx.strokeStyle = colour(name);
    ctx.lineWidth = 1.6;
    ctx.beginPath();
    result.windows.forEach((win, i) => {
      const px = x((win.start + win.end) / 2), py = h - 3 - win.smoothed[k] * (h - 8);
      if (i === 0) ctx.moveTo(px, py); else ctx.lineTo(px, py);
    });
    ctx.stroke();
  });
  $("legend").innerHTML = "";
  for (const c of result.classes) {
    const item = document.createElement("span");
    item.innerHTML = "<i></i>";
    item.querySelector("i").style.background = colour(c);
    item.append(c);
    $("legend").appendChild(item);
  }
  const wrap = $("timeline-wrap");
  wrap.onmousemove = (e) => {
    const box = wrap.getBoundingClientRect();
    const t = Math.min(duration, Math.max(0, ((e.clientX - box.left) / w) * duration));
    const seg = result.segments.find((s) => t >= s.start && t < s.end) ||
                result.segments[result.segments.length - 1];
    const win = result.windows.reduce((a, b) =>
      Math.abs((b.start + b.end) / 2 - t) < Math.abs((a.start + a.end) / 2 - t) ? b : a);
    const top = result.classes.map((c, k) => [c, win.smoothed[k]])
      .sort((a, b) => b[1] - a[1]).slice(0, 3)
      .map(([c, p]) => `${c} ${percent(p)}`).join("\n");
    const tip = $("tip");
    tip.hidden = false;
    tip.textContent = `${clock(Math.round(t * 10) / 10, duration)}: ${seg.label} ` +
                      `(${clock(seg.start, duration)} to ${clock(seg.end, duration)})\n${top}`;
    tip.style.left = Math.min(e.clientX - box.left + 12, w - 220) + "px";
    tip.style.top = "34px";
  };
  wrap.onmouseleave = () => { $("tip").hidden = true; };
  wrap.onclick = (e) => {
    const box = wrap.getBoundingClientRect();
    $("video").currentTime = ((e.clientX - box.left) / w) * duration;
  };
}

window.addEventListener("resize", () => { if (shownTimeline) drawTimeline(shownTimeline); });

// The webcam: one JPEG per grid step (the model's frame spacing), 8 bytes of time first.
let camera = null;

// What getUserMedia's errors mean, said for a person (the browser says "Requested device not
// found").
function cameraProblem(error) {
  switch (error.name) {
    case "NotFoundError": case "DevicesNotFoundError": case "OverconstrainedError":
      return "no camera found: connect a camera (and check that the browser may use it), " +
             "then press webcam again";
    case "NotAllowedError": case "PermissionDeniedError": case "SecurityError":
      return "the camera was not allowed: allow this page to use it (the camera icon in the " +
             "address bar), then press webcam again";
    case "NotReadableError": case "TrackStartError": case "AbortError":
      return "the camera could not be started: another program may be using it";
    default:
      return `the camera could not be opened (${error.name}: ${error.message})`;
  }
}

async function toggleCamera() {
  if (camera) { camera.stop(); camera = null; $("camera-section").hidden = true; return; }
  clearResult();
  status("");
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    throw new Error("no camera access on this page: browsers give the camera only to " +
                    "https:// pages and to http://localhost");
  }
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: false });
  } catch (error) {
    throw new Error(cameraProblem(error));
  }
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
  let stopping = false;
  socket.onclose = () => {
    clearInterval(timer);
    if (stopping) return;
    stream.getTracks().forEach((t) => t.stop());
    camera = null;
    status("the connection to the server closed: press webcam to try again", true);
  };
  camera = { stop() { stopping = true; clearInterval(timer); socket.close();
                      stream.getTracks().forEach((t) => t.stop()); } };
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
