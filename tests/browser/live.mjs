// Real-browser test of the live avatar client, run by tests/browser.rs.
//
// Env: AVATAR_EDGE_URL (http://127.0.0.1:<port>, started with --demo and
// --max-upload-mb 1),
// AVATAR_EDGE_TOKEN, FIXTURES (the fixtures/ dir), optional
// AVATAR_EDGE_WRITE_GOLDEN=<dir> to save the demo screenshot as <dir>/demo.png,
// optional CHROMIUM (default /usr/bin/chromium).
//
// A second origin (a platform) serves a page that loads /v1/client.js
// cross-origin and signs uploads with the token on its backend. Two tabs show
// it; an upload in the first must reach every avatar in both within 1 s,
// checked by content hash in the URL and by pixel colour, without a reload.
// Exits 0 on success, 1 with a message otherwise.
import http from "node:http";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import crypto from "node:crypto";
import { chromium } from "playwright-core";

const EDGE = process.env.AVATAR_EDGE_URL;
const TOKEN = process.env.AVATAR_EDGE_TOKEN;
const FIXTURES = process.env.FIXTURES;
const GOLDEN = process.env.AVATAR_EDGE_WRITE_GOLDEN;
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
if (!EDGE || !TOKEN || !FIXTURES) {
  console.error("live.mjs: set AVATAR_EDGE_URL, AVATAR_EDGE_TOKEN and FIXTURES");
  process.exit(2);
}
const EMAIL = "browser-test@example.org";
const KEY = crypto.createHash("md5").update(EMAIL).digest("hex");
const started = Date.now();
const log = (m) => console.log(`[${((Date.now() - started) / 1000).toFixed(2)}s] ${m}`);
const fail = (m) => {
  throw new Error(m);
};
setTimeout(() => {
  console.error("live.mjs: overall timeout (60 s)");
  process.exit(1);
}, 60_000).unref();

// --- the platform (second origin) ---------------------------------------
const page = `<!doctype html>
<html><head><meta charset="utf-8"><title>Platform</title>
<script src="${EDGE}/v1/client.js"></script>
<style>img{border-radius:50%;background:#eee} body{font:14px sans-serif}</style></head>
<body>
<header><img data-avatar-key="${KEY}" data-avatar-size="32" width="32" height="32" alt="me"></header>
<section><img data-avatar-key="${KEY}" data-avatar-size="256" width="256" height="256" alt="profile">
<input id="file" type="file"> <progress id="progress" max="100" value="0"></progress>
<p id="status"></p></section>
<ul><li><img data-avatar-key="${KEY}" data-avatar-size="48" width="48" height="48" alt="c1"> first</li>
<li><img data-avatar-key="${KEY}" data-avatar-size="48" width="48" height="48" alt="c2"> second</li></ul>
<script>
window.changes = [];
document.addEventListener("avatar-change", (e) => window.changes.push(e.detail));
document.getElementById("file").addEventListener("change", async (ev) => {
  const f = ev.target.files[0];
  const status = document.getElementById("status");
  status.textContent = "uploading";
  const signed = await (await fetch("/sign", { method: "POST" })).json();
  const xhr = new XMLHttpRequest();
  xhr.open(signed.method, AvatarEdge.base + signed.url);
  xhr.upload.onprogress = (e) => { document.getElementById("progress").value = 100 * e.loaded / e.total; };
  xhr.onload = () => {
    if (xhr.status === 200) { status.textContent = "ok " + JSON.parse(xhr.responseText).hash; }
    else { status.textContent = "error: " + JSON.parse(xhr.responseText).message; }
  };
  xhr.onerror = () => { status.textContent = "error: network"; };
  xhr.send(f);
});
</script></body></html>`;

const platform = http.createServer(async (req, res) => {
  if (req.url === "/" && req.method === "GET") {
    res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
    return res.end(page);
  }
  if (req.url === "/sign" && req.method === "POST") {
    // The platform's backend holds the token; the browser gets a signed URL.
    const r = await fetch(`${EDGE}/v1/upload-urls`, {
      method: "POST",
      headers: { authorization: `Bearer ${TOKEN}`, "content-type": "application/json" },
      body: JSON.stringify({ key: EMAIL, expires_in: 120 }),
    });
    res.writeHead(r.status, { "content-type": "application/json" });
    return res.end(await r.text());
  }
  res.writeHead(404);
  res.end();
});
await new Promise((ok) => platform.listen(0, "127.0.0.1", ok));
const ORIGIN = `http://127.0.0.1:${platform.address().port}`;
log(`platform at ${ORIGIN}, edge at ${EDGE}, key ${KEY}`);

