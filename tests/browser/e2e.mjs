// Drives the page in headless Chromium: start a short SGPO run, wait for the charts and the
// sample table, reload mid-run and resume from the saved checkpoint, finish, download the
// checkpoint, metrics and pairs, save a screenshot; on the device WebGPU. Then (not with
// NO_WEBGPU=1) SGPO with LoRA from a GGUF model picked in a file input on the device `auto`,
// reloaded mid-run and resumed without picking it again.
// Usage: node tests/browser/e2e.mjs URL OUT_DIR
// With NO_WEBGPU=1 Chromium starts without WebGPU: the page must say so and run on the CPU
// backend compiled to wasm when asked to.
import { chromium } from "playwright-core";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";

const [url, out] = process.argv.slice(2);
mkdirSync(out, { recursive: true });
const noWebgpu = process.env.NO_WEBGPU === "1";
const limit = Number(process.env.E2E_TIMEOUT_MS || 900000);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: [
    "--no-sandbox", "--no-first-run", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--disable-quic", ...(noWebgpu ? [] : ["--enable-unsafe-webgpu"]),
  ],
});
const context = await browser.newContext({ viewport: { width: 1100, height: 1200 }, acceptDownloads: true });
const page = await context.newPage();
page.on("console", (m) => log(`[page] ${m.text()}`));
page.on("pageerror", (e) => log(`[page error] ${e}`));

// Seconds since the start on every line: where a slow CI run spends its time.
const t0 = Date.now();
const log = (line) => console.log(`[${Math.round((Date.now() - t0) / 1000)} s] ${line}`);
function fail(why) {
  console.error(`failed: ${why}`);
  process.exit(1);
}
const wait = (fn, arg) => page.waitForFunction(fn, arg, { timeout: limit, polling: 500 });
const failed = () => page.evaluate(() => document.body.dataset.error || document.body.dataset.deviceLost);
// Charts with data in them.
const chartsDrawn = () => page.evaluate(() => window.sgpoTest.chartsWithData());
const rows = () => page.locator("#samples tbody tr").count();

// The form's defaults come from the engine (index.html carries none of its own).
const defaultsLoaded = (p) => p.waitForFunction(() => document.body.dataset.defaults, null, { timeout: limit });
await page.goto(url);
await defaultsLoaded(page);
const beta = await page.inputValue("#beta");
if (beta !== "0.1" || (await page.inputValue("#sft_steps")) !== "1000") fail(`the form did not get the engine's defaults (beta ${beta})`);
if ((await page.inputValue("#device")) !== "auto") fail("the device knob does not default to auto");
// On SwiftShader `auto` would take the CPU backend (faster there): this pass is about WebGPU.
if (!noWebgpu) await page.selectOption("#device", "wgpu");
// SFT_STEPS: a longer SFT for a screenshot whose samples read as answers (default: the test's 20).
const sftSteps = Number(process.env.SFT_STEPS || 20);
await page.fill("#sft_steps", String(sftSteps));
await page.fill("#improver_steps", "10");
// Stage 1 drafts an answer per improver example; the default 128 is most of a run on SwiftShader.
await page.fill("#improver_examples", "16");
// The CPU backend runs this in seconds: one more iteration leaves room to pause mid-run.
const iterationCount = noWebgpu ? 3 : 2;
await page.fill("#iterations", String(iterationCount));
await page.fill("#prompts_per_iteration", "8");
await page.fill("#batch_size", "4");
await page.click("#start");
if (noWebgpu) {
  await wait(() => document.body.dataset.noWebgpu || document.body.dataset.error);
  log(`status: ${await page.textContent("#status")}`);
  await page.click("#start");
}

// Run until the first iteration is saved, pause (the page saves where it stands), reload.
await page.waitForFunction(() => {
  const b = document.body.dataset;
  // The save at the end of iteration 1 (its DPO steps done): charts and samples have data.
  const saved = b.saved && JSON.parse(b.saved);
  return b.error || b.deviceLost || b.done || (saved && (saved.iteration >= 2 || (saved.iteration === 1 && saved.stage === "pairs")));
}, null, { timeout: limit, polling: 50 });
if (await failed()) fail(await failed());
const adapter = await page.evaluate(() => document.body.dataset.adapter);
log(`running on ${adapter}`);
if (noWebgpu !== !adapter.startsWith("WebGPU")) fail(`this pass should not run on ${adapter}`);
await page.click("#pause");
await wait(() => document.body.dataset.paused === "1" || document.body.dataset.done);
const before = { charts: await chartsDrawn(), rows: await rows(), saved: JSON.parse(await page.evaluate(() => document.body.dataset.saved)) };
log(`before reload: ${before.charts} charts drawn, ${before.rows} sample rows, saved at ${JSON.stringify(before.saved)}`);
if (before.charts < 7 || before.rows === 0) fail("charts or samples did not fill before the reload");
if (before.saved.done) fail("the run finished before the reload: make it longer");
await page.screenshot({ path: `${out}/before-reload.png`, fullPage: true });

