/*! avatar-edge client: live avatars in the page, no dependencies.
 *
 * Include it from the avatar-edge server (any origin):
 *   <script src="https://avatars.example.org/v1/client.js" defer></script>
 *   <img data-avatar-key="<md5-or-sha256>" data-avatar-size="48" alt="Ada">
 *
 * Every such <img> gets the identity's current content URL (immutable
 * /c/<hash>.webp?s=N, 1x/2x/3x srcset), a neutral placeholder while loading
 * and the server's default (/avatar/<key>?s=N) on error. One event stream per
 * page (/v1/events?keys=...) swaps images when an identity changes.
 * API: AvatarEdge.refresh(key), and an `avatar-change` CustomEvent on
 * document with {key, hash, url, version} in detail.
 */
(function () {
  "use strict";
  if (window.AvatarEdge && window.AvatarEdge.version) return; // loaded twice

  var script = document.currentScript;
  var base = (function () {
    try {
      var src = script && script.src ? script.src : location.href;
      var u = new URL(src, location.href);
      return u.origin + u.pathname.replace(/\/v1\/client(\.[0-9a-f]+)?\.js$/, "");
    } catch (e) {
      return "";
    }
  })();
  var MAX = 2048;
  var KEY_RE = /^([0-9a-f]{32}|[0-9a-f]{64})$/;
  var PLACEHOLDER =
    "data:image/svg+xml," +
    encodeURIComponent(
      '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 64 64">' +
        '<rect width="64" height="64" fill="#e3e5e8"/>' +
        '<circle cx="32" cy="25" r="11" fill="#c4c8ce"/>' +
        '<path d="M12 58c2-12 10-18 20-18s18 6 20 18z" fill="#c4c8ce"/></svg>'
    );

  // key -> {hash, version, url (absolute content URL without query) or null}
  var state = Object.create(null);
  var pending = Object.create(null); // key -> in-flight info fetch
  var epochs = Object.create(null); // key -> number of changes applied
  // Keys read after a stream was connected: later changes reach us as events.
  var confirmed = Object.create(null);
  var lastEventId = null;
  var source = null;
  var sourceKeys = "";
  var streamOpen = false;
  var retryMs = 1000;
  var resubTimer = null;

  function keyOf(img) {
    var k = (img.getAttribute("data-avatar-key") || "").trim().toLowerCase();
    return KEY_RE.test(k) ? k : null;
  }

  function sizeOf(img) {
    var s = parseInt(img.getAttribute("data-avatar-size"), 10);
    if (!(s > 0)) s = 80;
    return Math.min(s, MAX);
  }

  function images(key) {
    var out = [];
    var all = document.querySelectorAll("img[data-avatar-key]");
    for (var i = 0; i < all.length; i++) {
      if (!key || keyOf(all[i]) === key) out.push(all[i]);
    }
    return out;
  }

  function identityUrl(key) {
    return base + "/avatar/" + key;
  }

  function srcset(url, size) {
    var seen = Object.create(null);
    var parts = [];
    for (var x = 1; x <= 3; x++) {
      var s = Math.min(size * x, MAX);
      if (seen[s]) continue;
      seen[s] = true;
      parts.push(url + "?s=" + s + " " + x + "x");
    }
    return parts.join(", ");
  }

  function setImage(img, url) {
    var size = sizeOf(img);
    var src = url + "?s=" + size;
    if (img.getAttribute("data-avatar-src") === src) return;
    img.setAttribute("data-avatar-src", src);
    img.crossOrigin = "anonymous";
    img.srcset = srcset(url, size);
    img.src = src;
  }

  function onError(ev) {
    var img = ev.target;
    var key = keyOf(img);
    if (!key || !img.hasAttribute("data-avatar-src")) return;
    var fallback = identityUrl(key);
    if (img.getAttribute("data-avatar-src").indexOf(fallback + "?") === 0) {
      // The default failed too: keep a neutral placeholder, never a broken icon.
      img.removeAttribute("srcset");
      img.src = PLACEHOLDER;
      return;
    }
    setImage(img, fallback);
  }

  function prepare(img) {
    if (img.__avatarEdge) return;
    img.__avatarEdge = true;
    img.addEventListener("error", onError);
    if (!img.getAttribute("src")) img.src = PLACEHOLDER;
  }

  function render(key) {
    var st = state[key];
    if (!st) return;
    var url = st.url || identityUrl(key);
    var list = images(key);
    for (var i = 0; i < list.length; i++) {
      prepare(list[i]);
      setImage(list[i], url);
    }
  }

  // Apply what the server says about `key`; older versions never win.
  function apply(key, info, announce) {
    var prev = state[key];
    if (prev && info.version < prev.version) return;
    if (prev && info.version === prev.version && info.hash === prev.hash) return;
    state[key] = info;
    epochs[key] = (epochs[key] || 0) + 1;
    render(key);
    if (prev && announce !== false) {
      document.dispatchEvent(
        new CustomEvent("avatar-change", {
          detail: { key: key, hash: info.hash, url: info.url, version: info.version },
        })
      );
    }
  }

  function contentUrl(hash) {
    return hash ? base + "/c/" + hash + ".webp" : null;
  }

  // Read the identity's current avatar. With `fresh`, a read already in
  // flight is not reused (it may have started before the stream was up).
  function fetchInfo(key, fresh) {
    if (pending[key] && !fresh) return pending[key];
    var before = pending[key] || Promise.resolve();
    var p = before.then(function () {
      var epoch = epochs[key] || 0;
      return fetch(base + "/v1/avatars/" + key, { mode: "cors", credentials: "omit", cache: "no-store" })
        .then(function (r) {
          if (r.status === 404) return { hash: null, version: -1, url: null };
          if (!r.ok) throw new Error("avatar-edge: HTTP " + r.status);
          return r.json().then(function (j) {
            return { hash: j.hash, version: j.version, url: contentUrl(j.hash) };
          });
        })
        .then(
          function (info) {
            if (info.version === -1) {
              // No avatar: a 404 carries no version, so it loses to any
              // event applied while it was in flight.
              if ((epochs[key] || 0) !== epoch) return;
              info.version = state[key] ? state[key].version : 0;
            }
            apply(key, info);
          },
          function () {
            if (!state[key]) apply(key, { hash: null, version: 0, url: null }, false);
          }
        );
    });
    var mine = p.then(function () {
      if (pending[key] === mine) delete pending[key];
    });
    pending[key] = mine;
    return mine;
  }

  function pageKeys() {
    var set = Object.create(null);
    var list = images();
    for (var i = 0; i < list.length; i++) {
      var k = keyOf(list[i]);
      if (k) set[k] = true;
    }
    return Object.keys(set).sort();
  }

  function onAvatarEvent(ev) {
    if (ev.lastEventId) lastEventId = ev.lastEventId;
    var d;
    try {
      d = JSON.parse(ev.data);
    } catch (e) {
      return;
    }
    var info = { hash: d.hash || null, version: d.version || 0, url: d.hash ? contentUrl(d.hash) : null };
    var keys = (d.aliases || []).concat(d.key ? [d.key] : []);
    var done = Object.create(null);
    for (var i = 0; i < keys.length; i++) {
      var k = String(keys[i]).toLowerCase();
      if (done[k] || !(k in state || images(k).length)) continue;
      done[k] = true;
      apply(k, info);
    }
  }

  // Open a stream for the current key set. The previous stream stays open
  // until the new one is connected, so no change falls between the two.
  function subscribe() {
    resubTimer = null;
    var keys = pageKeys();
    var joined = keys.join(",");
    if (source && joined === sourceKeys && source.readyState !== 2) return;
    if (!keys.length || typeof EventSource === "undefined") {
      keys.forEach(fetchInfo);
      return;
    }
    var url = base + "/v1/events?keys=" + joined;
    if (lastEventId) url += "&last_event_id=" + encodeURIComponent(lastEventId);
    var old = source;
    var es = new EventSource(url);
    source = es;
    sourceKeys = joined;
    es.addEventListener("avatar", onAvatarEvent);
    es.addEventListener("open", function () {
      if (source !== es) return;
      streamOpen = true;
      retryMs = 1000;
      if (old) {
        old.close();
        old = null;
      }
      // Subscribed now: what we read from here on cannot miss a change.
      keys.forEach(function (k) {
        if (confirmed[k]) return;
        fetchInfo(k, true).then(function () {
          confirmed[k] = true;
        });
      });
    });
    es.addEventListener("error", function () {
      if (source !== es) return;
      streamOpen = false;
      // Without an event id the server cannot replay the gap: read again.
      if (!lastEventId) confirmed = Object.create(null);
      // EventSource retries by itself (sending Last-Event-ID) unless the
      // server answered with an error; then reconnect by hand, resuming.
      if (es.readyState === 2) {
        var wait = retryMs;
        retryMs = Math.min(retryMs * 2, 30000);
        setTimeout(function () {
          if (source === es) {
            sourceKeys = "";
            subscribe();
          }
        }, wait);
      }
    });
    // Show something fast even before the stream is up.
    keys.forEach(function (k) {
      if (!state[k]) fetchInfo(k);
    });
  }

  function scan() {
    var list = images();
    for (var i = 0; i < list.length; i++) {
      var k = keyOf(list[i]);
      prepare(list[i]);
      if (k && state[k]) render(k);
    }
    if (!resubTimer) resubTimer = setTimeout(subscribe, 30);
  }

  function refresh(key) {
    if (!key) {
      return Promise.all(pageKeys().map(refresh));
    }
    key = String(key).trim().toLowerCase();
    return fetchInfo(key, true).then(function () {
      render(key);
    });
  }

  window.AvatarEdge = {
    version: 1,
    base: base,
    refresh: refresh,
    scan: scan,
    get connected() {
      return streamOpen;
    },
  };

  function start() {
    scan();
    if (typeof MutationObserver !== "undefined") {
      new MutationObserver(function (muts) {
        for (var i = 0; i < muts.length; i++) {
          var m = muts[i];
          if (m.type === "attributes" || m.addedNodes.length) {
            scan();
            return;
          }
        }
      }).observe(document.documentElement, {
        childList: true,
        subtree: true,
        attributes: true,
        attributeFilter: ["data-avatar-key", "data-avatar-size"],
      });
    }
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