// --- helpers run in the page --------------------------------------------
// Every avatar: does it show content `hash` (null: anything not a /c/ URL),
// and is the pixel at (25 %, 50 %) red (the logo's ring) or not?
function probe([hash, wantRed]) {
  const imgs = [...document.querySelectorAll("img[data-avatar-key]")];
  const out = imgs.map((img) => {
    const src = img.currentSrc || img.src;
    const r = { src, ok: false };
    const hashOk = hash ? src.includes("/c/" + hash + ".") : src.includes("/avatar/");
    if (!hashOk || !img.complete || !img.naturalWidth) return r;
    try {
      const c = document.createElement("canvas");
      c.width = img.naturalWidth;
      c.height = img.naturalHeight;
      const ctx = c.getContext("2d");
      ctx.drawImage(img, 0, 0);
      const p = ctx.getImageData(Math.floor(c.width / 4), Math.floor(c.height / 2), 1, 1).data;
      r.rgb = [p[0], p[1], p[2]];
      const red = p[0] > 170 && p[1] < 110 && p[2] < 110;
      r.ok = wantRed === null || red === wantRed;
    } catch (e) {
      r.error = String(e); // a tainted canvas: CORS is wrong
    }
    return r;
  });
  return { all: out.length > 0 && out.every((r) => r.ok), out };
}

async function waitAll(tabs, hash, wantRed, ms, what) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    last = await Promise.all(tabs.map((t) => t.evaluate(probe, [hash, wantRed])));
    if (last.every((r) => r.all)) return Date.now();
    if (Date.now() > deadline) {
      fail(`${what}: not every avatar updated within ${ms} ms:\n${JSON.stringify(last, null, 1)}`);
    }
    await new Promise((r) => setTimeout(r, 15));
  }
}

async function statusText(tab, sel, pred, ms, what) {
  const h = await tab.waitForFunction(
    ([sel, pred]) => {
      const t = document.querySelector(sel).textContent;
      return new RegExp(pred).test(t) ? t : null;
    },
    [sel, pred],
    { timeout: ms, polling: 10 }
  );
  const t = await h.jsonValue();
  if (!t) fail(what);
  return t;
}

// The message the server gives for `bytes` (asked directly, for comparison).
async function serverMessage(bytes) {
  const s = await (
    await fetch(`${EDGE}/v1/upload-urls`, {
      method: "POST",
      headers: { authorization: `Bearer ${TOKEN}` },
      body: JSON.stringify({ key: "other@example.org", expires_in: 60 }),
    })
  ).json();
  const r = await fetch(EDGE + s.url, { method: "PUT", body: bytes });
  if (r.ok) fail("the invalid file was accepted");
  return (await r.json()).message;
}

