# Varnish in front of avatar-edge: caches avatar responses as the origin's
# headers say, purges by surrogate key (xkey vmod, Debian package
# varnish-modules) when avatar-edge announces a change, and tells clients
# whether they got a cached copy (X-Cache: HIT|MISS).
#
#   varnishd -a 127.0.0.1:6081 -f /path/to/varnish.vcl -s malloc,256m
#   avatar-edge serve --purge-endpoint http://127.0.0.1:6081/
vcl 4.1;

import std;
import xkey;

backend avatar_edge {
    .host = "127.0.0.1";
    .port = "8080";
}

# Who may purge: avatar-edge nodes.
acl purgers {
    "127.0.0.1";
    "::1";
}

sub vcl_recv {
    if (req.method == "PURGE") {
        if (client.ip !~ purgers) {
            return (synth(403, "Forbidden"));
        }
        if (!req.http.xkey-purge) {
            return (synth(400, "xkey-purge header required"));
        }
        set req.http.n-gone = xkey.purge(req.http.xkey-purge);
        return (synth(200, "Purged " + req.http.n-gone + " objects"));
    }
    if (req.method != "GET" && req.method != "HEAD") {
        return (pass);
    }
    # Only avatar URLs are cached; the API, events and metrics pass through.
    if (req.url !~ "^/(c|avatar)(/|\?|$)") {
        return (pass);
    }
    # The origin negotiates AVIF > WebP > JPEG/PNG (src/negotiate.rs):
    # collapse Accept to those classes so Vary: Accept stores at most one
    # object per class and URL, not one per browser version. A type counts
    # when it is listed by name without q=0 (wildcards promise nothing).
    if (req.http.Accept ~ "(?i)(^|,)\s*image/avif\s*(,|$|;(?!\s*q\s*=\s*0(\.0*)?\s*(,|$)))") {
        if (req.http.Accept ~ "(?i)(^|,)\s*image/webp\s*(,|$|;(?!\s*q\s*=\s*0(\.0*)?\s*(,|$)))") {
            set req.http.Accept = "image/avif,image/webp";
        } else {
            set req.http.Accept = "image/avif";
        }
    } elsif (req.http.Accept ~ "(?i)(^|,)\s*image/webp\s*(,|$|;(?!\s*q\s*=\s*0(\.0*)?\s*(,|$)))") {
        set req.http.Accept = "image/webp";
    } else {
        unset req.http.Accept;
    }
    unset req.http.Cookie;
    unset req.http.Authorization;
    return (hash);
}

sub vcl_backend_response {
    if (beresp.http.Surrogate-Control ~ "no-store" || beresp.http.Cache-Control ~ "no-store") {
        # A default served because of a fault: never pinned in the CDN.
        set beresp.uncacheable = true;
        set beresp.ttl = 0s;
        return (deliver);
    }
    # The CDN lifetime (long; purged on change) comes from Surrogate-Control;
    # browsers keep the short Cache-Control lifetime.
    if (beresp.http.Surrogate-Control ~ "max-age=[0-9]+") {
        set beresp.ttl = std.duration(
            regsub(beresp.http.Surrogate-Control, ".*max-age=([0-9]+).*", "\1") + "s", 0s);
    }
    set beresp.grace = 10s;
    unset beresp.http.Surrogate-Control;
    unset beresp.http.Set-Cookie;
    # xkey indexes the object by the space-separated keys in beresp.http.xkey.
}

sub vcl_deliver {
    if (obj.hits > 0) {
        set resp.http.X-Cache = "HIT";
    } else {
        set resp.http.X-Cache = "MISS";
    }
    # Internal to the CDN.
    unset resp.http.xkey;
    unset resp.http.CDN-Cache-Control;
}
