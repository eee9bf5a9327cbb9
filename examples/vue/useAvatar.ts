// A Vue 3 composable for avatar-edge live avatars (example; copy it into your app).
//
// Vue owns `src`, so these images carry NO `data-avatar-live` attribute: the
// client never touches them. The composable asks the client for the identity
// URL and updates a ref when the identity changes (the client adds `&v=…`);
// every composable on the page shares the client's one event stream.
//
//   import { start } from "https://avatars.example.org/v1/client.mjs";
//   export const avatars = start({ base: "https://avatars.example.org", observe: false });
//
//   <script setup lang="ts">
//   const props = defineProps<{ hash: string; name: string }>();
//   const src = useAvatar(avatars, () => props.hash, { size: 48, default: "identicon" });
//   </script>
//   <template><img :src="src" width="48" height="48" :alt="name"></template>
import { ref, watchEffect, toValue, type MaybeRefOrGetter, type Ref } from "vue";
// Types: save {base}/v1/client.d.ts next to this file as avatar-edge-client.d.ts.
import type { AvatarClient, UrlOptions } from "./avatar-edge-client";

export function useAvatar(
  client: AvatarClient,
  hash: MaybeRefOrGetter<string>,
  options: UrlOptions = {},
): Ref<string> {
  const src = ref("");
  watchEffect((onCleanup) => {
    const key = toValue(hash);
    const update = () => (src.value = client.url(key, options));
    update();
    onCleanup(client.subscribe(key, update));
  });
  return src;
}