await page.reload();
await wait(() => document.body.dataset.savedRun);
const after = { charts: await chartsDrawn(), rows: await rows(), banner: await page.textContent("#banner") };
log(`after reload: ${after.charts} charts redrawn from storage, ${after.rows} sample rows; banner: ${after.banner}`);
if (after.charts < before.charts || after.rows < before.rows) fail("the reloaded page lost saved charts or samples");
await page.click("#resume");
await wait(() => document.body.dataset.resumedFrom || document.body.dataset.error);
if (await failed()) fail(await failed());
const resumedFrom = Number(await page.evaluate(() => document.body.dataset.resumedFrom));
log(`resumed from step ${resumedFrom}`);

if (!noWebgpu) {
  // The GPU device is lost (as after a driver reset): the page keeps the last checkpoint and
  // restarts from it.
  await wait(() => document.body.dataset.saved && JSON.parse(document.body.dataset.saved).step > 0);
  await page.evaluate(() => window.sgpoTest.loseDevice());
  await wait(() => document.body.dataset.deviceLost || document.body.dataset.error || document.body.dataset.done);
  const lost = await page.evaluate(() => document.body.dataset.deviceLost);
  if (!lost) fail(`losing the device gave ${await page.evaluate(() => document.body.dataset.error || "no error")}`);
  log(`device lost: ${lost}; banner: ${await page.textContent("#banner")}`);
  await page.click("#banner button");
  await wait(() => document.body.dataset.adapter && !document.body.dataset.deviceLost && document.body.dataset.resumedFrom);
}
await wait(() => document.body.dataset.done || document.body.dataset.error || document.body.dataset.deviceLost);
if (await failed()) fail(await failed());

const end = { charts: await chartsDrawn(), rows: await rows(), status: await page.textContent("#status") };
log(`done: ${end.charts} charts, ${end.rows} sample rows, status "${end.status}", storage "${await page.textContent("#storage")}"`);
if (!/done/.test(end.status)) fail(`status is ${end.status}`);
// Samples read as text: no replacement character (U+FFFD) and no stray control character
// anywhere in the table.
const cells = await page.locator("#samples td").allTextContents();
const garbled = cells.filter((t) => /[\uFFFD\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F]/.test(t));
if (garbled.length) fail(`${garbled.length} sample cells hold U+FFFD or control characters, e.g. ${JSON.stringify(garbled[0])}`);
const pairStatus = await page.textContent("#pair-status");
log(`pair status: ${pairStatus}`);
if (!/pairs kept of/.test(pairStatus)) fail("no pair-quality line after the iterations");
await page.screenshot({ path: `${out}/page.png`, fullPage: true });

for (const [button, file] of [["#dl-checkpoint", "sgpo-run.tar"], ["#dl-metrics", "metrics.jsonl"], ["#dl-pairs", "pairs.jsonl"]]) {
  const [download] = await Promise.all([page.waitForEvent("download"), page.click(button)]);
  await download.saveAs(`${out}/${file}`);
}
log(`saved ${out}/page.png, sgpo-run.tar, metrics.jsonl, pairs.jsonl`);

// The resumed run continued rather than restarted: every SFT step and iteration once.
const events = readFileSync(`${out}/metrics.jsonl`, "utf8").trim().split("\n").map((l) => JSON.parse(l));
const sft = events.filter((e) => e.event === "train" && e.stage === "sft").map((e) => e.step);
const iterations = events.filter((e) => e.event === "iteration" && e.iteration > 0).map((e) => e.iteration);
log(`metrics: SFT steps ${sft[0]}..${sft[sft.length - 1]} (${sft.length} events), iterations [${iterations}]`);
if (sft.length !== sftSteps || new Set(sft).size !== sftSteps) fail("SFT steps missing or repeated across the reload");
if (iterations.join() !== [...Array(iterationCount).keys()].map((i) => i + 1).join()) fail("iterations missing or repeated across the reload");
const pairs = readFileSync(`${out}/pairs.jsonl`, "utf8").trim().split("\n").map((l) => JSON.parse(l));
if (!pairs.length || !pairs.every((p) => "prompt" in p && "chosen" in p && "rejected" in p)) fail("pairs.jsonl is not TRL preference rows");

