// The demo page: draw or upload a digit, add seeded noise here, ask the server to denoise and encode it.
"use strict";

const SIDE = 28;
const $ = (id) => document.getElementById(id);
const pad = $("pad");
const padCtx = pad.getContext("2d", { willReadFrequently: true });
let models = [];
// The models a request that names none gets, as GET /models reports them (default_for).
let defaults = { denoise: null, encode: null };
let drawing = false;
let codeShown = false; // once a code is drawn its caption names its model; until then it says what will come
// A 28×28 upload is already in the models' format: it is sent as it is (inverted if dark on light),
// not fitted like a drawing. Fitted into a digit's 20×20 box, a Fashion-MNIST garment came out
// looking like a digit to the out-of-distribution score (docs/interop.md, "The demo page").
let asIs = null;

// ---- drawing pad -------------------------------------------------------------------------------

function clearPad() {
  asIs = null;
  padCtx.fillStyle = "#000";
  padCtx.fillRect(0, 0, pad.width, pad.height);
}

function penStyle() {
  // A tenth of the pad: after scaling to 28×28 this is about MNIST's stroke width.
  padCtx.lineWidth = pad.width / 10;
  padCtx.lineCap = "round";
  padCtx.lineJoin = "round";
  padCtx.strokeStyle = "#fff";
}

function padPoint(event) {
  // The canvas is resized by CSS: map client coordinates back to canvas pixels.
  const rect = pad.getBoundingClientRect();
  return [
    ((event.clientX - rect.left) * pad.width) / rect.width,
    ((event.clientY - rect.top) * pad.height) / rect.height,
  ];
}

pad.addEventListener("pointerdown", (event) => {
  event.preventDefault();
  pad.setPointerCapture(event.pointerId);
  drawing = true;
  asIs = null; // drawn on: the pad is a drawing now
  penStyle();
  const [x, y] = padPoint(event);
  padCtx.beginPath();
  padCtx.moveTo(x, y);
  padCtx.lineTo(x, y);
  padCtx.stroke();
});
pad.addEventListener("pointermove", (event) => {
  if (!drawing) return;
  const [x, y] = padPoint(event);
  padCtx.lineTo(x, y);
  padCtx.stroke();
});
for (const type of ["pointerup", "pointercancel"]) {
  pad.addEventListener(type, () => {
    drawing = false;
    refreshInputs();
  });
}

function drawSample() {
  // A "2" as one stroke, in pad coordinates (0..1).
  const points = [
    [0.3, 0.32], [0.38, 0.22], [0.5, 0.18], [0.62, 0.22], [0.68, 0.33], [0.64, 0.46],
    [0.5, 0.6], [0.36, 0.74], [0.3, 0.8], [0.5, 0.8], [0.72, 0.8],
  ];
  clearPad();
  penStyle();
  padCtx.beginPath();
  points.forEach(([x, y], i) => {
    const method = i === 0 ? "moveTo" : "lineTo";
    padCtx[method](x * pad.width, y * pad.height);
  });
  padCtx.stroke();
  refreshInputs();
}

async function loadUpload(file) {
  let bitmap;
  try {
    bitmap = await createImageBitmap(file);
  } catch {
    say(`${file.name}: not an image this browser can read.`);
    return;
  }
  clearPad();
  const scale = Math.min(pad.width / bitmap.width, pad.height / bitmap.height);
  const w = bitmap.width * scale;
  const h = bitmap.height * scale;
  padCtx.drawImage(bitmap, (pad.width - w) / 2, (pad.height - h) / 2, w, h);
  // Digits are white on black; a dark-on-light scan is inverted.
  const small = greyAt28(bitmap);
  const invert = darkOnLight(small);
  if (invert) {
    const image = padCtx.getImageData(0, 0, pad.width, pad.height);
    const px = image.data;
    for (let i = 0; i < px.length; i += 4) {
      px[i] = px[i + 1] = px[i + 2] = 255 - px[i];
    }
    padCtx.putImageData(image, 0, 0);
  }
  if (bitmap.width === SIDE && bitmap.height === SIDE) {
    asIs = invert ? small.map((v) => 1 - v) : small; // its own pixels: drawn at 28×28 unscaled
  }
  refreshInputs();
}

