/*! avatar-edge client (classic script): live avatars in the page, no dependencies.
 *
 *   <script src="https://avatars.example.org/v1/client.js" defer></script>
 *   <img src="https://avatars.example.org/avatar/<md5-or-sha256>?s=48&d=identicon" data-avatar-live alt="Ada">
 *
 * Starts by itself: every <img data-avatar-live> whose src is an identity URL
 * of this server (and the older <img data-avatar-key data-avatar-size>
 * markup) follows its identity's changes over one event stream per page.
 * window.AvatarEdge is the client (see /v1/client.d.ts); an `avatar-change`
 * CustomEvent on document carries {key, hash, url, version}.
 * Applications that bundle it or use a framework: import /v1/client.mjs.
 */
(function () {
  "use strict";
  if (window.AvatarEdge && window.AvatarEdge.version) return; // loaded twice
