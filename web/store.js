// The run in browser storage (IndexedDB), shared by the page (reads, downloads) and the worker
// (writes). A checkpoint and the events that led to it are written in one transaction, so a
// reload sees a checkpoint and exactly the metrics up to it; never half of either.
const DB = "sgpo";
const STORES = ["run", "checkpoint", "events", "pairs"];

function request(req) {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

function done(tx) {
  return new Promise((resolve, reject) => {
    tx.oncomplete = () => resolve();
    tx.onabort = () => reject(tx.error || new Error("storage transaction aborted"));
    // A failed request reaches the transaction before tx.error is set: take the request's.
    tx.onerror = (ev) => reject(ev.target.error || tx.error);
  });
}

let opened = null;
function db() {
  if (!opened) {
    // Version 2 adds `models`: picked model files, where the browser has no OPFS.
    const req = indexedDB.open(DB, 2);
    req.onupgradeneeded = () => {
      const d = req.result;
      for (const name of [...STORES, "models"]) {
        if (!d.objectStoreNames.contains(name)) d.createObjectStore(name, name === "events" ? { autoIncrement: true } : undefined);
      }
    };
    opened = request(req);
  }
  return opened;
}

/// A new run replaces whatever was saved: its config and inputs (the uploaded files' texts).
export async function saveRun(run) {
  const tx = (await db()).transaction(STORES, "readwrite");
  STORES.forEach((s) => tx.objectStore(s).clear());
  tx.objectStore("run").put({ ...run, created: Date.now() }, "current");
  return done(tx);
}

/// `snapshot` from Engine.snapshot(), the events since the last save, pairs by iteration.
export async function saveCheckpoint(snapshot, events, pairs) {
  const tx = (await db()).transaction(["checkpoint", "events", "pairs"], "readwrite");
  tx.objectStore("checkpoint").put({ ...snapshot, saved_at: Date.now() }, "current");
  const ev = tx.objectStore("events");
  events.forEach((e) => ev.add(e));
  for (const [iteration, jsonl] of pairs) tx.objectStore("pairs").put(jsonl, iteration);
  return done(tx);
}

/// `{run, checkpoint, events}` of the saved run, or null.
export async function loadRun() {
  const tx = (await db()).transaction(["run", "checkpoint", "events"], "readonly");
  const [run, checkpoint, events] = await Promise.all([
    request(tx.objectStore("run").get("current")),
    request(tx.objectStore("checkpoint").get("current")),
    request(tx.objectStore("events").getAll()),
  ]);
  return run ? { run, checkpoint, events } : null;
}

/// Every iteration's pairs, as one TRL JSONL text.
export async function allPairs() {
  const tx = (await db()).transaction(["pairs"], "readonly");
  return (await request(tx.objectStore("pairs").getAll())).join("");
}

export async function clearRun() {
  const tx = (await db()).transaction(STORES, "readwrite");
  STORES.forEach((s) => tx.objectStore(s).clear());
  return done(tx);
}

export const isQuotaError = (e) => e && (e.name === "QuotaExceededError" || /quota/i.test(String(e)));

/// `{usage, quota}` in bytes, when the browser tells.
export async function usage() {
  if (!navigator.storage || !navigator.storage.estimate) return null;
  return navigator.storage.estimate();
}

/// The model cache's IndexedDB side (web/models.js uses OPFS where it can).
export async function putModelFile(name, blob) {
  const tx = (await db()).transaction(["models"], "readwrite");
  tx.objectStore("models").put(blob, name);
  return done(tx);
}

export async function getModelFile(name) {
  const tx = (await db()).transaction(["models"], "readonly");
  return request(tx.objectStore("models").get(name));
}

export async function clearModel() {
  const tx = (await db()).transaction(["models"], "readwrite");
  tx.objectStore("models").clear();
  return done(tx);
}
