// Drives the page in headless Chromium with WebGPU: start a short run, wait for charts and
// samples, save a screenshot. Usage: node tests/browser/e2e.mjs URL SCREENSHOT
import { chromium } from "playwright-core";

// With NO_WEBGPU=1 Chromium starts without WebGPU: the page must say so and run on the CPU
// backend compiled to wasm when asked to.
const [url, screenshot] = process.argv.slice(2);
const noWebgpu = process.env.NO_WEBGPU === "1";
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: [
    "--no-sandbox", "--no-first-run", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--disable-quic", ...(noWebgpu ? [] : ["--enable-unsafe-webgpu"]),
  ],
});
const page = await browser.newPage({ viewport: { width: 1100, height: 1000 } });
page.on("console", (m) => console.log(`[page] ${m.text()}`));
page.on("pageerror", (e) => console.log(`[page error] ${e}`));
await page.goto(url);
await page.fill("#sft_steps", "20");
await page.fill("#iterations", "1");
await page.fill("#prompts_per_iteration", "16");
await page.click("#start");
if (noWebgpu) {
  await page.waitForFunction(() => document.querySelector("#status").textContent.includes("no WebGPU"), null, { timeout: 60000 });
  console.log(`status: ${await page.textContent("#status")}`);
  await page.click("#start");
}
const limit = Number(process.env.E2E_TIMEOUT_MS || 600000);
await page.waitForFunction(() => document.body.dataset.done || document.body.dataset.error, null, { timeout: limit, polling: 1000 });
const error = await page.evaluate(() => document.body.dataset.error);
await page.screenshot({ path: screenshot, fullPage: true });
const rows = await page.locator("#samples tbody tr").count();
console.log(`status: ${await page.textContent("#status")}; sample rows: ${rows}`);
await browser.close();
if (error || rows === 0) {
  console.error(`failed: ${error || "no samples"}`);
  process.exit(1);
}