// --- the browser ---------------------------------------------------------
const profile = fs.mkdtempSync(path.join(os.tmpdir(), "avatar-edge-chromium-"));
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "avatar-edge-files-"));
const invalid = path.join(tmp, "not-an-image.png");
fs.writeFileSync(invalid, "this is text, not a PNG\n".repeat(20));
let context;
let code = 0;
try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--no-first-run",
    ],
    viewport: { width: 900, height: 760 },
  });
  log(`chromium ${context.browser()?.version() ?? "(persistent)"} started`);
  const errors = [];
  const tabs = [await context.newPage(), await context.newPage()];
  for (const [i, t] of tabs.entries()) {
    t.on("pageerror", (e) => errors.push(`tab${i}: ${e}`));
    t.on("console", (m) => m.type() === "error" && errors.push(`tab${i} console: ${m.text()}`));
    await t.goto(ORIGIN + "/");
  }
  // No avatar yet: the server's default through the identity URL.
  await waitAll(tabs, null, null, 5000, "default avatar");
  const reloads = await Promise.all(tabs.map((t) => t.evaluate(() => performance.timeOrigin)));
  log("both tabs show the default avatar");

  const uploads = [
    ["photo_grace_hopper_512x600.jpg", false],
    ["logo_alpha_disc_512.png", true],
  ];
  for (const [name, red] of uploads) {
    await tabs[0].setInputFiles("#file", path.join(FIXTURES, name));
    const t = await statusText(tabs[0], "#status", "^(ok|error)", 10_000, `upload of ${name}`);
    const uploadedAt = Date.now();
    if (!t.startsWith("ok ")) fail(`upload of ${name} failed: ${t}`);
    const hash = t.slice(3);
    const doneAt = await waitAll(tabs, hash, red, 1000, name);
    log(`${name}: every avatar in both tabs shows ${hash.slice(0, 12)}… ${doneAt - uploadedAt} ms after the upload`);
  }
  const after = await Promise.all(tabs.map((t) => t.evaluate(() => performance.timeOrigin)));
  if (after.some((v, i) => v !== reloads[i])) fail("a tab reloaded");
  const changes = await tabs[1].evaluate(() => window.changes);
  const seen = await tabs[1].evaluate((key) => window.changes.filter((c) => c.key === key).length, KEY);
  if (seen < 2) fail(`avatar-change events in tab 2: ${JSON.stringify(changes)}`);
  const lastChange = changes[changes.length - 1];
  if (typeof lastChange.version !== "number" || !lastChange.url.includes(lastChange.hash)) {
    fail(`avatar-change detail: ${JSON.stringify(lastChange)}`);
  }
  log(`avatar-change events in tab 2: ${seen}, last ${JSON.stringify(lastChange)}`);

  // An invalid file: the server's own message is shown.
  const expected = await serverMessage(fs.readFileSync(invalid));
  await tabs[0].setInputFiles("#file", invalid);
  const t = await statusText(tabs[0], "#status", "^error", 10_000, "invalid upload");
  if (t !== "error: " + expected) fail(`shown "${t}", server says "${expected}"`);
  log(`invalid file: platform page shows "${t}"`);

  // The demo page served by avatar-edge itself (--demo).
  const demo = tabs[1];
  await demo.goto(EDGE + "/demo");
  await demo.setInputFiles("#file", path.join(FIXTURES, "logo_alpha_disc_512.png"));
  await demo.click("button[type=submit]");
  await statusText(demo, "#status", "Avatar updated", 10_000, "demo upload");
  const demoInfo = await (await fetch(`${EDGE}/v1/avatars/demo%40avatar-edge.invalid`)).json();
  await waitAll([demo], demoInfo.hash, true, 1000, "demo page");
  const progress = await demo.evaluate(() => document.getElementById("progress").value);
  if (progress !== 100) fail(`demo progress bar at ${progress}`);
  await demo.setInputFiles("#file", invalid);
  await demo.click("button[type=submit]");
  const dt = await statusText(demo, "#status", "^Upload refused", 10_000, "demo invalid upload");
  if (!dt.endsWith(expected)) fail(`demo shows "${dt}", server says "${expected}"`);
  const visible = await demo.isVisible("#status.error");
  if (!visible) fail("demo error message not visible");
  log(`demo page: upload ok, invalid file shows "${dt}"`);
  // Oversize (the server runs with --max-upload-mb 1; this photo is 3.6 MB).
  await demo.setInputFiles("#file", path.join(FIXTURES, "photo_large_4032x3024.jpg"));
  await demo.click("button[type=submit]");
  const big = await statusText(demo, "#status", "^Upload (refused|failed)", 10_000, "demo oversize upload");
  if (!/exceeds the limit/.test(big)) fail(`oversize upload shows "${big}"`);
  log(`demo page: oversize file shows "${big}"`);
  // The screenshot shows the invalid-file message.
  await demo.setInputFiles("#file", invalid);
  await demo.click("button[type=submit]");
  await statusText(demo, "#status", "unsupported", 10_000, "demo invalid upload again");
  const shot = await demo.screenshot({ fullPage: true });
  if (shot.length < 1000 || shot.readUInt32BE(0) !== 0x89504e47) fail("screenshot is not a PNG");
  if (GOLDEN) {
    fs.mkdirSync(GOLDEN, { recursive: true });
    fs.writeFileSync(path.join(GOLDEN, "demo.png"), shot);
    log(`screenshot written to ${path.join(GOLDEN, "demo.png")}`);
  }
  if (errors.length) log(`page errors (not fatal):\n  ${errors.join("\n  ")}`);
  log("all browser checks passed");
} catch (e) {
  console.error(`live.mjs: FAILED: ${e && e.stack ? e.stack : e}`);
  code = 1;
} finally {
  if (context) await context.close().catch(() => {});
  platform.close();
  fs.rmSync(profile, { recursive: true, force: true });
  fs.rmSync(tmp, { recursive: true, force: true });
}
process.exit(code);