// An upload's grey levels at 28×28 (scaled to it when it has another size).
function greyAt28(bitmap) {
  const canvas = document.createElement("canvas");
  canvas.width = canvas.height = SIDE;
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.drawImage(bitmap, 0, 0, SIDE, SIDE);
  return luminance(ctx, SIDE, SIDE);
}

// Whether an upload (its grey levels at 28×28) is dark on light, read from its outermost ring of
// pixels: digits and garments lie on a dark ground, a scan on paper on a light one. Not from its
// mean: a garment that fills most of the picture is bright on average and still light on dark.
function darkOnLight(lum) {
  let sum = 0;
  for (let i = 0; i < SIDE; i++) {
    sum += lum[i] + lum[(SIDE - 1) * SIDE + i] + lum[i * SIDE] + lum[i * SIDE + SIDE - 1];
  }
  return sum / (4 * SIDE) > 0.5;
}

// ---- images ------------------------------------------------------------------------------------

function luminance(ctx, w, h) {
  const px = ctx.getImageData(0, 0, w, h).data;
  const out = new Float32Array(w * h);
  for (let i = 0; i < out.length; i++) {
    out[i] = (0.299 * px[4 * i] + 0.587 * px[4 * i + 1] + 0.114 * px[4 * i + 2]) / 255;
  }
  return out;
}

// MNIST-style: fit the ink's bounding box into 20×20, then centre its centre of mass in 28×28.
function toDigit() {
  if (asIs !== null) return asIs.slice();
  const lum = luminance(padCtx, pad.width, pad.height);
  let x0 = pad.width, y0 = pad.height, x1 = -1, y1 = -1;
  for (let y = 0; y < pad.height; y++) {
    for (let x = 0; x < pad.width; x++) {
      if (lum[y * pad.width + x] > 0.1) {
        x0 = Math.min(x0, x); x1 = Math.max(x1, x);
        y0 = Math.min(y0, y); y1 = Math.max(y1, y);
      }
    }
  }
  if (x1 < 0) return null;
  const bw = x1 - x0 + 1;
  const bh = y1 - y0 + 1;
  const scale = 20 / Math.max(bw, bh);
  const fitted = document.createElement("canvas");
  fitted.width = fitted.height = SIDE;
  const fctx = fitted.getContext("2d", { willReadFrequently: true });
  fctx.fillStyle = "#000";
  fctx.fillRect(0, 0, SIDE, SIDE);
  fctx.imageSmoothingEnabled = true;
  fctx.imageSmoothingQuality = "high";
  const dw = bw * scale;
  const dh = bh * scale;
  fctx.drawImage(pad, x0, y0, bw, bh, (SIDE - dw) / 2, (SIDE - dh) / 2, dw, dh);
  const box = luminance(fctx, SIDE, SIDE);
  let mass = 0, mx = 0, my = 0;
  box.forEach((v, i) => {
    mass += v;
    mx += v * (i % SIDE);
    my += v * Math.floor(i / SIDE);
  });
  const dx = Math.round((SIDE - 1) / 2 - mx / mass);
  const dy = Math.round((SIDE - 1) / 2 - my / mass);
  const out = new Float32Array(SIDE * SIDE);
  for (let y = 0; y < SIDE; y++) {
    for (let x = 0; x < SIDE; x++) {
      const sx = x - dx;
      const sy = y - dy;
      if (sx >= 0 && sx < SIDE && sy >= 0 && sy < SIDE) out[y * SIDE + x] = box[sy * SIDE + sx];
    }
  }
  return out;
}

// mulberry32: a small seeded PRNG, so that a seed gives the same noise on every browser.
function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// noisy = clip(x + sigma * N(0, 1), 0, 1), N by Box-Muller; the same form as the evaluation protocol.
function addNoise(pixels, sigma, seed) {
  const uniform = rng(seed);
  const out = new Float32Array(pixels.length);
  for (let i = 0; i < pixels.length; i += 2) {
    const r = Math.sqrt(-2 * Math.log(1 - uniform()));
    const theta = 2 * Math.PI * uniform();
    out[i] = pixels[i] + sigma * r * Math.cos(theta);
    if (i + 1 < pixels.length) out[i + 1] = pixels[i + 1] + sigma * r * Math.sin(theta);
  }
  return out.map((v) => Math.min(1, Math.max(0, v)));
}

