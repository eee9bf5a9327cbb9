// Real-browser test of the live avatar client, run by tests/browser.rs.
//
// Env: AVATAR_EDGE_URL (http://127.0.0.1:<port>, started with --demo and
// --max-upload-mb 1), AVATAR_EDGE_TOKEN, FIXTURES (the fixtures/ dir),
// optional AVATAR_EDGE_WRITE_GOLDEN=<dir> to save the demo screenshot as
// <dir>/demo.png, optional CHROMIUM (default /usr/bin/chromium).
//
// A second origin (a platform) serves pages with 2,000 distinct identities
// (MD5 and SHA-256 mixed) in the progressive-enhancement markup
//   <img src="{edge}/avatar/{hash}?s=48&d=identicon" data-avatar-live>
// — `/` loads the classic /v1/client.js, `/module` imports /v1/client.mjs
// with an explicit base. Checked, without a reload:
// - with JavaScript disabled, every image is a real avatar or default;
// - two tabs of `/` and one of `/module`: after uploads through the API,
//   every image of the changed identities shows the new avatar within 1 s
//   (pixels equal to the content URL's), the `r`-rated one keeps showing the
//   default at r=g (and the avatar where the URL allows r=x);
// - each tab made at most 2 non-image requests to avatar-edge besides its
//   one event stream (no per-identity requests);
// - an upload through a signed URL in tab 1 reaches the older
//   data-avatar-key markup in both tabs; the invalid-file message;
// - an expired subscription (the stream answering 404) is re-created once; the
//   stream down keeps every picture and resumes with last_event_id; a
//   refused subscription (413) is reported once in the console, not retried;
// - the demo page served by avatar-edge itself.
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
const started = Date.now();
const log = (m) => console.log(`[${((Date.now() - started) / 1000).toFixed(2)}s] ${m}`);
const fail = (m) => {
  throw new Error(m);
};
setTimeout(() => {
  console.error("live.mjs: overall timeout (150 s)");
  process.exit(1);
}, 150_000).unref();

const md5 = (s) => crypto.createHash("md5").update(s).digest("hex");
const sha256 = (s) => crypto.createHash("sha256").update(s).digest("hex");

// The identity the platform's own upload form changes (older markup).
const EMAIL = "browser-test@example.org";
const KEY = md5(EMAIL);
// Three identities changed through the API; R is rated r.
const SPECIAL = {
  a: { email: "live-a@example.org", key: md5("live-a@example.org"), file: "logo_alpha_disc_512.png" },
  b: { email: "live-b@example.org", key: sha256("live-b@example.org"), file: "photo_grace_hopper_512x600.jpg" },
  r: { email: "live-r@example.org", key: md5("live-r@example.org"), file: "logo_alpha_disc_512.png", rating: "r" },
};
const TOTAL = 2000;

// --- the platform (second origin) ---------------------------------------
function identityImg(key, size, extra = "", attrs = "") {
  const src = `${EDGE}/avatar/${key}?s=${size}&amp;d=identicon${extra}`;
  return `<img src="${src}" data-avatar-live width="${size}" height="${size}" alt="" ${attrs}>`;
}

function body() {
  const parts = [];
  // The changed identities, several times each, with and without srcset.
  for (const [name, s] of Object.entries(SPECIAL)) {
    const t = `crossorigin="anonymous" data-test="${name}"`;
    parts.push(
      identityImg(s.key, 48, "", `${t} srcset="${EDGE}/avatar/${s.key}?s=96&amp;d=identicon 2x"`),
      identityImg(s.key, 32, "", t),
      identityImg(s.key, 64, "&amp;r=g", t)
    );
  }
  // Where the URL allows r=x, the r-rated avatar shows; inside a
  // data-avatar-rating="g" section the client holds it to g.
  const rx = `crossorigin="anonymous" data-test="rx"`;
  parts.push(identityImg(SPECIAL.r.key, 40, "&amp;r=x", rx));
  parts.push(
    `<section data-avatar-rating="g">${identityImg(SPECIAL.r.key, 40, "&amp;r=x", `crossorigin="anonymous" data-test="rg"`)}</section>`
  );
  const specials = new Set(Object.values(SPECIAL).map((s) => s.key));
  for (let i = 0; specials.size < TOTAL; i++) {
    const email = `user${i}@example.org`;
    const key = i % 3 === 0 ? sha256(email) : md5(email);
    if (specials.has(key)) continue;
    specials.add(key);
    parts.push(identityImg(key, 24));
  }
  return parts.join("\n");
}
const IMAGES = body();

