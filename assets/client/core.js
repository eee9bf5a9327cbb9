/* avatar-edge live client: the shared core of /v1/client.js (classic script,
 * starts by itself) and /v1/client.mjs (ES module, `start({base})`).
 * This file only defines functions: nothing runs until a wrapper calls
 * createAvatarClient(options).
 *
 * Integration markup (works without JavaScript, through any CDN):
 *   <img src="{base}/avatar/{hash}?s=48&d=identicon" data-avatar-live alt="…">
 * The first paint is the identity URL itself. The client reads the hash and
 * the query (s, d, r, …) from that URL, subscribes every identity on the page
 * with ONE request (POST {base}/v1/subscriptions) and listens on ONE event
 * stream (GET {base}/v1/events?sub=<id>). When an identity changes, its
 * images point at the versioned identity URL (…&v=<version>): ratings,
 * defaults and the output format stay the server's decision, and the answer
 * is CDN-cacheable and purged with the identity. No per-identity requests.
 */

var AVATAR_EDGE_CLIENT_VERSION = 2;

function createAvatarClient(options) {
  "use strict";
  options = options || {};
  var doc = options.document || (typeof document !== "undefined" ? document : null);
  var root = options.root || doc;
  var observe = options.observe !== false && !!root;
  var out = options.console || (typeof console !== "undefined" ? console : { error: function () {}, warn: function () {} });
  var KEY_RE = /^(?:[0-9a-f]{32}|[0-9a-f]{64})$/;
  var PATH_RE = /^(.*)\/avatar\/([0-9a-fA-F]{32}|[0-9a-fA-F]{64})(\.[A-Za-z]+)?$/;
  var RATINGS = ["g", "pg", "r", "x"];
  var MAX_SIZE = 2048;
  var RETRY_MIN = 1000;
  var RETRY_MAX = 60000;

  var base = normalizeBase(options.base);
  var destroyed = false;
  var entries = new WeakMap(); // img -> {key, kind, src0, srcset0, applied, prev}
  var byKey = Object.create(null); // key -> Set of img
  var versions = Object.create(null); // key -> highest version applied
  var hashes = Object.create(null); // key -> content hash (null: no avatar)
  var listeners = Object.create(null); // key -> array of callbacks
  var lastEventId = null;
  var observer = null;
  var scanTimer = null;
  var reported = Object.create(null); // messages already logged once

  // The live subscription: the key set it covers and its stream.
  var sub = { joined: "", id: null, stream: null, retryMs: RETRY_MIN, timer: null, gen: 0 };
  var connected = false;

  // Issue 22: a visitor who prefers reduced motion gets the still frame of
  // animated avatars (`animated=0`), switching live when the preference changes.
  var win = options.window || (typeof window !== "undefined" ? window : null);
  var motion = win && typeof win.matchMedia === "function" ? win.matchMedia("(prefers-reduced-motion: reduce)") : null;
  var reduced = !!(motion && motion.matches);
  function onMotion() {
    var now = !!(motion && motion.matches);
    if (now === reduced) return;
    reduced = now;
    scan();
  }
  if (motion) {
    if (typeof motion.addEventListener === "function") motion.addEventListener("change", onMotion);
    else if (typeof motion.addListener === "function") motion.addListener(onMotion);
  }

  function normalizeBase(b) {
    if (!b) return "";
    try {
      var u = new URL(String(b), doc ? doc.baseURI : undefined);
      return (u.origin + u.pathname).replace(/\/+$/, "");
    } catch (e) {
      throw new TypeError("avatar-edge: base must be an absolute URL, got " + b);
    }
  }

  function reportOnce(msg) {
    if (reported[msg]) return;
    reported[msg] = true;
    out.error(msg);
  }

  function rank(r) {
    var i = RATINGS.indexOf(String(r || "").toLowerCase());
    return i < 0 ? -1 : i;
  }

  // The page's rating for `img`: the closest data-avatar-rating, else the
  // client option, else none (the server's default, g).
  function pageRating(img) {
    var el = img && img.closest ? img.closest("[data-avatar-rating]") : null;
    var r = el ? el.getAttribute("data-avatar-rating") : options.rating;
    return rank(r) >= 0 ? String(r).toLowerCase() : null;
  }

  // An identity URL of this server: {url: URL, key} or null.
  function parseIdentity(src) {
    if (!src) return null;
    var u;
    try {
      u = new URL(src, doc ? doc.baseURI : undefined);
    } catch (e) {
      return null;
    }
    var m = PATH_RE.exec(u.origin + u.pathname);
    if (!m) return null;
    if (!base) base = m[1]; // bundled classic script: the first image names the server
    if (m[1] !== base) return null;
    return { url: u, key: m[2].toLowerCase() };
  }

  // `u` (an identity URL) at version `v`, never above the page's rating;
  // null when the URL needs no change.
  function withVersion(u, v, rating) {
    var n = new URL(u.href);
    var changed = false;
    if (rating) {
      var have = n.searchParams.has("r") ? n.searchParams.get("r") : n.searchParams.get("rating");
      var hr = rank(have);
      if (hr < 0 ? rank(rating) > 0 : hr > rank(rating)) {
        n.searchParams.delete("rating");
        n.searchParams.set("r", rating);
        changed = true;
      }
    }
    if (v && n.searchParams.get("v") !== String(v)) {
      n.searchParams.set("v", String(v));
      changed = true;
    }
    if (reduced && n.searchParams.get("animated") !== "0") {
      n.searchParams.set("animated", "0");
      changed = true;
    }
    return changed ? n.href : null;
  }

  // A srcset's candidates as [url, descriptor] (the HTML parsing rules,
  // simplified: URLs contain no whitespace; a trailing comma ends one).
  function splitSrcset(s) {
    var out = [];
    var i = 0;
    var n = s.length;
    while (i < n) {
      while (i < n && /[\s,]/.test(s.charAt(i))) i++;
      if (i >= n) break;
      var j = i;
      while (j < n && !/\s/.test(s.charAt(j))) j++;
      var url = s.slice(i, j);
      var desc = "";
      if (/,$/.test(url)) {
        url = url.replace(/,+$/, "");
        i = j;
      } else {
        var k = s.indexOf(",", j);
        if (k < 0) k = n;
        desc = s.slice(j, k).trim();
        i = k + 1;
      }
      out.push([url, desc]);
    }
    return out;
  }

  // Rewrite every identity URL of `key` in a srcset; null when unchanged.
  function rewriteSrcset(srcset, key, v, rating) {
    if (!srcset) return null;
    var changed = false;
    var parts = splitSrcset(srcset).map(function (c) {
      var p = parseIdentity(c[0]);
      var url = p && p.key === key ? withVersion(p.url, v, rating) : null;
      if (url) changed = true;
      return (url || c[0]) + (c[1] ? " " + c[1] : "");
    });
    return changed ? parts.join(", ") : null;
  }

  function legacySize(img) {
    var s = parseInt(img.getAttribute("data-avatar-size"), 10);
    return s > 0 ? Math.min(s, MAX_SIZE) : 80;
  }

  // The identity URL for `key` (used by legacy markup and `client.url`).
  function buildUrl(key, o) {
    o = o || {};
    var size = Math.min(Math.max(parseInt(o.size, 10) || 80, 1), MAX_SIZE);
    var q = "?s=" + size;
    if (o["default"]) q += "&d=" + encodeURIComponent(o["default"]);
    var r = o.rating || options.rating;
    if (rank(r) > 0) q += "&r=" + String(r).toLowerCase();
    if (versions[key]) q += "&v=" + versions[key];
    if (reduced) q += "&animated=0";
    return base + "/avatar/" + key + q;
  }

  function legacySrcset(img, key) {
    var size = legacySize(img);
    var seen = Object.create(null);
    var parts = [];
    for (var x = 1; x <= 3; x++) {
      var s = Math.min(size * x, MAX_SIZE);
      if (seen[s]) continue;
      seen[s] = true;
      parts.push(legacyUrl(img, key, s) + " " + x + "x");
    }
    return parts.join(", ");
  }

  function legacyUrl(img, key, size) {
    return buildUrl(key, {
      size: size,
      default: img.getAttribute("data-avatar-default") || options["default"],
      rating: pageRating(img) || undefined,
    });
  }

  // What the image should show now: {src, srcset} or null (leave it alone).
  function target(img, e) {
    var v = versions[e.key];
    if (e.kind === "legacy") {
      if (!base) return null;
      return { src: legacyUrl(img, e.key, legacySize(img)), srcset: legacySrcset(img, e.key) };
    }
    var rating = pageRating(img);
    var p = parseIdentity(e.src0);
    if (!p) return null;
    return {
      src: withVersion(p.url, v, rating) || e.src0,
      srcset: rewriteSrcset(e.srcset0, e.key, v, rating) || e.srcset0,
    };
  }

  function show(img, e) {
    var t = target(img, e);
    if (!t) return;
    var cur = img.getAttribute("src");
    if (cur === t.src && (img.getAttribute("srcset") || "") === (t.srcset || "")) return;
    // Keep the last good picture, in case the new URL cannot be fetched.
    e.prev = { src: cur, srcset: img.getAttribute("srcset") };
    e.applied = t.src;
    if (t.srcset) img.setAttribute("srcset", t.srcset);
    img.setAttribute("src", t.src);
  }

  function onImageError(ev) {
    var img = ev.target;
    var e = entries.get(img);
    if (!e || !e.prev || img.getAttribute("src") !== e.applied) return;
    var prev = e.prev;
    e.prev = null; // restore once, never loop
    e.applied = prev.src;
    if (prev.srcset) img.setAttribute("srcset", prev.srcset);
    else img.removeAttribute("srcset");
    if (prev.src) img.setAttribute("src", prev.src);
  }

  function track(img) {
    var e = entries.get(img);
    var live = img.hasAttribute("data-avatar-live");
    var src = img.getAttribute("src");
    if (e && e.kind === "live" && live && (src === e.applied || src === e.src0)) return e;
    var key;
    if (live) {
      // New, or the application (a framework) set another src: start over from it.
      var p = parseIdentity(src);
      if (!p) return null;
      key = p.key;
      e = { key: key, kind: "live", src0: src, srcset0: img.getAttribute("srcset"), applied: src, prev: null };
    } else {
      key = String(img.getAttribute("data-avatar-key") || "").trim().toLowerCase();
      if (!KEY_RE.test(key)) return null;
      if (e && e.kind === "legacy" && e.key === key) return e;
      e = { key: key, kind: "legacy", src0: null, srcset0: null, applied: null, prev: null };
    }
    entries.set(img, e);
    img.addEventListener("error", onImageError);
    return e;
  }

  function scan() {
    scanTimer = null;
    if (destroyed) return;
    var next = Object.create(null);
    if (observe) {
      var list = root.querySelectorAll("img[data-avatar-live], img[data-avatar-key]");
      for (var i = 0; i < list.length; i++) {
        var img = list[i];
        var e = track(img);
        if (!e) continue;
        (next[e.key] || (next[e.key] = new Set())).add(img);
        // Legacy markup has no src of its own; live markup only changes when
        // it is behind a known version or above the page's rating.
        // (Or the visitor prefers reduced motion: then it asks for the still.)
        if (e.kind === "legacy" || versions[e.key] || pageRating(img) || reduced || e.applied !== e.src0) show(img, e);
      }
    }
    byKey = next;
    resubscribe();
  }

  function scheduleScan() {
    if (!scanTimer && !destroyed) scanTimer = setTimeout(scan, 30);
  }

  function wantedKeys() {
    var set = Object.create(null);
    var k;
    for (k in byKey) set[k] = true;
    for (k in listeners) if (listeners[k].length) set[k] = true;
    return Object.keys(set).sort();
  }

  // Apply a change of `key`; older versions never win.
  function apply(key, version, hash, announce) {
    if (!(version > (versions[key] || 0))) return;
    versions[key] = version;
    hashes[key] = hash || null;
    var set = byKey[key];
    if (set) set.forEach(function (img) {
      var e = entries.get(img);
      if (e && img.isConnected) show(img, e);
    });
    var detail = { key: key, hash: hash || null, url: hash ? base + "/c/" + hash : null, version: version };
    var cbs = (listeners[key] || []).slice();
    for (var i = 0; i < cbs.length; i++) {
      try {
        cbs[i](detail);
      } catch (err) {
        out.error(err);
      }
    }
    if (announce && doc && typeof CustomEvent === "function") {
      doc.dispatchEvent(new CustomEvent("avatar-change", { detail: detail }));
    }
  }

  function onEvent(data, id) {
    if (id && (!lastEventId || Number(id) > Number(lastEventId))) lastEventId = id;
    var d;
    try {
      d = JSON.parse(data);
    } catch (e) {
      return;
    }
    var keys = (d.aliases || []).concat(d.key ? [d.key] : []);
    var done = Object.create(null);
    for (var i = 0; i < keys.length; i++) {
      var k = String(keys[i]).toLowerCase();
      if (done[k] || !(byKey[k] || listeners[k])) continue;
      done[k] = true;
      apply(k, d.version || 0, d.hash || null, true);
    }
  }

  // --- the subscription and its one event stream ---------------------------

  function resubscribe() {
    if (destroyed || !base) return;
    var keys = wantedKeys();
    var joined = keys.join(",");
    // The same set: its attempt is under way, connected, waiting to retry,
    // or was refused with a 4xx (reported once, not retried).
    if (joined === sub.joined) return;
    clearTimeout(sub.timer);
    sub.timer = null;
    sub.joined = joined;
    sub.retryMs = RETRY_MIN;
    var gen = ++sub.gen;
    if (!keys.length) {
      closeStream();
      return;
    }
    if (typeof fetch !== "function") return;
    createSubscription(keys, gen, true);
  }

  function retryLater(gen, fn) {
    var wait = sub.retryMs;
    sub.retryMs = Math.min(sub.retryMs * 2, RETRY_MAX);
    sub.timer = setTimeout(function () {
      sub.timer = null;
      if (gen === sub.gen && !destroyed) fn();
    }, wait);
  }

  function refuse(what, status, body) {
    var msg = body && body.message ? body.message : "HTTP " + status;
    reportOnce("avatar-edge: " + what + " refused (" + status + "): " + msg + "; live updates are off for this page");
  }

  // POST the key set; `fresh`: the first attempt (a 404 on the stream may
  // re-create it once).
  function createSubscription(keys, gen, fresh) {
    fetch(base + "/v1/subscriptions", {
      method: "POST",
      // A string body is text/plain: a simple CORS request, no preflight.
      body: JSON.stringify({ keys: keys }),
      mode: "cors",
      credentials: "omit",
      cache: "no-store",
    })
      .then(function (r) {
        return r
          .json()
          .catch(function () {
            return null;
          })
          .then(function (j) {
            if (gen !== sub.gen || destroyed) return;
            if (r.status >= 400 && r.status < 500 && r.status !== 429) return refuse("subscription", r.status, j);
            if (!r.ok || !j || !j.id) return retryLater(gen, function () { createSubscription(keys, gen, fresh); });
            sub.id = j.id;
            if (!lastEventId && j.last_event_id != null) lastEventId = String(j.last_event_id);
            // Identities that changed recently may show a picture the browser
            // cached before the change: bring them up to date.
            var recent = j.recent || {};
            for (var k in recent) apply(k, recent[k].version, recent[k].hash, false);
            openStream(j.id, gen, fresh);
          });
      })
      .catch(function () {
        if (gen === sub.gen) retryLater(gen, function () { createSubscription(keys, gen, fresh); });
      });
  }

  function closeStream() {
    if (sub.stream) sub.stream.abort();
    sub.stream = null;
    connected = false;
  }

  function openStream(id, gen, mayResubscribe) {
    if (typeof AbortController !== "function") return;
    var ctl = new AbortController();
    var url = base + "/v1/events?sub=" + encodeURIComponent(id);
    if (lastEventId) url += "&last_event_id=" + encodeURIComponent(lastEventId);
    fetch(url, { mode: "cors", credentials: "omit", cache: "no-store", signal: ctl.signal })
      .then(function (r) {
        if (gen !== sub.gen || destroyed) return ctl.abort();
        if (r.status === 404 && mayResubscribe) {
          // Expired: re-create it (once), then resume.
          return createSubscription(sub.joined.split(","), gen, false);
        }
        if (r.status >= 400 && r.status < 500 && r.status !== 429 && r.status !== 404) {
          return r.json().catch(function () { return null; }).then(function (j) { refuse("event stream", r.status, j); });
        }
        if (!r.ok || !r.body) throw new Error("HTTP " + r.status);
        // Connected: the previous stream (an older key set) can go now.
        if (sub.stream && sub.stream !== ctl) sub.stream.abort();
        sub.stream = ctl;
        connected = true;
        sub.retryMs = RETRY_MIN;
        return readEvents(r.body, gen);
      })
      .then(
        function (ended) {
          if (ended) lost(id, gen);
        },
        function () {
          lost(id, gen);
        }
      );
  }

  // The stream ended or failed: keep every image as it is, resume later.
  function lost(id, gen) {
    if (gen !== sub.gen || destroyed) return;
    connected = false;
    sub.stream = null;
    retryLater(gen, function () {
      openStream(id, gen, true);
    });
  }

  // Parse server-sent events from a byte stream; resolves true when it ends.
  function readEvents(body, gen) {
    var reader = body.getReader();
    var decoder = new TextDecoder();
    var buf = "";
    var ev = { event: "", data: [], id: null };
    function line(l) {
      if (l === "") {
        if (ev.data.length && (ev.event || "message") === "avatar") onEvent(ev.data.join("\n"), ev.id);
        ev = { event: "", data: [], id: null };
        return;
      }
      if (l.charAt(0) === ":") return;
      var i = l.indexOf(":");
      var field = i < 0 ? l : l.slice(0, i);
      var value = i < 0 ? "" : l.slice(i + 1).replace(/^ /, "");
      if (field === "event") ev.event = value;
      else if (field === "data") ev.data.push(value);
      else if (field === "id") ev.id = value;
    }
    function pump() {
      return reader.read().then(function (chunk) {
        if (destroyed) {
          reader.cancel();
          return false;
        }
        if (chunk.done) return true;
        buf += decoder.decode(chunk.value, { stream: true });
        var lines = buf.split(/\r\n|\r|\n/);
        buf = lines.pop();
        for (var i = 0; i < lines.length; i++) line(lines[i]);
        return pump();
      });
    }
    return pump();
  }

  // --- public API ------------------------------------------------------------

  function checkKey(key) {
    var k = String(key || "").trim().toLowerCase();
    if (!KEY_RE.test(k)) throw new TypeError("avatar-edge: not a 32/64-hex identity hash: " + key);
    return k;
  }

  var api = {
    get base() {
      return base;
    },
    get connected() {
      return connected;
    },
    version: AVATAR_EDGE_CLIENT_VERSION,
    subscribe: function (key, callback) {
      var k = checkKey(key);
      if (typeof callback !== "function") throw new TypeError("avatar-edge: subscribe needs a callback");
      (listeners[k] || (listeners[k] = [])).push(callback);
      scheduleScan();
      return function () {
        api.unsubscribe(k, callback);
      };
    },
    unsubscribe: function (key, callback) {
      var k = checkKey(key);
      var l = listeners[k];
      if (!l) return;
      listeners[k] = callback ? l.filter(function (c) { return c !== callback; }) : [];
      if (!listeners[k].length) delete listeners[k];
      scheduleScan();
    },
    url: function (key, o) {
      return buildUrl(checkKey(key), o);
    },
    versionOf: function (key) {
      return versions[checkKey(key)];
    },
    scan: scan,
    refresh: function () {
      scan();
      return Promise.resolve();
    },
    destroy: function () {
      if (destroyed) return;
      destroyed = true;
      sub.gen++;
      clearTimeout(sub.timer);
      clearTimeout(scanTimer);
      closeStream();
      if (motion) {
        if (typeof motion.removeEventListener === "function") motion.removeEventListener("change", onMotion);
        else if (typeof motion.removeListener === "function") motion.removeListener(onMotion);
      }
      if (observer) observer.disconnect();
      listeners = Object.create(null);
      byKey = Object.create(null);
    },
  };

  if (observe && typeof MutationObserver !== "undefined") {
    observer = new MutationObserver(function (muts) {
      for (var i = 0; i < muts.length; i++) {
        var m = muts[i];
        if (m.type === "childList" ? m.addedNodes.length || m.removedNodes.length : m.target.getAttribute(m.attributeName) !== (entries.get(m.target) || {}).applied) {
          scheduleScan();
          return;
        }
      }
    });
    observer.observe(root === doc ? doc.documentElement : root, {
      childList: true,
      subtree: true,
      attributes: true,
      attributeFilter: ["src", "data-avatar-live", "data-avatar-key", "data-avatar-size", "data-avatar-rating"],
    });
  }
  if (doc && doc.readyState === "loading" && observe) {
    doc.addEventListener("DOMContentLoaded", scan);
  } else {
    scan();
  }
  return api;
}
