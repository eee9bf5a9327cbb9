// Real-browser test of animated avatars (issue 22), run by tests/browser.rs.
//
// Env: AVATAR_EDGE_URL, AVATAR_EDGE_TOKEN, FIXTURES, optional CHROMIUM.
// Uploads fixtures/gif_animated_aero_56f.gif, then a second loopback origin
// serves a page with `<img src="{edge}/avatar/{md5}?s=128" data-avatar-live>`
// and /v1/client.js. Checked in headless Chromium:
// - without a motion preference the avatar is animated: screenshots of the
//   image taken over 2 s are not all the same;
// - under emulated `prefers-reduced-motion: reduce` the client asks for
//   `animated=0` and the image holds still (every screenshot equal);
// - when the preference changes on the open page the client switches back
//   (the URL loses `animated=0` and the image moves again).
// Exits 0 on success, 1 with a message otherwise.
import http from "node:http";
import fs from "node:fs";
import path from "node:path";
import crypto from "node:crypto";
import { chromium } from "playwright-core";

const EDGE = process.env.AVATAR_EDGE_URL;
const TOKEN = process.env.AVATAR_EDGE_TOKEN;
const FIXTURES = process.env.FIXTURES;
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
if (!EDGE || !TOKEN || !FIXTURES) {
  console.error("motion.mjs: set AVATAR_EDGE_URL, AVATAR_EDGE_TOKEN and FIXTURES");
  process.exit(2);
}
setTimeout(() => {
  console.error("motion.mjs: overall timeout (60 s)");
  process.exit(1);
}, 60_000).unref();
const fail = (m) => {
  throw new Error(m);
};
const EMAIL = "moving@example.org";
const KEY = crypto.createHash("md5").update(EMAIL).digest("hex");

const up = await fetch(`${EDGE}/v1/avatars/${encodeURIComponent(EMAIL)}`, {
  method: "PUT",
  headers: { authorization: `Bearer ${TOKEN}` },
  body: fs.readFileSync(path.join(FIXTURES, "gif_animated_aero_56f.gif")),
});
if (up.status !== 200) fail(`upload: ${up.status} ${await up.text()}`);

const page = `<!doctype html><html><head><meta charset="utf-8">
<script src="${EDGE}/v1/client.js" defer></script></head>
<body style="margin:0;background:#fff">
<img id="a" width="128" height="128" src="${EDGE}/avatar/${KEY}?s=128" data-avatar-live>
</body></html>`;
const platform = http.createServer((req, res) => {
  if (req.url === "/") {
    res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
    return res.end(page);
  }
  res.writeHead(404);
  res.end();
});
await new Promise((ok) => platform.listen(0, "127.0.0.1", ok));
const ORIGIN = `http://127.0.0.1:${platform.address().port}`;

// Distinct screenshots of the image over `ms` (one every 150 ms), once it
// shows a URL matching `wantStill` (animated=0 or not) and has loaded.
async function shots(p, wantStill, ms) {
  await p.waitForFunction(
    (still) => {
      const img = document.getElementById("a");
      return img.complete && img.naturalWidth > 0 && img.currentSrc.includes("animated=0") === still;
    },
    wantStill,
    { timeout: 10_000 },
  );
  const seen = new Set();
  const img = p.locator("#a");
  for (let t = 0; t < ms; t += 150) {
    seen.add((await img.screenshot()).toString("base64"));
    await p.waitForTimeout(150);
  }
  return seen.size;
}

let browser;
let code = 0;
try {
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"],
  });
  const errors = [];
  const moving = await (await browser.newContext()).newPage();
  moving.on("pageerror", (e) => errors.push(`${e}`));
  await moving.goto(`${ORIGIN}/`);
  // The GIF's first frame shows 2 s; watch past it.
  const n = await shots(moving, false, 3000);
  if (n < 2) fail(`no motion preference: the avatar did not move (${n} distinct screenshot)`);
  console.log(`animated: ${n} distinct screenshots`);

  const ctx = await browser.newContext({ reducedMotion: "reduce" });
  const still = await ctx.newPage();
  still.on("pageerror", (e) => errors.push(`${e}`));
  await still.goto(`${ORIGIN}/`);
  const m = await shots(still, true, 3000);
  if (m !== 1) fail(`reduced motion: ${m} distinct screenshots, want 1 (a still)`);
  console.log("reduced motion: still");

  // The visitor changes the preference: the client follows without a reload.
  await still.emulateMedia({ reducedMotion: "no-preference" });
  const k = await shots(still, false, 3000);
  if (k < 2) fail(`after the preference changed: ${k} distinct screenshot(s)`);
  console.log(`preference changed: moving again (${k} distinct screenshots)`);
  if (errors.length) fail(`page errors: ${errors.join("; ")}`);
} catch (e) {
  console.error(`motion.mjs: ${e.message}`);
  code = 1;
} finally {
  if (browser) await browser.close();
  platform.close();
}
process.exit(code);
