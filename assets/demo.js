// avatar-edge demo page: upload through a signed URL minted by the server's
// demo-only endpoint (the API token never reaches the browser).
(function () {
  "use strict";
  var form = document.getElementById("upload");
  var file = document.getElementById("file");
  var bar = document.getElementById("progress");
  var status = document.getElementById("status");

  function say(text, kind) {
    status.textContent = text;
    status.className = kind || "";
  }

  function errorOf(xhr) {
    try {
      var j = JSON.parse(xhr.responseText);
      if (j && j.message) return j.message;
    } catch (e) {}
    return "HTTP " + xhr.status;
  }

  form.addEventListener("submit", function (ev) {
    ev.preventDefault();
    var f = file.files && file.files[0];
    if (!f) return say("Choose an image first.", "error");
    say("Preparing upload…");
    fetch("/demo/upload-url", { method: "POST" })
      .then(function (r) {
        return r.json().then(function (j) {
          if (!r.ok) throw new Error(j.message || "HTTP " + r.status);
          return j;
        });
      })
      .then(function (signed) {
        var xhr = new XMLHttpRequest();
        xhr.open(signed.method || "PUT", signed.url);
        bar.hidden = false;
        bar.value = 0;
        xhr.upload.onprogress = function (e) {
          if (e.lengthComputable) bar.value = Math.round((e.loaded / e.total) * 100);
        };
        xhr.onload = function () {
          if (xhr.status >= 200 && xhr.status < 300) {
            bar.value = 100;
            say("Avatar updated.", "ok");
          } else {
            say("Upload refused: " + errorOf(xhr), "error");
          }
        };
        xhr.onerror = function () {
          say("Upload failed: the connection was closed (is the file too large?).", "error");
        };
        say("Uploading…");
        xhr.send(f);
      })
      .catch(function (e) {
        say("Could not get an upload URL: " + e.message, "error");
      });
  });
})();
