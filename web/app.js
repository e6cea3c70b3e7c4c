// The page: knobs, live charts of the engine's events, the sample table, a prompt box.
const $ = (id) => document.getElementById(id);
const worker = new Worker(new URL("./worker.js", import.meta.url), { type: "module" });

// One chart per metric: [title, event kind, field].
const CHARTS = [
  ["loss (SFT / improver)", "train", "loss"],
  ["loss (DPO)", "dpo", "loss"],
  ["rewards/margins", "dpo", "rewards/margins"],
  ["rewards/accuracies", "dpo", "rewards/accuracies"],
  ["logps/chosen", "dpo", "logps/chosen"],
  ["logps/rejected", "dpo", "logps/rejected"],
  ["win rate vs SFT", "iteration", "policy_win_rate_vs_sft"],
  ["improver win rate", "iteration", "improver_win_rate"],
  ["tokens/s (training)", "dpo", "tokens/s"],
];
const series = CHARTS.map(() => []);
const canvases = CHARTS.map(([title]) => {
  const fig = document.createElement("figure");
  const canvas = document.createElement("canvas");
  canvas.width = 310;
  canvas.height = 140;
  const cap = document.createElement("figcaption");
  cap.textContent = title;
  fig.append(canvas, cap);
  $("charts").append(fig);
  return canvas;
});

function draw(canvas, points) {
  const g = canvas.getContext("2d");
  g.clearRect(0, 0, canvas.width, canvas.height);
  if (!points.length) return;
  const ys = points.map((p) => p[1]);
  let lo = Math.min(...ys), hi = Math.max(...ys);
  if (hi - lo < 1e-9) { lo -= 0.5; hi += 0.5; }
  const xs = points.map((p) => p[0]);
  const x0 = Math.min(...xs), x1 = Math.max(...xs, x0 + 1);
  const X = (x) => 30 + ((x - x0) / (x1 - x0)) * (canvas.width - 40);
  const Y = (y) => canvas.height - 15 - ((y - lo) / (hi - lo)) * (canvas.height - 25);
  g.fillStyle = "#666";
  g.font = "10px monospace";
  g.fillText(hi.toPrecision(3), 0, 10);
  g.fillText(lo.toPrecision(3), 0, canvas.height - 15);
  g.strokeStyle = "#2060c0";
  g.beginPath();
  points.forEach(([x, y], i) => (i ? g.lineTo(X(x), Y(y)) : g.moveTo(X(x), Y(y))));
  g.stroke();
  if (points.length < 8) points.forEach(([x, y]) => g.fillRect(X(x) - 2, Y(y) - 2, 4, 4));
}

function onEvent(e) {
  CHARTS.forEach(([, kind, field], i) => {
    const v = e[field];
    if (e.event === kind && typeof v === "number") {
      series[i].push([kind === "iteration" ? e.iteration : series[i].length, v]);
      draw(canvases[i], series[i]);
    }
  });
  if (e.event === "sample") {
    const row = document.createElement("tr");
    const cell = (text, cls) => {
      const td = document.createElement("td");
      td.textContent = text;
      if (cls) td.className = cls;
      return td;
    };
    const verdict = e.improved_score == null ? "" : e.improved_score > e.draft_score ? "better" : e.improved_score < e.draft_score ? "worse" : "";
    row.append(cell(e.prompt), cell(`${e.draft} (${fmt(e.draft_score)})`), cell(`${e.improved} (${fmt(e.improved_score)})`, verdict));
    $("samples").tBodies[0].prepend(row);
  }
  if (e.event === "progress") status(`iteration ${e.iteration}: ${e.stage} ${e.done}/${e.total}`);
  if (e.event === "train") status(`${e.stage} step ${e.step}: loss ${e.loss.toFixed(3)}`);
  if (e.event === "dpo") status(`DPO iteration ${e.iteration}, step ${e.step}: loss ${e.loss.toFixed(3)}`);
}

const fmt = (x) => (x == null ? "-" : x.toFixed(2));
const status = (text) => ($("status").textContent = text);

worker.onmessage = ({ data }) => {
  if (data.kind === "events") data.events.forEach(onEvent);
  if (data.kind === "ready") status(`running on ${data.adapter}`);
  if (data.kind === "paused") $("pause").textContent = data.paused ? "resume" : "pause";
  if (data.kind === "done") { status("done"); document.body.dataset.done = "1"; }
  if (data.kind === "answer") $("answer").textContent = data.text;
  if (data.kind === "error") { status(`error: ${data.error}`); document.body.dataset.error = data.error; }
  if (data.kind === "no-webgpu") {
    status(data.error);
    $("start").disabled = false;
    $("start").textContent = "start on the CPU (slow)";
    useCpu = true;
  }
};
let useCpu = false;

$("start").onclick = () => {
  const num = (id) => Number($(id).value);
  const config = {
    method: $("method").value,
    sft_steps: num("sft_steps"),
    iterations: num("iterations"),
    prompts_per_iteration: num("prompts_per_iteration"),
    batch_size: num("batch_size"),
    beta: num("beta"),
    lr: num("lr"),
    temperature: num("temperature"),
    cpu: useCpu,
  };
  $("start").disabled = true;
  $("pause").disabled = false;
  status("starting WebGPU…");
  worker.postMessage({ kind: "start", config });
};
$("pause").onclick = () => worker.postMessage({ kind: "pause" });
$("chat").onsubmit = (ev) => {
  ev.preventDefault();
  worker.postMessage({ kind: "answer", prompt: $("prompt").value });
};
