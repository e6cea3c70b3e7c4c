// The page: knobs and uploads, live charts of the engine's events, progress per stage, the
// sample table, the saved run (resume, discard, downloads), and a prompt box.
import * as store from "./store.js";
import { tar, untar } from "./tar.js";
import { diffWords } from "./diff.js";
import * as models from "./models.js";
import uPlot from "./vendor/uPlot.esm.js";

const $ = (id) => document.getElementById(id);
const KNOBS = ["sft_steps", "improver_steps", "improver_examples", "iterations", "prompts_per_iteration", "batch_size", "beta", "lr", "temperature", "max_new_tokens", "lora_rank", "drafts_per_prompt", "improvement_passes"];
// Knobs sent as text, spelled as the CLI's flags take them (the engine parses and checks them).
const TEXT_KNOBS = ["improver_targets", "pair_filter"];

// One chart per metric: [title, event kind, field, y range if fixed]. The x axis is the optimiser step (SFT and
// the improver's stage 1 on one count, the preference stage's DPO steps on their own) or the
// iteration; dashed lines mark where a stage or an iteration begins.
const CHARTS = [
  ["loss (SFT / improver)", "train", "loss"],
  ["loss (DPO)", "dpo", "loss"],
  ["rewards/margins", "dpo", "rewards/margins"],
  ["rewards/accuracies", "dpo", "rewards/accuracies", [0, 1]],
  ["logps/chosen", "dpo", "logps/chosen"],
  ["logps/rejected", "dpo", "logps/rejected"],
  ["win rate vs SFT", "iteration", "policy_win_rate_vs_sft", [0, 1]],
  ["improver win rate", "iteration", "improver_win_rate", [0, 1]],
  ["kept pairs the judge says point the right way", "iteration", "pairs_right_way", [0, 1]],
  ["degenerate candidates (unchanged, or empty improvement)", "iteration", "degenerate_share", [0, 1]],
  ["kept pairs whose chosen answer is the policy's own greedy answer", "iteration", "chosen_is_greedy", [0, 1]],
  ["tokens/s (SFT, improver, DPO)", ["train", "dpo"], "tokens/s"],
];
let series = CHARTS.map(() => []);
let marks = CHARTS.map(() => []); // x positions of stage and iteration boundaries
// A chart fed by several kinds of event (tokens/s of SFT, stage 1 and DPO) counts updates:
// their step numbers are not one sequence.
const axisName = (kind) => (Array.isArray(kind) ? "update" : kind === "iteration" ? "iteration" : "step");

// The boundaries of chart `i`, dashed, under its line.
const drawMarks = (i) => (u) => {
  const g = u.ctx;
  g.save();
  g.strokeStyle = "#999";
  g.setLineDash([4, 4]);
  for (const x of marks[i]) {
    const px = u.valToPos(x, "x", true);
    if (px < u.bbox.left || px > u.bbox.left + u.bbox.width) continue;
    g.beginPath();
    g.moveTo(px, u.bbox.top);
    g.lineTo(px, u.bbox.top + u.bbox.height);
    g.stroke();
  }
  g.restore();
};

// Tick labels with as many decimals as the tick spacing needs (a DPO loss moving in the fifth
// digit reads 0.69313, 0.69315, not 0.693 three times).
const ticks = (u, splits) => {
  const step = splits.length > 1 ? Math.abs(splits[1] - splits[0]) : 1;
  const decimals = Math.min(8, Math.max(0, -Math.floor(Math.log10(step || 1))));
  return splits.map((v) => (Math.abs(v) >= 1e5 ? v.toExponential(1) : v.toFixed(decimals)));
};

// The value axis as wide as its longest label (a fixed width cut the minus off "-0.0001").
const valueAxisSize = (u, values) => 16 + 7 * Math.max(4, ...(values || []).map((v) => v.length));

const WHOLE = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000];

// One uPlot per metric: a step (or iteration) axis, points marked, the value under the cursor
// in the legend.
const charts = CHARTS.map(([title, kind, , range], i) => {
  const fig = document.createElement("figure");
  $("charts").append(fig);
  return new uPlot(
    {
      title,
      width: 320,
      height: 180,
      scales: { x: { time: false }, y: range ? { range } : {} },
      // Steps and iterations are whole numbers: whole-number ticks only.
      axes: [{ label: axisName(kind), size: 36, labelSize: 16, values: ticks, incrs: WHOLE }, { size: valueAxisSize, values: ticks }],
      series: [
        { label: axisName(kind) },
        { label: "value", stroke: "#2060c0", width: 1.5, points: { show: (u) => u.data[0].length < 40, size: 5 } },
      ],
      legend: { live: true },
      hooks: { drawAxes: [drawMarks(i)] },
    },
    [[], []],
    fig,
  );
});

