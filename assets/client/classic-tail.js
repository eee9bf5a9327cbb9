
  // The server is where this script came from; when bundled (no
  // currentScript), <html data-avatar-base> or the first live image names it.
  var script = document.currentScript;
  var base = document.documentElement.getAttribute("data-avatar-base") || "";
  try {
    if (script && script.src) {
      var u = new URL(script.src, location.href);
      var m = /^(.*)\/v1\/client(\.[0-9a-f]+)?\.js$/.exec(u.origin + u.pathname);
      if (m) base = m[1];
    }
  } catch (e) {}
  window.AvatarEdge = createAvatarClient({ base: base });
})();
