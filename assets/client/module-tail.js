
/** The client version (2: subscriptions and versioned identity URLs). */
export var version = AVATAR_EDGE_CLIENT_VERSION;

/**
 * Start a client for the avatar-edge server at `options.base` (required: an
 * absolute URL, so the module works when bundled). Nothing runs before this.
 * See /v1/client.d.ts for every option.
 */
export function start(options) {
  if (!options || !options.base) {
    throw new TypeError('avatar-edge: start({ base: "https://avatars.example.org" }) needs the server\'s base URL');
  }
  return createAvatarClient(options);
}