function redraw(i) {
  const pts = series[i];
  charts[i].setData([pts.map((p) => p[0]), pts.map((p) => p[1])]);
}

const fmt = (x) => (x == null ? "-" : x.toFixed(2));
const status = (text) => ($("status").textContent = text);

function diffCell(text, score, ops, keep) {
  const td = document.createElement("td");
  for (const [op, t] of ops) {
    if (op !== "=" && op !== keep) continue;
    const span = document.createElement(op === "=" ? "span" : op === "+" ? "ins" : "del");
    span.textContent = t;
    td.append(span);
  }
  if (!ops.length) td.textContent = text;
  td.append(` (${fmt(score)})`);
  return td;
}

function addSample(e) {
  const row = document.createElement("tr");
  const cell = (text) => {
    const td = document.createElement("td");
    td.textContent = text;
    return td;
  };
  const ops = diffWords(e.draft, e.improved);
  const improved = diffCell(e.improved, e.improved_score, ops, "+");
  if (e.improved_score != null && e.improved_score !== e.draft_score) improved.className = e.improved_score > e.draft_score ? "better" : "worse";
  row.append(cell(e.iteration), cell(e.prompt), diffCell(e.draft, e.draft_score, ops, "-"), improved);
  $("samples").tBodies[0].prepend(row);
}

// Progress per stage, from the events alone (so a reload redraws it from the saved ones).
function progress(e, config) {
  const set = (id, value, max) => { $(id).max = Math.max(max, 1); $(id).value = value; };
  if (e.event === "train" && e.stage === "sft") set("p-sft", e.step, config.sft_steps);
  // reference-trained targets train stage 1 in two phases of improver_steps each.
  const phases = String(config.improver_targets).startsWith("reference-trained") ? 2 : 1;
  if (e.event === "train" && e.stage === "improver") set("p-improver", e.step, config.improver_steps * phases);
  if (e.event === "progress") set("p-pairs", e.done, e.total);
  if (e.event === "iteration") set("p-dpo", e.iteration, config.iterations);
  if (e.event === "dpo" && $("p-sft").value < $("p-sft").max) set("p-sft", 1, 1); // started from a checkpoint
}

// Where an event sits on its chart's x axis: SFT steps, then stage 1's steps after them, DPO
// steps counted over the whole preference stage, iterations by number.
function xOf(e) {
  if (e.event === "iteration") return e.iteration;
  if (e.event === "train" && e.stage === "improver") return (runConfig.sft_steps || 0) + e.step;
  return e.step;
}

// Pair quality from an iteration's summary: kept pairs whose chosen answer the judge rates
// higher, and candidates that teach nothing (no change, or an empty improvement).
function withPairQuality(e) {
  if (e.event !== "iteration" || !e.prompts) return e;
  const [better, tied, worse] = e.pairs_judged || [];
  const judged = better + tied + worse;
  return {
    ...e,
    pairs_right_way: judged ? better / judged : undefined,
    // Per candidate: a prompt has several with more drafts per prompt (or a greedy draft).
    degenerate_share: (e.pairs_unchanged + (e.pairs_empty_chosen || 0)) / (e.candidates || e.prompts),
  };
}

function pairStatus(e) {
  const [better, tied, worse] = e.pairs_judged || [];
  const judge = e.pairs_judged ? `; judge on kept pairs: chosen better ${better}, tied ${tied}, worse ${worse}` : "";
  const greedy = typeof e.chosen_is_greedy === "number" ? `; chosen = the policy's greedy answer in ${Math.round(100 * e.chosen_is_greedy)}%` : "";
  const line = `iteration ${e.iteration}: ${e.pairs_built} pairs kept of ${e.candidates || e.prompts} drafts of ${e.prompts} prompts (${e.pairs_unchanged} unchanged dropped, ${e.pairs_empty_chosen || 0} with an empty improvement)${judge}${greedy}`;
  return e.degenerate_share > 0.5 ? `most candidates are degenerate — ${line}` : line;
}