function paint(canvas, pixels) {
  const ctx = canvas.getContext("2d");
  const image = ctx.createImageData(SIDE, SIDE);
  pixels.forEach((v, i) => {
    const g = Math.round(v * 255);
    image.data.set([g, g, g, 255], 4 * i);
  });
  ctx.putImageData(image, 0, 0);
}

function noiseSettings() {
  const sigma = Number($("noise").value);
  const seed = Math.max(0, Math.floor(Number($("seed").value) || 0));
  return { sigma, seed };
}

// Redraw clean and noisy from the pad; returns false when nothing is drawn yet.
function refreshInputs() {
  const clean = toDigit();
  if (clean === null) {
    paint($("clean"), new Float32Array(SIDE * SIDE));
    paint($("noisy"), new Float32Array(SIDE * SIDE));
    return false;
  }
  const { sigma, seed } = noiseSettings();
  paint($("clean"), clean);
  paint($("noisy"), addNoise(clean, sigma, seed));
  return true;
}

// ---- latent code heat map ----------------------------------------------------------------------

// Dark blue → teal → yellow: ordered in lightness, readable without colour vision.
const STOPS = [[13, 8, 135], [33, 145, 140], [253, 231, 37]];

function colour(t) {
  const x = Math.min(1, Math.max(0, t)) * (STOPS.length - 1);
  const i = Math.min(STOPS.length - 2, Math.floor(x));
  const f = x - i;
  return STOPS[i].map((c, k) => Math.round(c + f * (STOPS[i + 1][k] - c)));
}

// source: the card the code comes from; selected: the card chosen for /denoise.
function drawCode(code, shape, source, selected) {
  // [C, H, W]: C tiles of H×W in a near-square grid; anything else: rows of 8.
  const [channels, h, w] = shape.length === 3 ? shape : [1, Math.ceil(code.length / 8), 8];
  const cols = Math.ceil(Math.sqrt(channels));
  const rows = Math.ceil(channels / cols);
  const canvas = $("heatmap");
  canvas.width = cols * (w + 1) - 1;
  canvas.height = rows * (h + 1) - 1;
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  const lo = Math.min(...code);
  const hi = Math.max(...code);
  const image = ctx.getImageData(0, 0, canvas.width, canvas.height);
  code.forEach((v, i) => {
    const c = Math.floor(i / (h * w));
    const y = Math.floor((i % (h * w)) / w);
    const x = i % w;
    const px = (c % cols) * (w + 1) + x;
    const py = Math.floor(c / cols) * (h + 1) + y;
    image.data.set([...colour(hi > lo ? (v - lo) / (hi - lo) : 0), 255], 4 * (py * canvas.width + px));
  });
  ctx.putImageData(image, 0, 0);
  canvas.hidden = false;
  codeShown = true;
  const size = shape.join("×");
  canvas.setAttribute("aria-label", `Latent code of ${source.id} heat map, shape ${size}`);
  const why = source.id === selected.id
    ? ""
    : ` ${selected.id} (${selected.arch}) has no latent code, so this is the code of the /encode ` +
      `default, ${source.id}.`;
  $("code-caption").textContent =
    `Latent code of ${source.id} (${size}): ${code.length} numbers, ` +
    `from ${lo.toFixed(2)} (dark) to ${hi.toFixed(2)} (bright).${why}`;
}

function noCode(model) {
  $("heatmap").hidden = true;
  codeShown = false;
  $("code-caption").textContent =
    `${model.id} (${model.arch}) has no latent code, and the server reports no /encode default ` +
    "to take one from. Choose a model with a code to see one.";
}

// The card whose code the page shows: the selected model's own, else the /encode default's.
function codeSource(model) {
  if (model.code_shape) return model;
  return models.find((m) => m.id === defaults.encode && m.code_shape) || null;
}

function describeCode() {
  const model = models.find((m) => m.id === $("model").value);
  if (!model) return;
  const source = codeSource(model);
  if (!source) {
    noCode(model);
    return;
  }
  $("code-caption").textContent = source.id === model.id
    ? `The latent code of ${source.id} (${source.code_shape.join("×")}) appears here as a heat map.`
    : `${model.id} has no latent code; the code of ${source.id} (${source.code_shape.join("×")}), ` +
      "the /encode default, appears here as a heat map.";
}

// ---- out-of-distribution score ------------------------------------------------------------------

// What a model's training images were, in a word for the sentence under the result.
function kindOf(model) {
  if (model.dataset === "mnist5k" || model.dataset === "mnist") return "a digit";
  if (model.dataset === "fashion") return "a garment";
  return "its training images";
}