if (noWebgpu) {
  // Storage full: the page says so and keeps training without saving.
  const quota = await browser.newContext();
  const p2 = await quota.newPage();
  const cdp = await quota.newCDPSession(p2);
  await p2.goto(url);
  await defaultsLoaded(p2);
  await cdp.send("Storage.overrideQuotaForOrigin", { origin: new URL(url).origin, quotaSize: 20000 });
  await p2.fill("#sft_steps", "10");
  await p2.click("#start");
  await p2.waitForFunction(() => document.body.dataset.noWebgpu || document.body.dataset.error, null, { timeout: limit });
  await p2.click("#start");
  await p2.waitForFunction(() => document.body.dataset.done || document.body.dataset.error, null, { timeout: limit, polling: 200 });
  if (await p2.evaluate(() => document.body.dataset.error)) fail(`with storage full: ${await p2.evaluate(() => document.body.dataset.error)}`);
  const banner = await p2.textContent("#banner");
  log(`quota: ${banner}`);
  if (!/storage is full/.test(banner)) fail(`no quota message: ${await p2.evaluate(() => document.body.dataset.error)}`);
}

if (noWebgpu) {
  // Uploads: a dataset with a broken line is refused by file and line; the downloaded
  // checkpoint, uploaded back with an Alpaca JSONL, starts the preference stage (no SFT).
  const up = await (await browser.newContext({ acceptDownloads: true })).newPage();
  await up.goto(url);
  await defaultsLoaded(up);
  const lines = readFileSync("examples/alpaca_tasks.jsonl", "utf8").split("\n").slice(0, 300);
  writeFileSync(`${out}/bad.jsonl`, `${lines[0]}\n{"instruction": "no output"\n`);
  writeFileSync(`${out}/alpaca.jsonl`, lines.join("\n"));
  await up.setInputFiles("#data", `${out}/bad.jsonl`);
  await up.click("#start");
  await up.waitForFunction(() => document.body.dataset.noWebgpu || document.body.dataset.error, null, { timeout: limit });
  await up.click("#start");
  await up.waitForFunction(() => document.body.dataset.error, null, { timeout: limit });
  const bad = await up.evaluate(() => document.body.dataset.error);
  log(`bad upload: ${bad}`);
  if (!bad.includes("bad.jsonl:2")) fail("the error does not name the file and line");
  await up.evaluate(() => delete document.body.dataset.error);
  await up.setInputFiles("#data", `${out}/alpaca.jsonl`);
  await up.setInputFiles("#init", `${out}/sgpo-run.tar`);
  await up.fill("#iterations", "1");
  await up.fill("#prompts_per_iteration", "8");
  await up.click("#start");
  await up.waitForFunction(() => document.body.dataset.done || document.body.dataset.error, null, { timeout: limit });
  if (await up.evaluate(() => document.body.dataset.error)) fail(`run from an uploaded checkpoint: ${await up.evaluate(() => document.body.dataset.error)}`);
  const [download] = await Promise.all([up.waitForEvent("download"), up.click("#dl-metrics")]);
  await download.saveAs(`${out}/init-metrics.jsonl`);
  const ev = readFileSync(`${out}/init-metrics.jsonl`, "utf8").trim().split("\n").map((l) => JSON.parse(l));
  const sftEvents = ev.filter((e) => e.event === "train" && e.stage === "sft").length;
  const samples = ev.filter((e) => e.event === "sample").map((e) => e.prompt);
  log(`from the uploaded checkpoint: ${sftEvents} SFT steps, ${samples.length} samples, e.g. "${samples[0]}"`);
  if (sftEvents !== 0 || !ev.some((e) => e.event === "iteration" && e.iteration === 1)) fail("the uploaded checkpoint did not start the preference stage");
  const instructions = new Set(lines.filter((l) => l.trim()).map((l) => JSON.parse(l).instruction));
  if (!samples.length || !samples.every((p) => instructions.has(p.split("\n")[0]))) fail("samples are not from the uploaded dataset");
}
// A model with weights: a GGUF fixture from the file input, SGPO with LoRA (on by default for
// models) and no SFT; a reload mid-run resumes from the browser's copy of the file. On the
// device `auto`, which takes WebGPU on a GPU and the CPU backend on a software adapter such as
// SwiftShader. (The same run on WebGPU itself is compared with the CPU backend in tests/web.rs.)
if (!noWebgpu) {
  const ctx = await browser.newContext({ acceptDownloads: true });
  const mp = await ctx.newPage();
  mp.on("console", (m) => log(`[model page] ${m.text()}`));
  await mp.goto(url);
  await defaultsLoaded(mp);
  const rank = await mp.inputValue("#lora_rank");
  if (rank !== "8") fail(`LoRA rank default is ${rank}, not the engine's 8`);
  await mp.setInputFiles("#model", "tests/fixtures/llama-tiny.Q8_0.gguf");
  await mp.fill("#lora_rank", "4");
  await mp.fill("#improver_steps", "4");
  await mp.fill("#iterations", "2");
  await mp.fill("#prompts_per_iteration", "8");
  await mp.fill("#batch_size", "4");
  await mp.fill("#max_new_tokens", "8");
  await mp.click("#start");
  const mwait = (fn) => mp.waitForFunction(fn, null, { timeout: limit, polling: 50 });
  await mwait(() => document.body.dataset.adapter || document.body.dataset.error);
  if (await mp.evaluate(() => document.body.dataset.error)) fail(`model run: ${await mp.evaluate(() => document.body.dataset.error)}`);
  const software = await mp.evaluate(async () => (await navigator.gpu.requestAdapter()).info.isFallbackAdapter);
  const madapter = await mp.evaluate(() => document.body.dataset.adapter);
  log(`device auto on ${software ? "a software" : "a hardware"} adapter: ${madapter}`);
  if (software !== /CPU backend.*software rasteriser/.test(madapter)) fail(`auto chose ${madapter}`);
  const offered = await mp.inputValue("#prompt");
  if (!offered.includes("Reply with only")) fail(`the prompt box offers "${offered}", not a prompt worded for the chat model`);
  await mwait(() => {
    const b = document.body.dataset;
    const saved = b.saved && JSON.parse(b.saved);
    return b.error || b.done || (saved && saved.iteration === 1 && saved.stage === "pairs");
  });
  const merr = await mp.evaluate(() => document.body.dataset.error);
  if (merr) fail(`model run: ${merr}`);
  await mp.click("#pause");
  await mwait(() => document.body.dataset.paused === "1" || document.body.dataset.done);
  const savedAt = JSON.parse(await mp.evaluate(() => document.body.dataset.saved));
  if (savedAt.done) fail("the model run finished before the reload: make it longer");
  await mp.reload();
  await mwait(() => document.body.dataset.savedRun);
  if ((await mp.evaluate(() => document.getElementById("model").files.length)) !== 0) fail("the file input kept its file across the reload");
  await mp.click("#resume");
  await mwait(() => document.body.dataset.done || document.body.dataset.error);
  if (await mp.evaluate(() => document.body.dataset.error)) fail(`model run after reload: ${await mp.evaluate(() => document.body.dataset.error)}`);
  const [metrics] = await Promise.all([mp.waitForEvent("download"), mp.click("#dl-metrics")]);
  await metrics.saveAs(`${out}/model-metrics.jsonl`);
  const ev = readFileSync(`${out}/model-metrics.jsonl`, "utf8").trim().split("\n").map((l) => JSON.parse(l));
  const count = (stage) => ev.filter((e) => e.event === "train" && e.stage === stage).length;
  const its = ev.filter((e) => e.event === "iteration" && e.iteration > 0).map((e) => e.iteration);
  log(`model run: saved at ${JSON.stringify(savedAt)} before the reload; ${count("sft")} SFT steps, ${count("improver")} improver steps, iterations [${its}], status "${await mp.textContent("#status")}"`);
  if (count("sft") !== 0 || count("improver") !== 4 || its.join() !== "1,2") fail("the model run did not run stage 1 and two iterations once each without SFT");
  await mp.screenshot({ path: `${out}/model-page.png`, fullPage: true });
  await ctx.close();
}
await browser.close();