let runConfig = {};
function onEvent(raw) {
  const e = withPairQuality(raw);
  CHARTS.forEach(([, kind, field], i) => {
    const v = e[field];
    if ([].concat(kind).includes(e.event) && typeof v === "number") {
      series[i].push([Array.isArray(kind) ? series[i].length + 1 : xOf(e), v]);
      redraw(i);
    }
  });
  // Stage boundaries: stage 1 begins after SFT; each iteration's DPO steps begin a new span.
  if (e.event === "train" && e.stage === "improver" && e.step === 1) marks[0].push(xOf(e) - 0.5);
  if (e.event === "iteration" && e.iteration > 0) CHARTS.forEach(([, kind], i) => kind === "dpo" && marks[i].push(e.step + 0.5));
  if (e.event === "sample") addSample(e);
  progress(e, runConfig);
  if (e.event === "iteration" && e.prompts) {
    status(pairStatus(e));
    $("pair-status").textContent = pairStatus(e);
    $("pair-status").className = e.degenerate_share > 0.5 ? "warn" : "";
  }
  if (e.event === "progress") status(`iteration ${e.iteration}: ${e.stage} ${e.done}/${e.total}`);
  if (e.event === "train") status(`${e.stage} step ${e.step}: loss ${e.loss.toFixed(3)}`);
  if (e.event === "dpo") status(`DPO iteration ${e.iteration}, step ${e.step}: loss ${e.loss.toFixed(3)}`);
}

function reset() {
  series = CHARTS.map(() => []);
  marks = CHARTS.map(() => []);
  charts.forEach((_, i) => redraw(i));
  $("samples").tBodies[0].replaceChildren();
  ["p-model", "p-sft", "p-improver", "p-pairs", "p-dpo"].forEach((id) => ($(id).value = 0));
  $("pair-status").textContent = "";
}

const enableDownloads = () => ["dl-checkpoint", "dl-metrics", "dl-pairs"].forEach((id) => ($(id).disabled = false));

const mb = (b) => `${(b / 2 ** 20).toFixed(1)} MB`;
function showUsage(u) {
  if (u) $("storage").textContent = `browser storage: ${mb(u.usage)} used of ${mb(u.quota)}`;
}

function banner(text, buttons = []) {
  $("banner").hidden = !text;
  $("banner").textContent = text || "";
  for (const [label, action] of buttons) {
    const b = document.createElement("button");
    b.textContent = label;
    b.onclick = action;
    $("banner").append(" ", b);
  }
}

const describe = (p) => (p.phase === "sft" ? `SFT step ${p.step}` : `${p.stage} stage, iteration ${p.iteration}, step ${p.step}`);

// ---- the worker ----
let worker = null;
let useCpu = false;
function newWorker() {
  if (worker) worker.terminate();
  worker = new Worker(new URL("./worker.js", import.meta.url), { type: "module" });
  worker.onmessage = onMessage;
}

function running(on) {
  $("pause").textContent = "pause";
  document.body.dataset.paused = "";
  $("start").disabled = on;
  $("pause").disabled = !on;
  $("stop").disabled = !on;
  $("resume").hidden = true;
  $("discard").hidden = on;
}

