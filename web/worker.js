// Runs the engine off the page's thread, one step at a time, posting its events back.
// Requests that need the engine (answers) wait for the gap between two steps: the engine is
// borrowed for the whole of a step, even while it awaits the GPU.
import init, { Engine } from "../pkg/sgpo.js";

let engine = null;
let paused = false;
let busy = false;
const pending = [];

async function serve() {
  while (pending.length) {
    const prompt = pending.shift();
    postMessage({ kind: "answer", text: await engine.answer(prompt) });
  }
}

async function run() {
  busy = true;
  try {
    while (!engine.done()) {
      await serve();
      if (paused) {
        await new Promise((r) => setTimeout(r, 100));
        continue;
      }
      postMessage({ kind: "events", events: await engine.step() });
      await new Promise((r) => setTimeout(r, 0));
    }
    await serve();
    postMessage({ kind: "done" });
  } catch (e) {
    postMessage({ kind: "error", error: String(e) });
  } finally {
    busy = false;
  }
}

onmessage = async (msg) => {
  const { kind, config, prompt } = msg.data;
  try {
    if (kind === "start") {
      // navigator.gpu can exist with no adapter behind it (e.g. Chromium without its flag).
      const adapter = navigator.gpu ? await navigator.gpu.requestAdapter() : null;
      if (!adapter && !config.cpu) {
        postMessage({
          kind: "no-webgpu",
          error: "This browser exposes no WebGPU (navigator.gpu): use a recent Chrome or Edge, or start Chromium with --enable-unsafe-webgpu. You can also run on the CPU backend compiled to wasm (slow).",
        });
        return;
      }
      await init();
      engine = await Engine.create(config);
      postMessage({ kind: "ready", adapter: engine.adapter() });
      run();
    } else if (kind === "pause") {
      paused = !paused;
      postMessage({ kind: "paused", paused });
    } else if (kind === "answer" && engine) {
      pending.push(prompt);
      if (!busy) await serve();
    }
  } catch (e) {
    postMessage({ kind: "error", error: String(e) });
  }
};
