// lrcn studio: record webcam clips or cut segments of long videos into a data set, train,
// read the evaluation, use the model. Plain JS; every call goes to /v1/studio/... through
// common.js's api().
"use strict";

let stream = null, session = null, recording = false, takes = 0;
let source = null, markIn = null, markOut = null, segments = [];
let watching = null;

function cell(row, text, tag = "td") {
  const c = document.createElement(tag);
  c.textContent = text;
  row.appendChild(c);
  return c;
}

// ---- 1. the webcam: clips of fixed length while the button (or space) is held ----------
async function startCamera() {
  // no recording into the old session while the new one starts
  recording = false;
  $("record-button").disabled = true;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ video: { width: 320, height: 240 } });
  } catch (e) {
    status("no camera: " + e.message, true);
    return;
  }
  $("camera").srcObject = stream;
  session = (await post("/v1/studio/sessions", {})).group;
  $("record-state").textContent = "session " + session;
  $("record-button").disabled = false;
}

async function recordWhileHeld() {
  if (recording || !session) return;
  recording = true;
  // A take of its own: a take released mid-upload must not go on when the next press comes
  // before its upload returns (it would see `recording` true again and record twice).
  const take = ++takes;
  const held = () => recording && take === takes;
  const fps = 10, count = Math.round(parseFloat($("record-seconds").value) * fps);
  const canvas = document.createElement("canvas");
  canvas.width = 320; canvas.height = 240;
  const context = canvas.getContext("2d");
  while (held()) {
    const parts = [];
    for (let i = 0; i < count && held(); i++) {
      const started = performance.now();
      context.drawImage($("camera"), 0, 0, canvas.width, canvas.height);
      const jpeg = await new Promise((r) => canvas.toBlob(r, "image/jpeg", 0.85));
      const length = new Uint8Array(4);
      new DataView(length.buffer).setUint32(0, jpeg.size);
      parts.push(length, jpeg);
      await new Promise((r) => setTimeout(r, Math.max(0, 1000 / fps - (performance.now() - started))));
    }
    if (parts.length / 2 < count) break;             // released early: that part is dropped
    const cls = $("record-class").value;
    try {
      const saved = await api(`/v1/studio/record?cls=${encodeURIComponent(cls)}&group=${session}&fps=${fps}`,
                              { method: "POST", body: new Blob(parts) });
      $("record-state").textContent = `session ${session}: saved ${saved.name}`;
      refresh();
    } catch (e) { status(e.message, true); break; }
  }
  if (take === takes) recording = false;
}

function stopRecording() { recording = false; }

// ---- 1. long videos: in, out, a class, per segment --------------------------------------
async function uploadSource(file) {
  status("uploading " + file.name + "…");
  try {
    source = await api("/v1/studio/sources?name=" + encodeURIComponent(file.name),
                       { method: "POST", body: file });
  } catch (e) { status(file.name + ": " + e.message, true); return; }
  $("source-video").src = withToken(`/v1/studio/sources/${source.id}/video`);
  $("source-box").hidden = false;
  segments = [];
  showSegments();
  status(`${file.name}: ${source.duration.toFixed(1)} s, group ${source.group}`);
}

function showMarks() {
  $("marks").textContent = `in ${markIn === null ? "—" : markIn.toFixed(2)} s, out ` +
                           `${markOut === null ? "—" : markOut.toFixed(2)} s`;
}

function addSegment() {
  if (markIn === null || markOut === null || markOut <= markIn) {
    status("set in, then out (after in)", true);
    return;
  }
  segments.push({ start: markIn, end: markOut, class: $("segment-class").value });
  markIn = markOut = null;
  showMarks();
  showSegments();
}

function showSegments() {
  $("segments").replaceChildren(...segments.map((s) => {
    const li = document.createElement("li");
    li.textContent = `${s.start.toFixed(2)}–${s.end.toFixed(2)} s  ${s.class}`;
    return li;
  }));
}

async function cutSegments() {
  try {
    const done = await post(`/v1/studio/sources/${source.id}/segments`, { segments });
    status(`cut ${done.clips.length} clips`);
    segments = [];
    showSegments();
    refresh();
  } catch (e) { status(e.message, true); }
}