function ordinalSuffix(text) {
  // "1st", "22nd", "113th"; a number with decimals reads "99.9th".
  if (text.includes(".")) return `${text}th`;
  const whole = Number(text);
  const tens = whole % 100;
  return `${text}${tens >= 11 && tens <= 13 ? "th" : ["th", "st", "nd", "rd"][whole % 10] || "th"}`;
}

// A percentile in as few decimals as keep it on its own side of the threshold (and below 100):
// 99.96 is "99.96th", never "100.0th"; 99.52 past a 99.5 threshold is "99.52th", never "99.5th".
function percentileText(value, threshold, inside) {
  for (const digits of [0, 1, 2]) {
    if (digits === 0 && value >= 99) continue;
    const text = value.toFixed(digits);
    const shown = Number(text);
    if (shown < 100 && (inside ? shown <= threshold : shown > threshold)) return ordinalSuffix(text);
  }
  return ordinalSuffix(value.toFixed(2)); // the header's own precision
}

// The score the server sent with the denoised image (X-OOD-Percentile, X-In-Distribution,
// X-OOD-Threshold): a gauge and a sentence that names the model, the percentile and the threshold.
function showOod(response, model) {
  const box = $("ood");
  const percentile = response.headers.get("x-ood-percentile");
  if (percentile === null) {
    box.hidden = true;
    return;
  }
  const value = Number(percentile);
  const inside = response.headers.get("x-in-distribution") === "true";
  const threshold = Number(response.headers.get("x-ood-threshold") || "99.5");
  const limit = ordinalSuffix(String(threshold));
  const where = value >= 100
    ? "past every one of its validation images"
    : `${percentileText(value, threshold, inside)} percentile of its validation images`;
  const meter = $("ood-meter");
  meter.value = value;
  meter.high = threshold;
  meter.setAttribute("aria-valuetext", where);
  $("ood-text").textContent = inside
    ? `This looks like ${kindOf(model)} to ${model.id}: ${where} (flagged past the ${limit}).`
    : `This does not look like ${kindOf(model)} to ${model.id}: ${where} (flagged past the ${limit}); ` +
      "do not trust the result.";
  box.classList.toggle("outsider", !inside);
  box.hidden = false;
}

// ---- server ------------------------------------------------------------------------------------

function say(text) {
  $("status").textContent = text;
}

async function errorText(response) {
  try {
    const body = await response.json();
    const detail = body.detail ?? body.error;
    return `${response.status}: ${typeof detail === "string" ? detail : JSON.stringify(body)}`;
  } catch {
    return `${response.status} ${response.statusText}`;
  }
}

// Server-Timing (total duration) or X-Process-Time (seconds), when the server sends either.
function serverMs(response) {
  const timing = response.headers.get("server-timing");
  const match = timing && /dur=([\d.]+)/.exec(timing);
  if (match) return Number(match[1]);
  const seconds = response.headers.get("x-process-time");
  return seconds ? Number(seconds) * 1000 : null;
}

// The API key, when the service asks for one (401): asked once, kept in this page only (never stored).
let apiKey = null;
let asking = null;

function askForKey() {
  if (!asking) {
    asking = Promise.resolve().then(() => {
      const entered = window.prompt(
        "This service needs an API key (X-API-Key). It is kept in this page only, never stored:"
      );
      apiKey = entered ? entered.trim() : null;
      return apiKey;
    });
  }
  return asking;
}

// fetch, with the API key once the service has asked for one; on a 401, ask once and try again.
async function send(path, options = {}) {
  const withKey = () => {
    const headers = { ...(options.headers || {}) };
    if (apiKey) headers["X-API-Key"] = apiKey;
    return fetch(path, { ...options, headers });
  };
  let response = await withKey();
  if (response.status === 401) {
    const tried = apiKey;
    const key = await askForKey();
    if (key && key !== tried) {
      response = await withKey();
      if (response.ok) $("key-note").textContent = "Sending the API key you entered (kept in this page only).";
    }
    if (response.status === 401) asking = null; // a wrong or missing key: ask again next time
  }
  return response;
}

async function post(path, blob) {
  const started = performance.now();
  const response = await send(path, { method: "POST", body: blob, headers: { "Content-Type": "image/png" } });
  const roundTrip = performance.now() - started;
  if (!response.ok) throw new Error(await errorText(response));
  return { response, roundTrip };
}

