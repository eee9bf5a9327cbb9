// Type declarations of the avatar-edge live client, served at /v1/client.d.ts.
//
//   import { start } from "https://avatars.example.org/v1/client.mjs";
//   const client = start({ base: "https://avatars.example.org" });
//
// The classic script (/v1/client.js) starts the same client by itself and
// exposes it as `window.AvatarEdge`.

/** Gravatar ratings, lowest first: an avatar above the page's rating is never shown. */
export type Rating = "g" | "pg" | "r" | "x";

/** An identity hash: MD5 (32 hex digits) or SHA-256 (64) of the trimmed, lower-cased email. */
export type IdentityHash = string;

/** What a change of one identity looks like (also the `avatar-change` event's `detail`). */
export interface AvatarChange {
  /** The identity hash the page uses (an alias of the changed identity). */
  key: IdentityHash;
  /** BLAKE3 content hash of the new avatar, or null when it has none now. */
  hash: string | null;
  /** The new immutable content URL (`{base}/c/{hash}`), or null. */
  url: string | null;
  /** The identity's version; it only grows. */
  version: number;
}

export interface StartOptions {
  /** The avatar-edge server, e.g. "https://avatars.example.org" (required for the module). */
  base: string;
  /**
   * Manage `<img data-avatar-live>` (and `<img data-avatar-key>`) images under
   * `root` and watch it for new ones (default true). Use `false` when a
   * framework renders the images (see `url` and `subscribe`).
   */
  observe?: boolean;
  /** Where to look for images (default: the document). */
  root?: ParentNode;
  /** The page's rating when no `data-avatar-rating` says otherwise (default: the server's, g). */
  rating?: Rating;
  /** `d=` for URLs the client builds itself (`url`, `data-avatar-key` markup). */
  default?: string;
  /** Where to report refused subscriptions (default: `console`). */
  console?: Pick<Console, "error" | "warn">;
  /**
   * Whose `matchMedia("(prefers-reduced-motion: reduce)")` decides whether
   * animated avatars are asked for as their still frame (`animated=0`);
   * the client follows changes of the preference (default: `window`).
   */
  window?: Pick<Window, "matchMedia">;
}

export interface UrlOptions {
  /** CSS pixels, 1–2048 (default 80). */
  size?: number;
  /** `d=`: a default style, "404", or an allowed URL. */
  default?: string;
  rating?: Rating;
}

export interface AvatarClient {
  /** The server's base URL. */
  readonly base: string;
  /** True while the event stream is connected. */
  readonly connected: boolean;
  /** Client version (2). */
  readonly version: number;
  /**
   * Call `callback` on every change of `key` (the key joins the page's one
   * subscription). Returns a function that unsubscribes. Throws a TypeError
   * for a key that is not a 32/64-hex hash.
   */
  subscribe(key: IdentityHash, callback: (change: AvatarChange) => void): () => void;
  /** Remove `callback` (or every callback) of `key`. */
  unsubscribe(key: IdentityHash, callback?: (change: AvatarChange) => void): void;
  /**
   * The identity URL of `key` at its latest known version
   * (`{base}/avatar/{key}?s=…&d=…&r=…&v=…`): the `src` to render.
   */
  url(key: IdentityHash, options?: UrlOptions): string;
  /** The latest version seen for `key`, if any change was seen. */
  versionOf(key: IdentityHash): number | undefined;
  /** Look for added or changed images now (a MutationObserver does it too). */
  scan(): void;
  /** Same as `scan`, for pages written against client version 1. */
  refresh(key?: IdentityHash): Promise<void>;
  /** Close the event stream, stop watching the page, drop every callback. */
  destroy(): void;
}

/** Start a client. Nothing happens before this is called. */
export function start(options: StartOptions): AvatarClient;

/** The client version (2). */
export const version: number;

declare global {
  interface Window {
    /** The client the classic script (/v1/client.js) started. */
    AvatarEdge?: AvatarClient;
  }
  interface DocumentEventMap {
    "avatar-change": CustomEvent<AvatarChange>;
  }
}
