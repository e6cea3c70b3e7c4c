// Runs the engine off the page's thread, one step at a time, posting its events back and
// saving a checkpoint to browser storage every few seconds and at every stage boundary.
// Requests that need the engine (answers) wait for the gap between two steps: the engine is
// borrowed for the whole of a step, even while it awaits the GPU.
import init, { Engine } from "../sgpo.js";
import * as store from "./store.js";
import * as models from "./models.js";

const SAVE_EVERY_MS = 5000;

/// The engine's wasm (tens of megabytes), fetched once with its progress posted to the page.
let engineLoaded = null;
function loadEngine() {
  engineLoaded ??= (async () => {
    const response = await fetch(new URL("../sgpo_bg.wasm", import.meta.url));
    if (!response.ok) throw new Error(`sgpo_bg.wasm: HTTP ${response.status}`);
    // content-length is the size on the wire: with compression, less than the bytes read.
    let wire = Number(response.headers.get("content-length")) || 0;
    let done = 0, posted = 0;
    const post = () => postMessage({ kind: "engine-progress", done, total: Math.max(wire, done) });
    const counted = response.body.pipeThrough(new TransformStream({
      transform(chunk, out) {
        done += chunk.byteLength;
        if (done - posted >= 1 << 20) { posted = done; post(); }
        out.enqueue(chunk);
      },
      flush() { wire = done; post(); },
    }));
    await init({ module_or_path: new Response(counted, { headers: { "content-type": "application/wasm" } }) });
  })();
  return engineLoaded;
}

let engine = null;
let paused = false;
let pauseSaved = false;
let loseDevice = false;
let stopping = false;
let busy = false;
let unsaved = []; // events since the last checkpoint
let pairs = []; // [iteration, jsonl] since the last checkpoint
let lastSave = 0;
let saving = true; // false after a quota error until the user frees space
const pending = [];

async function serve() {
  while (pending.length) {
    const prompt = pending.shift();
    try {
      postMessage({ kind: "answer", text: await engine.answer(prompt) });
    } catch (e) {
      postMessage({ kind: "answer", text: `error: ${e}` });
    }
  }
}

/// Events from the engine: kept for the next checkpoint's log, and shown.
function report(events) {
  unsaved.push(...events);
  for (const e of events) if (e.event === "iteration") pairs.push([e.iteration, engine.pairs_jsonl()]);
  postMessage({ kind: "events", events, position: engine.position() });
}

/// Whether the run is now saved up to this step.
async function save() {
  // Steps whose numbers are still on the GPU: read back before a snapshot that includes them.
  const read = await engine.flush();
  if (read.length) report(read);
  if (!saving) {
    unsaved = [];
    pairs = [];
    return false;
  }
  const snapshot = await engine.snapshot();
  try {
    await store.saveCheckpoint(snapshot, unsaved, pairs);
  } catch (e) {
    if (!store.isQuotaError(e)) throw e;
    await quotaFull(e);
    return false;
  }
  unsaved = [];
  pairs = [];
  lastSave = Date.now();
  postMessage({ kind: "saved", position: snapshot.position, usage: await store.usage() });
  return true;
}

async function quotaFull(e) {
  saving = false;
  unsaved = [];
  pairs = [];
  postMessage({ kind: "quota", error: String(e), usage: await store.usage() });
}

async function run() {
  busy = true;
  try {
    while (!engine.done() && !stopping) {
      await serve();
      if (paused) {
        if (!pauseSaved) {
          const saved = await save();
          pauseSaved = true;
          // "continue" may have come while saving: then the run goes on and says nothing.
          if (paused) postMessage({ kind: "paused", paused: true, saved, position: engine.position() });
        }
        await new Promise((r) => setTimeout(r, 100));
        continue;
      }
      if (loseDevice) {
        loseDevice = false;
        engine.lose_device();
      }
      report(await engine.step());
      if (engine.at_boundary() || Date.now() - lastSave > SAVE_EVERY_MS) await save();
      await new Promise((r) => setTimeout(r, 0));
    }
    const saved = await save();
    await serve();
    postMessage({ kind: stopping ? "stopped" : "done", saved });
  } catch (e) {
    const error = String(e);
    // The last checkpoint stays in storage: the page offers to restart from it.
    postMessage({ kind: /device lost/i.test(error) ? "device-lost" : "error", error });
  } finally {
    busy = false;
  }
}

// navigator.gpu can exist with no adapter behind it (e.g. Chromium without its flag).
async function hasWebgpu() {
  try {
    return !!(navigator.gpu && (await navigator.gpu.requestAdapter()));
  } catch {
    return false;
  }
}

/// The inputs as the engine takes them: a run records its model by name (`{name, files}`);
/// the bytes come from the browser's cache, with progress.
async function withModel(inputs) {
  if (!inputs || !inputs.model) return inputs;
  const model = await models.load(inputs.model, (done, total) => postMessage({ kind: "model-progress", done, total, what: "reading" }));
  postMessage({ kind: "model-progress", done: 1, total: 1, what: `opening ${inputs.model.name}` });
  return { ...inputs, model };
}

/// `fresh`: a new run, which replaces the saved one only once its engine exists (a run that
/// cannot start must not cost the user the run they had).
async function open(config, inputs, resume, fresh) {
  if (config.device !== "cpu" && !(await hasWebgpu())) {
    postMessage({
      kind: "no-webgpu",
      error: "This browser exposes no WebGPU (navigator.gpu): use a recent Chrome or Edge (Firefox Nightly and Safari 26 too), or start Chromium with --enable-unsafe-webgpu. You can also run on the CPU backend compiled to wasm (slow).",
    });
    return;
  }
  await loadEngine();
  engine = await Engine.create(config, await withModel(inputs), resume);
  if (fresh) {
    try {
      await store.saveRun({ config, inputs });
    } catch (e) {
      if (!store.isQuotaError(e)) throw e;
      await quotaFull(e);
    }
  }
  postMessage({ kind: "ready", adapter: engine.adapter(), position: engine.position(), resumed: !!resume, prompt: engine.example_prompt() });
  run();
}

onmessage = async (msg) => {
  const { kind, config, inputs, prompt } = msg.data;
  try {
    if (kind === "defaults") {
      await loadEngine();
      postMessage({ kind: "defaults", config: Engine.defaults() });
    } else if (kind === "start") {
      lastSave = Date.now();
      await open(config, inputs, null, true);
    } else if (kind === "resume") {
      const saved = await store.loadRun();
      if (!saved || !saved.checkpoint) throw new Error("no saved checkpoint to resume from");
      // Runs saved before the device knob existed recorded `cpu: true|false`.
      const { cpu, ...config } = saved.run.config;
      if (cpu !== undefined) config.device = cpu ? "cpu" : "wgpu";
      const cfg = msg.data.device ? { ...config, device: msg.data.device } : config;
      lastSave = Date.now();
      await open(cfg, saved.run.inputs, saved.checkpoint, false);
    } else if (kind === "pause") {
      // The loop confirms a pause once it has stopped between steps and saved.
      paused = !paused;
      pauseSaved = false;
      if (!paused || !busy) postMessage({ kind: "paused", paused });
    } else if (kind === "stop") {
      stopping = true;
    } else if (kind === "answer" && engine) {
      pending.push(prompt);
      if (!busy) await serve();
    } else if (kind === "lose-device") {
      loseDevice = true; // between two steps: a step holds the engine
    }
  } catch (e) {
    postMessage({ kind: "error", error: String(e) });
  }
};