async function loadModels() {
  const response = await send("/models");
  if (!response.ok) {
    say(`Cannot list the models (${await errorText(response)}).`);
    if (response.status === 503) setTimeout(loadModels, 1000);
    return;
  }
  models = await response.json();
  // default_for: the routes that get this model when a request names none.
  const defaultOf = (route) => models.find((m) => (m.default_for || []).includes(route));
  defaults = {
    denoise: (defaultOf("denoise") || models[0] || {}).id || null,
    encode: (defaultOf("encode") || {}).id || null,
  };
  const select = $("model");
  select.replaceChildren(
    ...models.map((m) => {
      const code = m.code_shape ? `code ${m.code_shape.join("×")}` : "no code";
      const option = new Option(`${m.id} (${code})`, m.id);
      option.selected = m.id === defaults.denoise;
      return option;
    })
  );
  select.disabled = false;
  describeCode();
}

async function run() {
  const clean = toDigit();
  if (clean === null) {
    say("Draw a digit (or upload one) first.");
    return;
  }
  const model = models.find((m) => m.id === $("model").value);
  if (!model) {
    say("The models are still loading.");
    return;
  }
  const { sigma, seed } = noiseSettings();
  paint($("clean"), clean);
  paint($("noisy"), addNoise(clean, sigma, seed));
  const blob = await new Promise((resolve) => $("noisy").toBlob(resolve, "image/png"));
  const query = (m) => `?model=${encodeURIComponent(m.id)}`;
  const source = codeSource(model);
  $("run").disabled = true;
  $("ood").hidden = true; // the score of the previous input, if any, no longer applies
  say(`Denoising with ${model.id}…`);
  try {
    const [denoised, encoded] = await Promise.all([
      post(`/denoise${query(model)}`, blob),
      source ? post(`/encode${query(source)}`, blob) : Promise.resolve(null),
    ]);
    const png = await denoised.response.blob();
    const img = $("denoised");
    const loaded = new Promise((resolve, reject) => {
      img.onload = resolve;
      img.onerror = () => reject(new Error("the denoised PNG did not load"));
    });
    if (img.src.startsWith("blob:")) URL.revokeObjectURL(img.src);
    img.src = URL.createObjectURL(png);
    await loaded;
    img.alt = `Denoised by ${model.id} from noise level ${sigma.toFixed(2)}`;
    showOod(denoised.response, model);
    if (encoded) {
      const body = await encoded.response.json();
      drawCode(body.code, body.shape, source, model);
    } else {
      noCode(model);
    }
    const calls = [[`/denoise (${model.id})`, denoised], [`/encode (${source && source.id})`, encoded]];
    const timings = calls.filter(([, r]) => r).map(([path, r]) => {
      const server = serverMs(r.response);
      const trip = `round trip ${r.roundTrip.toFixed(1)} ms`;
      return server === null ? `${path}: ${trip}` : `${path}: server ${server.toFixed(1)} ms, ${trip}`;
    });
    $("timing").textContent = `${timings.join("; ")} (round trips measured in the browser).`;
    const server = serverMs(denoised.response);
    const took = server === null
      ? `${denoised.roundTrip.toFixed(1)} ms round trip`
      : `${server.toFixed(1)} ms on the server`;
    const from = source && source.id !== model.id ? `; code from ${source.id}` : "";
    say(`Denoised with ${model.id} at σ = ${sigma.toFixed(2)} (${took})${from}.`);
  } catch (error) {
    say(`Failed: ${error.message}`);
  } finally {
    $("run").disabled = false;
  }
}

// ---- wiring ------------------------------------------------------------------------------------

$("noise").addEventListener("input", () => {
  $("noise-value").value = Number($("noise").value).toFixed(2);
  refreshInputs();
});
$("seed").addEventListener("input", refreshInputs);
$("clear").addEventListener("click", () => {
  clearPad();
  refreshInputs();
});
$("sample").addEventListener("click", drawSample);
$("upload").addEventListener("change", (event) => {
  const [file] = event.target.files;
  if (file) loadUpload(file);
});
$("run").addEventListener("click", run);
$("model").addEventListener("change", () => {
  if (!codeShown) describeCode();
});

clearPad();
refreshInputs();
loadModels();