const uploadForm = `
<header><img data-avatar-key="${KEY}" data-avatar-size="32" width="32" height="32" alt="me" crossorigin="anonymous" data-test="legacy"></header>
<section><img data-avatar-key="${KEY}" data-avatar-size="64" width="64" height="64" alt="profile" crossorigin="anonymous" data-test="legacy">
<input id="file" type="file"> <progress id="progress" max="100" value="0"></progress>
<p id="status"></p></section>
<script>
window.changes = [];
document.addEventListener("avatar-change", (e) => window.changes.push(e.detail));
document.getElementById("file").addEventListener("change", async (ev) => {
  const f = ev.target.files[0];
  const status = document.getElementById("status");
  status.textContent = "uploading";
  const signed = await (await fetch("/sign", { method: "POST" })).json();
  const xhr = new XMLHttpRequest();
  xhr.open(signed.method, "${EDGE}" + signed.url);
  xhr.upload.onprogress = (e) => { document.getElementById("progress").value = 100 * e.loaded / e.total; };
  xhr.onload = () => {
    if (xhr.status === 200) { status.textContent = "ok " + JSON.parse(xhr.responseText).hash; }
    else { status.textContent = "error: " + JSON.parse(xhr.responseText).message; }
  };
  xhr.onerror = () => { status.textContent = "error: network"; };
  xhr.send(f);
});
</script>`;

const classicPage = `<!doctype html>
<html><head><meta charset="utf-8"><title>Platform</title>
<script src="${EDGE}/v1/client.js" defer></script>
<style>img{border-radius:50%;background:#eee} body{font:14px sans-serif}</style>
<script>
// When each test image finished loading what it shows (wall clock, ms).
document.addEventListener("load", (e) => {
  const t = e.target;
  if (t.tagName === "IMG" && t.dataset.test) t.__loaded = { src: t.currentSrc, at: performance.timeOrigin + performance.now() };
}, true);
</script></head>
<body>${uploadForm}
<main>${IMAGES}</main></body></html>`;

const modulePage = `<!doctype html>
<html><head><meta charset="utf-8"><title>Platform (module)</title>
<script>
// When each test image finished loading what it shows (wall clock, ms).
document.addEventListener("load", (e) => {
  const t = e.target;
  if (t.tagName === "IMG" && t.dataset.test) t.__loaded = { src: t.currentSrc, at: performance.timeOrigin + performance.now() };
}, true);
</script>
<script type="module">
import { start } from "${EDGE}/v1/client.mjs";
window.changes = [];
window.client = start({ base: "${EDGE}" });
window.client.subscribe("${SPECIAL.a.key}", (c) => window.changes.push(c));
</script></head>
<body><main>${IMAGES}</main></body></html>`;

// A small module page: only the changed identities (failure scenarios).
const SMALL = IMAGES.split("\n").filter((l) => l.includes("data-test=")).join("\n");
const smallPage = modulePage.replace(IMAGES, SMALL);

// A module page subscribing more identities than the server allows.
const tooMany = Array.from({ length: 10_001 }, (_, i) => md5(`many${i}@example.org`));
const refusedPage = `<!doctype html>
<html><head><meta charset="utf-8"><title>Too many</title>
<script type="module">
import { start } from "${EDGE}/v1/client.mjs";
const keys = ${JSON.stringify(tooMany)};
window.client = start({ base: "${EDGE}", observe: false });
for (const k of keys) window.client.subscribe(k, () => {});
</script></head><body></body></html>`;

