// A React hook for avatar-edge live avatars (example; copy it into your app).
//
// React owns `src`, so these images carry NO `data-avatar-live` attribute:
// the client never touches them. The hook asks the client for the identity
// URL and re-renders when the identity changes; the client adds the new
// version (`&v=…`) to the URL, so ratings, defaults and the image format stay
// the server's decision, and the one event stream per tab is shared by every
// hook on the page.
//
//   import { start } from "https://avatars.example.org/v1/client.mjs";
//   export const avatars = start({ base: "https://avatars.example.org", observe: false });
//
//   function Commenter({ hash, name }: { hash: string; name: string }) {
//     const src = useAvatar(avatars, hash, { size: 48, default: "identicon" });
//     return <img src={src} width={48} height={48} alt={name} />;
//   }
import { useEffect, useState } from "react";
// Types: save {base}/v1/client.d.ts next to this file as avatar-edge-client.d.ts.
import type { AvatarClient, UrlOptions } from "./avatar-edge-client";

export function useAvatar(client: AvatarClient, hash: string, options: UrlOptions = {}): string {
  const { size, default: fallback, rating } = options;
  const url = () => client.url(hash, { size, default: fallback, rating });
  const [src, setSrc] = useState(url);
  useEffect(() => {
    setSrc(url());
    // Every change of this identity: the new versioned identity URL.
    return client.subscribe(hash, () => setSrc(url()));
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [client, hash, size, fallback, rating]);
  return src;
}
