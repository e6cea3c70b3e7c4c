// Model files the user picked (a GGUF file, or a Hugging Face directory's files), kept in the
// browser so a reload resumes without asking again: the origin-private file system where the
// browser has it, else IndexedDB. One model is kept; picking another replaces it.
import * as store from "./store.js";

const DIR = "models";
const opfs = () => typeof navigator !== "undefined" && navigator.storage && navigator.storage.getDirectory;

/// What a run records of its model: `{name, files: [file names]}`; the bytes stay in the cache.
export function describe(files) {
  const gguf = files.find((f) => f.name.endsWith(".gguf"));
  if (!gguf && !files.some((f) => f.name === "config.json")) {
    throw new Error(`model files: pick one .gguf file, or a Hugging Face directory's files (config.json, model.safetensors, tokenizer.json, tokenizer_config.json); got ${files.map((f) => f.name).join(", ")}`);
  }
  return { name: gguf ? gguf.name : "Hugging Face model", files: files.map((f) => f.name) };
}

async function modelDir(create) {
  const root = await navigator.storage.getDirectory();
  if (create) {
    await root.removeEntry(DIR, { recursive: true }).catch(() => {});
  }
  return root.getDirectoryHandle(DIR, { create });
}

/// Copy the picked `files` into the cache; `onProgress(done, total)` in bytes.
export async function save(files, onProgress) {
  const total = files.reduce((n, f) => n + f.size, 0);
  let done = 0;
  if (opfs()) {
    const dir = await modelDir(true);
    for (const f of files) {
      const out = await (await dir.getFileHandle(f.name, { create: true })).createWritable();
      const reader = f.stream().getReader();
      for (;;) {
        const { value, done: end } = await reader.read();
        if (end) break;
        await out.write(value);
        done += value.byteLength;
        onProgress(done, total);
      }
      await out.close();
    }
  } else {
    await store.clearModel();
    for (const f of files) {
      await store.putModelFile(f.name, f);
      done += f.size;
      onProgress(done, total);
    }
  }
}

/// The cached model as the engine takes it: `{name, files: {name: Uint8Array}}`, or an error
/// that says to pick the files again. `onProgress(done, total)` in bytes.
export async function load(model, onProgress = () => {}) {
  const blobs = [];
  for (const name of model.files) {
    let blob = null;
    if (opfs()) {
      const dir = await modelDir(false).catch(() => null);
      blob = dir && (await dir.getFileHandle(name).then((h) => h.getFile()).catch(() => null));
    } else {
      blob = await store.getModelFile(name);
    }
    if (!blob) throw new Error(`the model ${model.name} is no longer in this browser's storage (${name} is missing): pick its files again`);
    blobs.push([name, blob]);
  }
  const total = blobs.reduce((n, [, b]) => n + b.size, 0);
  let done = 0;
  const files = {};
  for (const [name, blob] of blobs) {
    files[name] = new Uint8Array(await blob.arrayBuffer());
    done += blob.size;
    onProgress(done, total);
  }
  return { name: model.name, files };
}