function onMessage({ data }) {
  if (data.kind === "defaults") fillDefaults(data.config);
  if (data.kind === "events") data.events.forEach(onEvent);
  if (data.kind === "ready") {
    status(`running on ${data.adapter}`);
    document.body.dataset.adapter = data.adapter;
    // Offer a prompt worded as this run's model is asked (a chat model gets sentences), unless
    // the user has typed one since the page or an earlier run offered its own.
    const box = $("prompt");
    if (data.prompt && (box.value === box.defaultValue || box.value === box.dataset.offered)) box.value = box.dataset.offered = data.prompt;
    if (data.resumed) {
      document.body.dataset.resumedFrom = data.position.step;
      banner(`resumed from the saved checkpoint (${describe(data.position)})`);
    }
  }
  if (data.kind === "saved") {
    document.body.dataset.saved = JSON.stringify(data.position);
    enableDownloads();
    showUsage(data.usage);
  }
  if (data.kind === "paused") {
    $("pause").textContent = data.paused ? "continue" : "pause";
    document.body.dataset.paused = data.paused ? "1" : "";
    if (data.paused) status(`paused at ${describe(data.position || {})}${data.saved ? "; saved" : " (not saved: storage is full)"}`);
  }
  if (data.kind === "done" || data.kind === "stopped") {
    const note = data.saved ? "" : " (not saved: storage is full)";
    status(data.kind === "done" ? `done${note}` : data.saved ? "stopped (saved: resume it any time)" : `stopped${note}`);
    running(false);
    if (data.kind === "stopped" && data.saved) $("resume").hidden = false;
    document.body.dataset.done = data.kind;
  }
  if (data.kind === "answer") $("answer").textContent = data.text;
  if (data.kind === "engine-progress" && !document.body.dataset.defaults) {
    $("p-engine").max = data.total;
    $("p-engine").value = data.done;
    status(`loading the engine: ${mb(data.done)} of ${mb(data.total)}`);
  }
  if (data.kind === "model-progress") {
    $("p-model").max = data.total;
    $("p-model").value = data.done;
    status(`model: ${data.what} ${mb(data.done)} of ${mb(data.total)}`);
  }
  if (data.kind === "error") {
    status(`error: ${data.error}`);
    document.body.dataset.error = data.error;
    running(false);
    store.loadRun().then((saved) => {
      if (saved?.checkpoint) banner("The run stopped on an error; its last checkpoint is kept.", [["restart from the last checkpoint", () => resumeSaved()]]);
    });
  }
  if (data.kind === "device-lost") {
    status(`the GPU device was lost: ${data.error}`);
    document.body.dataset.deviceLost = data.error;
    running(false);
    banner("The GPU device was lost (driver reset, or the tab was in the background too long). The last checkpoint is kept.", [
      ["restart from the last checkpoint", () => resumeSaved()],
    ]);
  }
  if (data.kind === "quota") {
    showUsage(data.usage);
    banner(`Browser storage is full (${data.error}): training goes on, but checkpoints are not saved, so a reload would lose it. Free space for this site (discard a saved run, or clear its data in the browser's settings) and start again to save.`);
    document.body.dataset.quota = data.error;
  }
  if (data.kind === "no-webgpu") {
    status(data.error);
    running(false);
    $("start").textContent = "start on the CPU (slow)";
    useCpu = true;
    setField("device", "cpu");
    // A saved run can go on on the CPU too.
    store.loadRun().then((saved) => {
      if (saved?.checkpoint && !saved.checkpoint.position.done) {
        $("resume").hidden = false;
        $("resume").textContent = "resume saved run on the CPU (slow)";
      }
    });
    document.body.dataset.noWebgpu = "1";
  }
}

// ---- starting, resuming ----
const readText = (input) => {
  const f = input.files[0];
  return f ? f.text().then((text) => ({ name: f.name, text })) : null;
};

async function readCheckpoint(input) {
  const f = input.files[0];
  if (!f) return null;
  const files = untar(new Uint8Array(await f.arrayBuffer()));
  const find = (name) => files.find((x) => x.name === name || x.name.endsWith(`/${name}`));
  // A run directory names its newest checkpoint in `latest`; a bare checkpoint-N/ works too.
  const latest = find("latest");
  const dir = latest
    ? latest.name.replace(/latest$/, "") + new TextDecoder().decode(latest.bytes).trim() + "/"
    : (find("model.bpk") || { name: "" }).name.replace(/model\.bpk$/, "");
  const picked = {};
  for (const x of files) if (x.name.startsWith(dir) && !x.name.slice(dir.length).includes("/")) picked[x.name.slice(dir.length)] = x.bytes;
  if (!picked["model.bpk"]) throw new Error(`${f.name}: no model.bpk in ${dir || "the archive"} (expected a run directory or a checkpoint-N directory)`);
  return { name: f.name, files: picked };
}

// The form's values: the engine's defaults (the worker sends them), a saved run's, or the user's.
const FIELDS = [...KNOBS, ...TEXT_KNOBS, "method", "preset", "task", "device"];
for (const k of FIELDS) $(k).addEventListener("input", () => ($(k).dataset.set = "1"));
function setField(k, v) {
  $(k).value = v;
  $(k).dataset.set = "1";
}
function fillDefaults(defaults) {
  for (const k of FIELDS) if (!$(k).dataset.set && k in defaults) $(k).value = defaults[k];
  document.body.dataset.defaults = "loaded";
  if (/^loading the engine/.test($("status").textContent)) status("idle");
}

function readConfig() {
  const config = { task: $("task").value, preset: $("preset").value, method: $("method").value, device: useCpu ? "cpu" : $("device").value };
  for (const k of KNOBS) config[k] = Number($(k).value);
  for (const k of TEXT_KNOBS) config[k] = $(k).value.trim();
  return config;
}