const platform = http.createServer(async (req, res) => {
  const html = { "/": classicPage, "/module": modulePage, "/small": smallPage, "/refused": refusedPage }[req.url];
  if (html && req.method === "GET") {
    res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
    return res.end(html);
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
log(`platform at ${ORIGIN}, edge at ${EDGE}`);

// --- helpers run in the page --------------------------------------------
// Every image of each group: complete, its URL versioned when asked, and its
// pixels equal to the reference URL's (the content URL of `hash` at the same
// size, or the identicon default at r=g).
async function probe([edge, groups]) {
  const cache = (window.__refs = window.__refs || new Map());
  const pixels = (img) => {
    const c = document.createElement("canvas");
    c.width = img.naturalWidth;
    c.height = img.naturalHeight;
    const ctx = c.getContext("2d");
    ctx.drawImage(img, 0, 0);
    return ctx.getImageData(0, 0, c.width, c.height).data;
  };
  const ref = (url) => {
    if (!cache.has(url)) {
      cache.set(
        url,
        new Promise((ok) => {
          const i = new Image();
          i.crossOrigin = "anonymous";
          i.onload = () => ok(pixels(i));
          i.onerror = () => ok(null);
          i.src = url;
        })
      );
    }
    return cache.get(url);
  };
  const out = [];
  for (const g of groups) {
    const imgs = [...document.querySelectorAll(`img[data-test="${g.test}"]`)];
    if (!imgs.length) out.push({ group: g.test, ok: false, why: "no images" });
    for (const img of imgs) {
      const src = img.currentSrc || img.src;
      const r = { group: g.test, src, ok: false, at: img.__loaded && img.__loaded.src === src ? img.__loaded.at : null };
      out.push(r);
      if (g.versioned && !/[?&]v=\d+/.test(src)) continue;
      if (!img.complete || !img.naturalWidth) continue;
      const u = new URL(src);
      const key = u.pathname.split("/").pop();
      const s = u.searchParams.get("s");
      const want = g.hash ? `${edge}/c/${g.hash}?s=${s}` : `${edge}/avatar/${key}?s=${s}&d=identicon&r=g&ref=1`;
      try {
        const a = pixels(img);
        const b = await ref(want);
        if (!b || a.length !== b.length) {
          r.why = "size";
          continue;
        }
        let diff = 0;
        for (let i = 0; i < a.length; i++) diff += Math.abs(a[i] - b[i]);
        r.diff = diff / a.length;
        r.ok = r.diff < 2;
      } catch (e) {
        r.why = String(e); // a tainted canvas: CORS is wrong
      }
    }
  }
  const last = {};
  for (const r of out) last[r.group] = Math.max(last[r.group] || 0, r.at || Infinity);
  return { all: out.every((r) => r.ok), bad: out.filter((r) => !r.ok).slice(0, 8), last };
}

// `timed`: also wait until each image's load event was seen (its time).
async function waitAll(tabs, groups, ms, what, timed = false) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    last = await Promise.all(tabs.map((t) => t.evaluate(probe, [EDGE, groups])));
    if (last.every((r) => r.all && (!timed || Object.values(r.last).every(Number.isFinite)))) return last;
    if (Date.now() > deadline) {
      fail(`${what}: not every avatar is right within ${ms} ms:\n${JSON.stringify(last, null, 1)}`);
    }
    await new Promise((r) => setTimeout(r, 10));
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

async function apiUpload(s) {
  const q = s.rating ? `?rating=${s.rating}` : "";
  const r = await fetch(`${EDGE}/v1/avatars/${encodeURIComponent(s.email)}${q}`, {
    method: "PUT",
    headers: { authorization: `Bearer ${TOKEN}` },
    body: fs.readFileSync(path.join(FIXTURES, s.file)),
  });
  const j = await r.json();
  if (r.status !== 200) fail(`upload for ${s.email}: ${r.status} ${JSON.stringify(j)}`);
  return j.hash;
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

// Requests a tab makes to avatar-edge, by kind.
function countRequests(tab) {
  const seen = { other: [], streams: 0, images: 0 };
  tab.on("request", (r) => {
    if (!r.url().startsWith(EDGE)) return;
    if (r.resourceType() === "image") seen.images++;
    else if (new URL(r.url()).pathname === "/v1/events") seen.streams++;
    else seen.other.push(`${r.method()} ${new URL(r.url()).pathname}`);
  });
  return seen;
}

async function allImagesReal(tab) {
  return tab.evaluate(() => {
    const imgs = [...document.querySelectorAll("main img")];
    const broken = imgs.filter((i) => !i.complete || !i.naturalWidth).map((i) => i.src);
    return { n: imgs.length, broken: broken.slice(0, 5), nbroken: broken.length };
  });
}

// --- the browser ---------------------------------------------------------
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "avatar-edge-files-"));
const invalid = path.join(tmp, "not-an-image.png");
fs.writeFileSync(invalid, "this is text, not a PNG\n".repeat(20));
let browser;
let code = 0;
try {
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"],
  });
  log(`chromium ${browser.version()} started`);
  const errors = [];
  const watch = (t, name) => {
    t.on("pageerror", (e) => errors.push(`${name}: ${e}`));
    t.on("console", (m) => m.type() === "error" && errors.push(`${name} console: ${m.text()}`));
  };

  // 1. JavaScript disabled: the markup alone shows every avatar.
  const nojs = await browser.newContext({ javaScriptEnabled: false });
  const plain = await nojs.newPage();
  await plain.goto(ORIGIN + "/", { waitUntil: "load", timeout: 60_000 });
  const real = await allImagesReal(plain);
  if (real.n < TOTAL || real.nbroken) fail(`without JavaScript: ${JSON.stringify(real)}`);
  log(`JavaScript disabled: all ${real.n} images are real avatars or defaults`);
  await nojs.close();

  // 2. Two tabs of the classic page, one of the module page (its own
  // context: HTTP/1.1 allows 6 connections per host and profile, and every
  // tab holds one for its stream).
  const ctx = await browser.newContext({ viewport: { width: 900, height: 760 } });
  const modCtx = await browser.newContext({ viewport: { width: 900, height: 760 } });
  const tabs = [await ctx.newPage(), await ctx.newPage(), await modCtx.newPage()];
  const counts = tabs.map(countRequests);
  for (const [i, t] of tabs.entries()) {
    watch(t, `tab${i}`);
    await t.goto(ORIGIN + (i === 2 ? "/module" : "/"), { waitUntil: "load", timeout: 60_000 });
  }
  const live = ["a", "b", "r", "rx", "rg"].map((test) => ({ test }));
  await waitAll(tabs, live, 10_000, "defaults before any upload");
  for (const [i, t] of tabs.entries()) {
    await t.waitForFunction(() => (window.AvatarEdge || window.client).connected, null, { timeout: 10_000 });
    const real = await allImagesReal(t);
    if (real.nbroken) fail(`tab${i}: broken images ${JSON.stringify(real)}`);
  }
  const origins = await Promise.all(tabs.map((t) => t.evaluate(() => performance.timeOrigin)));
  log("three tabs connected, every identity shows its default");

  // 3. Uploads through the API: every image of the three changes in every
  // tab within 1 s of its upload's acknowledgement (when the image finished
  // loading the new picture, as the page saw it; pixels checked after).
  const hashes = {};
  const ackedAt = {};
  for (const [name, s] of Object.entries(SPECIAL)) {
    hashes[name] = await apiUpload(s);
    ackedAt[name] = Date.now();
  }
  const expect = [
    { test: "a", hash: hashes.a, versioned: true },
    { test: "b", hash: hashes.b, versioned: true },
    { test: "r", versioned: true }, // rated r, the page shows g: the default
    { test: "rg", versioned: true },
    { test: "rx", hash: hashes.r, versioned: true },
  ];
  const shown = await waitAll(tabs, expect, 5000, "after the API uploads", true);
  const upload = { a: "a", b: "b", r: "r", rg: "r", rx: "r" };
  const lags = {};
  for (const [i, tab] of shown.entries()) {
    for (const [group, at] of Object.entries(tab.last)) {
      const lag = at - ackedAt[upload[group]];
      lags[group] = Math.max(lags[group] || 0, lag);
      if (!(lag <= 1000)) fail(`tab${i} group ${group}: the new picture showed ${lag} ms after the upload (limit 1000)`);
    }
  }
  log(`API uploads: every image of the 3 identities in 3 tabs showed the change within ${JSON.stringify(lags)} ms`);
  const moduleChanges = await tabs[2].evaluate(() => window.changes);
  const last = moduleChanges[moduleChanges.length - 1];
  if (!last || last.key !== SPECIAL.a.key || last.hash !== hashes.a || !(last.version > 0) || last.url !== `${EDGE}/c/${hashes.a}`) {
    fail(`module subscribe callback: ${JSON.stringify(moduleChanges)}`);
  }
  // What a framework hook renders: the versioned identity URL.
  const hookSrc = await tabs[2].evaluate((k) => window.client.url(k, { size: 48, default: "identicon" }), SPECIAL.a.key);
  if (hookSrc !== `${EDGE}/avatar/${SPECIAL.a.key}?s=48&d=identicon&v=${last.version}`) fail(`client.url: ${hookSrc}`);

  // The request budget of a page load and its live updates: per tab, one
  // event stream and at most two other requests (the client script and the
  // subscription), whatever the number of identities.
  for (const [i, c] of counts.entries()) {
    if (c.streams !== 1 || c.other.length > 2) fail(`tab${i} requests: ${JSON.stringify(c)}`);
    log(`tab${i}: ${c.images} image requests, 1 event stream, other: ${c.other.join(", ")}`);
  }

  // 4. The platform's own upload form (signed URL) and the older markup.
  for (const name of ["photo_grace_hopper_512x600.jpg", "logo_alpha_disc_512.png"]) {
    await tabs[0].setInputFiles("#file", path.join(FIXTURES, name));
    const t = await statusText(tabs[0], "#status", "^(ok|error)", 10_000, `upload of ${name}`);
    const at = Date.now();
    if (!t.startsWith("ok ")) fail(`upload of ${name} failed: ${t}`);
    const done = await waitAll(tabs.slice(0, 2), [{ test: "legacy", hash: t.slice(3), versioned: true }], 5000, name, true);
    const lag = Math.max(...done.map((d) => d.last.legacy)) - at;
    if (!(lag <= 1000)) fail(`${name}: data-avatar-key images showed it ${lag} ms after the upload`);
    log(`${name} through the page: data-avatar-key images in both tabs showed it ${lag} ms later`);
  }
  const after = await Promise.all(tabs.map((t) => t.evaluate(() => performance.timeOrigin)));
  if (after.some((v, i) => v !== origins[i])) fail("a tab reloaded");
  const changes = await tabs[1].evaluate(() => window.changes);
  const seen = changes.filter((c) => c.key === KEY).length;
  if (seen < 2) fail(`avatar-change events in tab 2: ${JSON.stringify(changes)}`);
  const lastChange = changes[changes.length - 1];
  if (typeof lastChange.version !== "number" || !lastChange.url.includes(lastChange.hash)) {
    fail(`avatar-change detail: ${JSON.stringify(lastChange)}`);
  }

  // 5. An invalid file: the server's own message is shown.
  const expected = await serverMessage(fs.readFileSync(invalid));
  await tabs[0].setInputFiles("#file", invalid);
  const t = await statusText(tabs[0], "#status", "^error", 10_000, "invalid upload");
  if (t !== "error: " + expected) fail(`shown "${t}", server says "${expected}"`);
  log(`invalid file: platform page shows "${t}"`);
  await ctx.close();
  await modCtx.close();

  // 6. Failure rules. An expired subscription (simulated: the stream answers
  // 404 once) is re-created with one POST; a refused one (413) is reported
  // once and never retried.
  const fctx = await browser.newContext();
  const expired = await fctx.newPage();
  const fcount = countRequests(expired);
  let refusedStreams = 0;
  await expired.route((url) => url.href.startsWith(EDGE) && url.pathname === "/v1/events", (route) => {
    if (refusedStreams++ === 0) {
      return route.fulfill({ status: 404, contentType: "application/json", body: '{"error":"not_found","message":"subscription not found"}' });
    }
    return route.continue();
  });
  await expired.goto(ORIGIN + "/small", { waitUntil: "load", timeout: 60_000 });
  await expired.waitForFunction(() => window.client.connected, null, { timeout: 10_000 });
  const posts = fcount.other.filter((r) => r === "POST /v1/subscriptions").length;
  if (posts !== 2 || fcount.streams !== 2) fail(`after a 404 stream: ${JSON.stringify(fcount)}`);
  await apiUpload({ ...SPECIAL.a, file: "photo_grace_hopper_512x600.jpg" }).then((h) => (hashes.a = h));
  await waitAll([expired], [{ test: "a", hash: hashes.a, versioned: true }], 5000, "after re-subscribing");
  log("a 404 stream re-created the subscription once and the page stayed live");

  // The stream down (its first connection refused): images keep their
  // picture, and the reconnection resumes from the subscription's
  // last_event_id, replaying a change made while it was down.
  const down = await fctx.newPage();
  const streamUrls = [];
  let uploaded;
  const whileDown = new Promise((ok) => (uploaded = ok));
  await down.route((url) => url.href.startsWith(EDGE) && url.pathname === "/v1/events", async (route) => {
    streamUrls.push(route.request().url());
    if (streamUrls.length === 1) return route.abort("connectionrefused");
    await whileDown;
    return route.continue();
  });
  await down.goto(ORIGIN + "/small", { waitUntil: "load", timeout: 60_000 });
  // The client may still be swapping in its versioned URL (v=) from the
  // subscription's answer: wait for the images to settle, on the same picture.
  await waitAll([down], [{ test: "b", hash: hashes.b }], 5000, "the stream down: images changed");
  hashes.b = await apiUpload({ ...SPECIAL.b, file: "logo_alpha_disc_512.png" });
  uploaded();
  await waitAll([down], [{ test: "b", hash: hashes.b, versioned: true }], 5000, "after the stream came back");
  if (streamUrls.length !== 2 || !/[?&]last_event_id=\d+/.test(streamUrls[1])) {
    fail(`stream attempts: ${JSON.stringify(streamUrls)}`);
  }
  log("the stream down: pictures kept, the change made meanwhile replayed on reconnection");

  const refused = await fctx.newPage();
  const rcount = countRequests(refused);
  const consoleErrors = [];
  refused.on("console", (m) => m.type() === "error" && consoleErrors.push(m.text()));
  await refused.goto(ORIGIN + "/refused");
  await refused.waitForTimeout(3000);
  const rposts = rcount.other.filter((r) => r === "POST /v1/subscriptions").length;
  const reports = consoleErrors.filter((m) => m.includes("avatar-edge") && m.includes("413"));
  if (rposts !== 1 || rcount.streams !== 0 || reports.length !== 1) {
    fail(`10,001 keys: ${rposts} POSTs, ${rcount.streams} streams, console: ${JSON.stringify(consoleErrors)}`);
  }
  log(`10,001 keys: one POST, 413 reported once: ${reports[0]}`);
  await fctx.close();

  // 7. The demo page served by avatar-edge itself (--demo).
  const dctx = await browser.newContext({ viewport: { width: 900, height: 760 } });
  const demo = await dctx.newPage();
  watch(demo, "demo");
  await demo.goto(EDGE + "/demo");
  await demo.setInputFiles("#file", path.join(FIXTURES, "logo_alpha_disc_512.png"));
  await demo.click("button[type=submit]");
  await statusText(demo, "#status", "Avatar updated", 10_000, "demo upload");
  const demoInfo = await (await fetch(`${EDGE}/v1/avatars/demo%40avatar-edge.invalid`)).json();
  await demo.evaluate(() => document.querySelectorAll("img.avatar").forEach((i) => i.setAttribute("data-test", "demo")));
  await waitAll([demo], [{ test: "demo", hash: demoInfo.hash, versioned: true }], 5000, "demo page");
  const progress = await demo.evaluate(() => document.getElementById("progress").value);
  if (progress !== 100) fail(`demo progress bar at ${progress}`);
  await demo.setInputFiles("#file", invalid);
  await demo.click("button[type=submit]");
  const dt = await statusText(demo, "#status", "^Upload refused", 10_000, "demo invalid upload");
  if (!dt.endsWith(expected)) fail(`demo shows "${dt}", server says "${expected}"`);
  if (!(await demo.isVisible("#status.error"))) fail("demo error message not visible");
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
  const fatal = errors.filter((e) => /avatar-edge|pageerror|TypeError|ReferenceError/.test(e));
  if (fatal.length) fail(`page errors:\n  ${fatal.join("\n  ")}`);
  if (errors.length) log(`console errors (not fatal):\n  ${errors.join("\n  ")}`);
  log("all browser checks passed");
} catch (e) {
  console.error(`live.mjs: FAILED: ${e && e.stack ? e.stack : e}`);
  code = 1;
} finally {
  if (browser) await browser.close().catch(() => {});
  platform.close();
  fs.rmSync(tmp, { recursive: true, force: true });
}
process.exit(code);
