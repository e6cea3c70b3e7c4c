// The page's own defaults, start to finish, in headless Chromium: how long the run takes, the
// held-out scores it reports, no U+FFFD in the samples, and a screenshot. Not part of the test
// command (minutes on a software adapter); the README's page numbers come from it.
// Usage: node tests/browser/defaults-run.mjs URL OUT_DIR   (NO_WEBGPU=1: the CPU fallback;
// DEVICE=wgpu: WebGPU even on a software adapter)
import { chromium } from "playwright-core";
import { mkdirSync, writeFileSync } from "node:fs";

const [url, out] = process.argv.slice(2);
mkdirSync(out, { recursive: true });
const noWebgpu = process.env.NO_WEBGPU === "1";
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: [
    "--no-sandbox", "--no-first-run", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--disable-quic", ...(noWebgpu ? [] : ["--enable-unsafe-webgpu"]),
  ],
});
const page = await (await browser.newContext({ viewport: { width: 1100, height: 1300 } })).newPage();
page.on("pageerror", (e) => console.log(`[page error] ${e}`));
const limit = { timeout: Number(process.env.TIMEOUT_MS || 3600000), polling: 1000 };
const loadStart = Date.now();
await page.goto(url);
await page.waitForFunction(() => document.body.dataset.defaults, null, limit);
const loaded = (Date.now() - loadStart) / 1000;
// DEVICE=wgpu|cpu overrides the page's `auto` (which takes the CPU backend on SwiftShader).
if (process.env.DEVICE) await page.selectOption("#device", process.env.DEVICE);
await page.click("#start");
if (noWebgpu && process.env.DEVICE !== "cpu") {
  await page.waitForFunction(() => document.body.dataset.noWebgpu || document.body.dataset.error, null, limit);
  await page.click("#start");
}
const started = Date.now();
// Where a long run stands, once a minute.
const progress = setInterval(async () => {
  const status = await page.textContent("#status").catch(() => "?");
  console.log(`${Math.round((Date.now() - started) / 1000)} s: ${status}`);
}, 60000);
await page.waitForFunction(() => document.body.dataset.done || document.body.dataset.error, null, limit);
const seconds = (Date.now() - started) / 1000;
clearInterval(progress);
const error = await page.evaluate(() => document.body.dataset.error);
if (error) throw new Error(error);
const cells = await page.locator("#samples td").allTextContents();
const report = {
  adapter: await page.evaluate(() => document.body.dataset.adapter),
  engine_loaded_s: loaded,
  run_s: seconds,
  status: await page.textContent("#status"),
  pair_status: await page.textContent("#pair-status"),
  sample_cells: cells.length,
  cells_with_replacement_char: cells.filter((t) => /[\uFFFD\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F]/.test(t)).length,
  first_samples: (await page.locator("#samples tbody tr").allTextContents()).slice(0, 4),
};
console.log(JSON.stringify(report, null, 1));
writeFileSync(`${out}/report.json`, JSON.stringify(report, null, 1));
await page.screenshot({ path: `${out}/page.png`, fullPage: true });
await browser.close();
if (report.cells_with_replacement_char) process.exit(1);