// ---- 2. the data set --------------------------------------------------------------------
async function refresh() {
  const ws = await api("/v1/studio");
  $("workspace").textContent = ws.workspace;
  $("served").textContent = ws.served ? "served: " + ws.served : "no model served yet";
  const table = $("classes-table");
  table.replaceChildren();
  const head = document.createElement("tr");
  ["class", "clips", "groups (clips each)"].forEach((t) => cell(head, t, "th"));
  table.appendChild(head);
  for (const [name, row] of Object.entries(ws.classes)) {
    const tr = document.createElement("tr");
    cell(tr, name); cell(tr, row.clips);
    cell(tr, Object.entries(row.groups).map(([g, n]) => `${g}: ${n}`).join(", "));
    table.appendChild(tr);
  }
  $("clips").replaceChildren(...ws.clips.map(clipView));
  if (ws.job) showJob(ws.job);
}

function clipView(c) {
  const box = document.createElement("div");
  box.className = "clip";
  const video = document.createElement("video");
  video.src = withToken(`/v1/studio/clips/${c.class}/${c.name}`);
  video.preload = "metadata"; video.muted = true;
  video.onmouseenter = () => video.play(); video.onmouseleave = () => video.pause();
  const name = document.createElement("div");
  name.textContent = c.name;
  const del = document.createElement("button");
  del.textContent = "delete";
  del.onclick = async () => { await api(`/v1/studio/clips/${c.class}/${c.name}`, { method: "DELETE" }); refresh(); };
  const move = document.createElement("button");
  move.textContent = "relabel";
  move.onclick = async () => {
    const to = prompt("new class for " + c.name, c.class);
    if (to) { try { await post(`/v1/studio/clips/${c.class}/${c.name}/relabel`, { class: to }); } catch (e) { status(e.message, true); } refresh(); }
  };
  box.append(video, name, del, move);
  return box;
}

async function check() {
  status("checking every clip…");
  const report = await api("/v1/studio/check");
  $("problems").replaceChildren(...(report.problems.length ? report.problems : [{ kind: "ok", path: "", cause: "no problems found" }]).map((p) => {
    const li = document.createElement("li");
    li.textContent = `${p.kind} ${p.path || ""} ${p.cause}`;
    return li;
  }));
  status(`${report.readable} of ${report.clips} clips readable`);
}

// ---- 3. training ------------------------------------------------------------------------
async function train() {
  try {
    const job = await post("/v1/studio/train", { model: $("model").value,
                                                 epochs: parseInt($("epochs").value, 10) });
    status("training " + job.run);
    watch();
  } catch (e) { status(e.message, true); }
}

function watch() {
  clearInterval(watching);
  watching = setInterval(async () => {
    const job = await api("/v1/studio/train");
    showJob(job);
    if (job.state !== "running") {
      clearInterval(watching);
      if (job.state === "done") { await showRun(job.run); await servedNow(job.run); }
    }
  }, 500);
}

// The server loads the new model once the job is done: the page says so when it is served.
async function servedNow(run) {
  for (let i = 0; i < 120; i++) {
    const ws = await api("/v1/studio");
    if (ws.served === run) break;
    await new Promise((r) => setTimeout(r, 500));
  }
  refresh();
}

function showJob(job) {
  $("cancel").disabled = job.state !== "running";
  $("train").disabled = job.state === "running";
  const of = job.total ? ` ${job.done}/${job.total}` : "";
  $("train-phase").textContent = `${job.run}: ${job.state}${job.state === "running" ? ", " + job.phase + of : ""}` +
                                 (job.error ? " — " + job.error : "");
  $("train-bar").value = job.total ? job.done / job.total : 0;
  const table = $("epochs-table");
  table.replaceChildren();
  const head = document.createElement("tr");
  ["epoch", "loss", "accuracy", "val loss", "val accuracy"].forEach((t) => cell(head, t, "th"));
  table.appendChild(head);
  for (const row of job.history || []) {
    const tr = document.createElement("tr");
    [row.epoch, row.loss, row.accuracy, row.val_loss, row.val_accuracy].forEach((v) =>
      cell(tr, v === null ? "—" : Number.isInteger(v) ? v : v.toFixed(3)));
    table.appendChild(tr);
  }
  $("train-log").textContent = (job.log || []).join("\n");
}