$("start").onclick = async () => {
  try {
    const inputs = {};
    if ($("data").files[0]) inputs.data = await readText($("data"));
    if ($("tokenizer").files[0]) inputs.tokenizer = await readText($("tokenizer"));
    if ($("init").files[0]) inputs.init = await readCheckpoint($("init"));
    const picked = [...$("model").files];
    if (picked.length) {
      inputs.model = models.describe(picked);
      status(`copying ${inputs.model.name} into this browser's storage…`);
      await models.save(picked, (done, total) => {
        $("p-model").max = total;
        $("p-model").value = done;
        status(`copying ${inputs.model.name} into this browser's storage: ${mb(done)} of ${mb(total)}`);
      });
    }
    runConfig = readConfig();
    reset();
    banner("");
    running(true);
    status(runConfig.device === "cpu" ? "starting the CPU backend…" : "starting WebGPU…");
    newWorker();
    worker.postMessage({ kind: "start", config: runConfig, inputs });
  } catch (e) {
    status(`error: ${e.message || e}`);
    running(false);
  }
};

async function resumeSaved() {
  delete document.body.dataset.error;
  delete document.body.dataset.deviceLost;
  delete document.body.dataset.done;
  delete document.body.dataset.resumedFrom;
  const saved = await store.loadRun();
  if (!saved || !saved.checkpoint) return status("no saved run");
  runConfig = saved.run.config;
  reset();
  saved.events.forEach(onEvent);
  running(true);
  status(`resuming from ${describe(saved.checkpoint.position)}…`);
  newWorker();
  // The device as the form has it now: a run saved on one device resumes on another.
  worker.postMessage({ kind: "resume", device: useCpu ? "cpu" : $("device").value });
}

$("resume").onclick = resumeSaved;
$("discard").onclick = async () => {
  await store.clearRun();
  reset();
  banner("");
  $("resume").hidden = $("discard").hidden = true;
  showUsage(await store.usage());
  status("saved run discarded");
};
$("pause").onclick = () => worker.postMessage({ kind: "pause" });
$("stop").onclick = () => worker.postMessage({ kind: "stop" });
$("chat").onsubmit = (ev) => {
  ev.preventDefault();
  if (worker) worker.postMessage({ kind: "answer", prompt: $("prompt").value });
};

// For the browser tests: what a driver reset does to the GPU device.
window.sgpoTest = {
  loseDevice: () => worker && worker.postMessage({ kind: "lose-device" }),
  chartsWithData: () => series.filter((s) => s.length).length,
};

// ---- downloads ----
function download(name, bytes, type) {
  const a = document.createElement("a");
  a.href = URL.createObjectURL(new Blob([bytes], { type }));
  a.download = name;
  a.click();
  setTimeout(() => URL.revokeObjectURL(a.href), 10000);
}

$("dl-checkpoint").onclick = async () => {
  const saved = await store.loadRun();
  if (!saved?.checkpoint) return;
  const dir = `checkpoint-${String(saved.checkpoint.step).padStart(8, "0")}`;
  const files = Object.entries(saved.checkpoint.files).map(([name, bytes]) => ({ name: `sgpo-run/${dir}/${name}`, bytes }));
  const enc = new TextEncoder();
  files.push({ name: "sgpo-run/latest", bytes: enc.encode(dir) });
  files.push({ name: "sgpo-run/config.json", bytes: saved.checkpoint.files["config.json"] });
  if (saved.checkpoint.sft_model) files.push({ name: "sgpo-run/sft_model.bpk", bytes: saved.checkpoint.sft_model });
  download("sgpo-run.tar", tar(files), "application/x-tar");
};
$("dl-metrics").onclick = async () => {
  const saved = await store.loadRun();
  download("metrics.jsonl", (saved?.events || []).map((e) => JSON.stringify(e) + "\n").join(""), "application/jsonl");
};
$("dl-pairs").onclick = async () => download("pairs.jsonl", await store.allPairs(), "application/jsonl");

// ---- on load: the engine's defaults, and a saved run? ----
newWorker();
worker.postMessage({ kind: "defaults" });
(async () => {
  showUsage(await store.usage());
  const saved = await store.loadRun().catch(() => null);
  if (!saved || !saved.checkpoint) return;
  runConfig = saved.run.config;
  for (const k of FIELDS) if (k in runConfig) setField(k, runConfig[k]);
  saved.events.forEach(onEvent);
  const p = saved.checkpoint.position;
  const when = new Date(saved.checkpoint.saved_at).toLocaleString();
  status(p.done ? "the saved run is finished" : "a saved run is waiting to be resumed");
  banner(`Saved run: ${describe(p)}${p.done ? " (finished)" : ""}, saved ${when}.`);
  $("resume").hidden = p.done;
  $("discard").hidden = false;
  enableDownloads();
  document.body.dataset.savedRun = JSON.stringify(p);
})();
