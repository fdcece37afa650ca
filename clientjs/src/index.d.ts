// Type declarations for @herald-rt/echo (hand-written; the code is plain ES modules).

export type ConnectionStatus = 'connecting' | 'connected' | 'reconnecting' | 'disconnected' | 'failed';

export interface HeraldOptions {
  /** Herald's base URL, e.g. "https://rt.example.com" (default: same origin). */
  host?: string | null;
  /** The app's Pusher-style authorization endpoint (default "/broadcasting/auth"). */
  authEndpoint?: string;
  auth?: { headers?: Record<string, string>; params?: Record<string, string> };
  /** Pusher user authentication for signin() (default endpoint "/broadcasting/user-auth"; auth.headers are sent too). */
  userAuthentication?: { endpoint?: string; headers?: Record<string, string>; params?: Record<string, string> };
  csrfToken?: string | null;
  bearerToken?: string | null;
  /** Echo's custom authorizer, used instead of authEndpoint: callback(failed, {auth, channel_data?}). */
  authorizer?: (channel: { name: string }, options: HeraldOptions) => {
    authorize(socketId: string, callback: (failed: boolean | Error | null, data?: any) => void): void;
  };
  /** JWT mode: a token, or a function called at every (re)connect and when the token expired. */
  token?: string | (() => string | Promise<string>);
  /** Event namespace (default "App.Events"); false for none. */
  namespace?: string | false;
  /** "poll" forces the long-poll transport; by default EventSource, with automatic fallback. */
  transport?: 'sse' | 'poll';
  /** EventSource constructor to use (Node: the `eventsource` package). */
  EventSource?: new (url: string, init?: { withCredentials?: boolean }) => any;
  withCredentials?: boolean;
  fetch?: typeof fetch;
  /** ms to wait for herald:connected before the stream counts as failed (default 5000). */
  connectTimeout?: number;
  /** After falling back to long-poll, try the stream again after this many ms (default 60000). */
  streamRetry?: number;
  /** Long-poll wait in seconds (default 25). */
  pollTimeout?: number;
  /** Backoff base and cap in ms (defaults 1000 and 30000), full jitter. */
  reconnectDelay?: number;
  maxReconnectDelay?: number;
  /** Consecutive failed connections before the state becomes "failed" (default: never). */
  maxRetries?: number;
  withoutInterceptors?: boolean;
  [key: string]: any;
}

export interface SubscriptionError { type: 'AuthError' | 'Resync'; error: string; status: number; code?: string }
export interface Resync { channels: string[]; reason: string; cursor: string }

export declare class HeraldChannel {
  readonly name: string;
  notificationCreatedEvent: string;
  options: HeraldOptions;
  /** The id of the last event received: where a new socket resumes. */
  cursor: string | undefined;
  /** Presence: user_id -> user_info. */
  members: Record<string, any>;
  listen(event: string, callback: (data: any) => void): this;
  stopListening(event: string, callback?: Function): this;
  /** Every event of the channel (not herald:* notices), with its channel, its id (none for a
   *  whisper) and, for a presence whisper, the sender's user_id. */
  listenToAll(callback: (event: string, data: any, meta: { channel: string; id?: string; user_id?: string }) => void): this;
  stopListeningToAll(callback?: Function): this;
  subscribed(callback: () => void): this;
  error(callback: (status: SubscriptionError) => void): this;
  /** History no longer covers the channel's cursor: reload. Without one, error() is called. */
  resync(callback: (info: Resync) => void): this;
  notification(callback: (notification: any) => void): this;
  stopListeningForNotification(callback: Function): this;
  listenForWhisper(event: string, callback: (data: any, meta?: { user_id: string }) => void): this;
  stopListeningForWhisper(event: string, callback?: Function): this;
  whisper(event: string, data: any): this;
  on(event: string, callback: Function): this;
  /** Pusher's names: the event name as sent, no namespace (user events: herald.user.bind). */
  bind(event: string, callback: (data: any) => void): this;
  unbind(event: string, callback?: Function): this;
  subscribe(): void;
  unsubscribe(): void;
}

export declare class HeraldPresenceChannel extends HeraldChannel {
  here(callback: (users: any[]) => void): this;
  joining(callback: (user: any) => void): this;
  leaving(callback: (user: any) => void): this;
}

/** Standalone mode: Echo's API without laravel-echo. */
export declare class Herald {
  constructor(options?: HeraldOptions);
  options: HeraldOptions;
  channels: Record<string, HeraldChannel>;
  channel(name: string): HeraldChannel;
  private(name: string): HeraldChannel;
  join(name: string): HeraldPresenceChannel;
  /** Always throws: Herald does not support encrypted private channels. */
  encryptedPrivate(name: string): never;
  listen(channel: string, event: string, callback: (data: any) => void): HeraldChannel;
  leave(name: string): void;
  leaveChannel(name: string): void;
  leaveAllChannels(): void;
  socketId(): string | undefined;
  /** Signs in as the app's user (pusher.authenticateUser, or the token's sub); kept across reconnects. */
  signin(): Promise<{ socket_id: string; user_id: string; channel: string }>;
  /** The signed-in user's events, sent by the server with sendToUser: user.bind(event, callback). */
  readonly user: HeraldChannel;
  /** The connected socket's transport; undefined while not connected. */
  transport(): 'sse' | 'long-poll' | undefined;
  connectionStatus(): ConnectionStatus;
  onConnectionChange(callback: (status: ConnectionStatus) => void): () => void;
  connect(): void;
  disconnect(): void;
}

/** Builds the laravel-echo connector on a given Connector class (e.g. window.Echo.Connector). */
export declare function connectorClass(Connector: abstract new (options: any) => any): new (options: any) => any;