// ---- 4. the evaluation ------------------------------------------------------------------
async function showRun(name) {
  const run = await api("/v1/studio/runs/" + name);
  $("eval-section").hidden = false;
  $("eval-run").textContent = name + " (" + run.model + ")";
  $("accuracy").textContent = `test accuracy ${(100 * run.accuracy).toFixed(1)}% on ` +
    `${run.num_clips} clips; macro F1 ${run.macro_f1.toFixed(3)}; group accuracy ` +
    `${(100 * run.group_accuracy).toFixed(1)}%`;
  const confusion = $("confusion");
  confusion.replaceChildren();
  const head = document.createElement("tr");
  cell(head, "true \\ predicted", "th");
  run.classes.forEach((c) => cell(head, c, "th"));
  confusion.appendChild(head);
  run.confusion_matrix.forEach((counts, i) => {
    const tr = document.createElement("tr");
    cell(tr, run.classes[i], "th");
    counts.forEach((n, j) => { const td = cell(tr, n); if (i === j && n) td.style.background = "#cfc"; else if (n) td.style.background = "#fcc"; });
    confusion.appendChild(tr);
  });
  const per = $("per-class");
  per.replaceChildren();
  const ph = document.createElement("tr");
  ["class", "precision", "recall", "F1", "clips"].forEach((t) => cell(ph, t, "th"));
  per.appendChild(ph);
  for (const [c, f] of Object.entries(run.per_class)) {
    const tr = document.createElement("tr");
    [c, f.precision.toFixed(2), f.recall.toFixed(2), f.f1.toFixed(2), f.support].forEach((v) => cell(tr, v));
    per.appendChild(tr);
  }
  const cal = run.calibration || {};
  $("calibration").textContent = cal.temperature ? `calibration: temperature ${cal.temperature.toFixed(2)}, ` +
    `ECE ${cal.ece_before.toFixed(3)} → ${cal.ece_after.toFixed(3)}` : "";
  $("plots").replaceChildren(...run.plots.map((p) => {
    const img = document.createElement("img");
    img.src = withToken(`/v1/studio/runs/${name}/${p}`); img.width = 320; img.alt = p;
    return img;
  }));
  $("mistakes").replaceChildren(...(run.mistakes.length ? run.mistakes.map((m) => {
    const box = document.createElement("div");
    box.className = "clip";
    if (m.link) {
      const v = document.createElement("video");
      v.src = withToken(m.link); v.controls = true; v.preload = "metadata";
      box.appendChild(v);
    }
    const t = document.createElement("div");
    t.textContent = `${m.clip}: ${m.true} read as ${m.predicted} (${(100 * m.probability).toFixed(0)}%)`;
    box.appendChild(t);
    return box;
  }) : [document.createTextNode("none")]));
  $("download-checkpoint").href = withToken(`/v1/studio/runs/${name}/model.safetensors`);
  $("download-onnx").href = withToken(`/v1/studio/runs/${name}/model.onnx`);
}

// ---- 5. the served model ----------------------------------------------------------------
async function predict(file) {
  status("classifying " + file.name + "…");
  try {
    const p = await api("/v1/predict", { method: "POST", body: file });
    $("predict-label").textContent = p.label;
    $("predict-probability").textContent = (100 * p.probability).toFixed(1) + "%";
    status(file.name + ": " + p.label);
  } catch (e) { status(file.name + ": " + e.message, true); }
}

$("camera-start").onclick = startCamera;
$("record-button").onmousedown = recordWhileHeld;
$("record-button").onmouseup = stopRecording;
$("record-button").onmouseleave = stopRecording;
$("source-file").onchange = (e) => e.target.files[0] && uploadSource(e.target.files[0]);
$("mark-in").onclick = () => { markIn = $("source-video").currentTime; showMarks(); };
$("mark-out").onclick = () => { markOut = $("source-video").currentTime; showMarks(); };
$("add-segment").onclick = addSegment;
$("cut").onclick = cutSegments;
$("check").onclick = check;
$("train").onclick = train;
$("cancel").onclick = async () => { await api("/v1/studio/train", { method: "DELETE" }); };
$("predict-file").onchange = (e) => e.target.files[0] && predict(e.target.files[0]);
document.addEventListener("keydown", (e) => {
  if (e.target.tagName === "INPUT" && e.target.type !== "file") return;
  if (e.key === "i") $("mark-in").click();
  else if (e.key === "o") $("mark-out").click();
  else if (e.key === "Enter" && source) addSegment();
  else if (e.key === " " && session && !e.repeat) { e.preventDefault(); recordWhileHeld(); }
});
document.addEventListener("keyup", (e) => { if (e.key === " ") stopRecording(); });
refresh().then(async () => {
  const ws = await api("/v1/studio");
  if (ws.job && ws.job.state === "running") watch();
  else if (ws.served) showRun(ws.served);
}).catch((e) => status(e.message, true));
