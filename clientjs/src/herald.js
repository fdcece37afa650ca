// Herald client: the Laravel Echo API over one EventSource per client (or an HTTP long-poll),
// with subscriptions added and removed by calls on the socket (docs/protocol.md, "Sockets").

const NOTICES = ['message', 'herald:connected', 'herald:subscription_succeeded', 'herald:subscription_error',
  'herald:member_added', 'herald:member_removed', 'herald:resync', 'herald:error', 'herald:ping'];
const NOTIFICATION = '.Illuminate\\Notifications\\Events\\BroadcastNotificationCreated';
const GUARDED = /^(private|presence)-/;

/** A channel: Echo's channel API (public, private and presence alike). */
export class HeraldChannel {
  constructor(client, name) {
    this.client = client;
    this.name = name;
    this.options = client.options;
    this.cbs = {};      // event name -> [callback]
    this.all = [];      // listenToAll callbacks
    this.members = {};  // presence: user_id -> user_info
    this.cursor = undefined; // the last event's id: where a new socket resumes
    this.notificationCreatedEvent = NOTIFICATION;
  }

  // Echo's EventFormatter: ".Name" or "\Name" is taken as is, else namespaced with dots as "\".
  format(e) {
    if (e[0] === '.' || e[0] === '\\') return e.slice(1);
    const ns = this.options.namespace;
    return (ns ? ns + '.' + e : e).replace(/\./g, '\\');
  }

  on(event, cb) {
    event = event.replace(/^pusher:/, 'herald:');
    (this.cbs[event] ||= []).push(cb);
    this.client.want(event);
    return this;
  }

  off(event, cb) {
    event = event.replace(/^pusher:/, 'herald:');
    const l = this.cbs[event];
    if (l) this.cbs[event] = cb ? l.filter(f => f !== cb && f.cb !== cb) : [];
    return this;
  }

  // emit calls the event's listeners, then listenToAll's with where the event came from: its
  // channel, its id (none for whispers) and, for presence whispers, the sender's user_id.
  emit(event, data, meta, id) {
    for (const f of this.cbs[event] || []) f(data, meta);
    if (event.startsWith('herald:')) return;
    const ns = String(this.options.namespace ?? '').replace(/\./g, '\\');
    const info = { channel: this.name, id, ...meta };
    for (const f of this.all) f(ns && event.startsWith(ns + '\\') ? event.slice(ns.length + 1) : '.' + event, data, info);
  }

  // wrap keeps the caller's callback reachable for stopListening(event, cb).
  wrap(event, cb, f) { f.cb = cb; return this.on(event, f); }

  // Pusher's names, for user events (herald.user.bind) and code written for pusher-js.
  bind(event, cb) { return this.on(event, cb); }
  unbind(event, cb) { return this.off(event, cb); }
  listen(event, cb) { return this.on(this.format(event), cb); }
  stopListening(event, cb) { return this.off(this.format(event), cb); }
  listenToAll(cb) { this.all.push(cb); return this; }
  stopListeningToAll(cb) { this.all = cb ? this.all.filter(f => f !== cb) : []; return this; }
  subscribed(cb) { return this.wrap('herald:subscription_succeeded', cb, () => cb()); }
  error(cb) { return this.on('herald:subscription_error', cb); }
  /** Called with {channels, reason, cursor} when history no longer covers the channel's cursor. */
  resync(cb) { return this.on('herald:resync', cb); }
  notification(cb) { return this.listen(NOTIFICATION, cb); }
  stopListeningForNotification(cb) { return this.stopListening(NOTIFICATION, cb); }
  listenForWhisper(event, cb) { return this.listen('.client-' + event, cb); }
  stopListeningForWhisper(event, cb) { return this.stopListening('.client-' + event, cb); }
  whisper(event, data) { this.client.whisper(this.name, 'client-' + event, data); return this; }
  here(cb) { return this.wrap('herald:subscription_succeeded', cb, () => cb(Object.values(this.members))); }
  joining(cb) { return this.wrap('herald:member_added', cb, m => cb(m.user_info)); }
  leaving(cb) { return this.wrap('herald:member_removed', cb, m => cb(m.user_info)); }
  subscribe() { this.client.sub(this); }
  unsubscribe() { this.client.leaveChannel(this.name); }
}

/**
 * The client. Options: host (Herald's base URL, default same origin), authEndpoint, auth
 * {headers, params}, csrfToken, bearerToken, token (JWT string or async function), namespace,
 * transport ('sse' | 'poll'), EventSource, fetch, connectTimeout, pollTimeout,
 * reconnectDelay, maxReconnectDelay, maxRetries.
 */
export class Herald {
  constructor(options = {}) {
    this.options = { namespace: 'App.Events', authEndpoint: '/broadcasting/auth', ...options };
    this.channels = {};
    this.pending = {};  // channel name -> its last subscription call (see serial)
    this.state = 'disconnected';
    this.watchers = new Set();
    this.names = new Set(NOTICES);
    this.old = [];      // earlier socket ids, excluded from replays (toOthers)
    this.gen = 0;       // connection generation: anything from an older one is ignored
    this.fails = 0;     // consecutive failed connections (backoff)
    this.streamFails = 0;
    this.poll = options.transport === 'poll';
    this.user = new HeraldChannel(this, ''); // the signed-in user's events (signin)
    this.signWait = [];
    const ax = globalThis.axios;
    if (!options.withoutInterceptors && !options.broadcaster && typeof ax === 'function') {
      ax.interceptors.request.use(c => (this.sid && (c.headers['X-Socket-Id'] = this.sid), c));
    }
    this.connect();
  }

  // ---- the Echo API ----
  channel(name) {
    let ch = this.channels[name];
    if (!ch) {
      ch = this.channels[name] = new HeraldChannel(this, name);
      this.sub(ch);
    }
    return ch;
  }
  private(name) { return this.channel('private-' + name); }
  join(name) { return this.channel('presence-' + name); }
  encryptedPrivate() { throw new Error('Herald does not support encrypted private channels'); }
  listen(name, event, cb) { return this.channel(name).listen(event, cb); }
  leave(name) {
    for (const p of ['', 'private-', 'private-encrypted-', 'presence-']) this.leaveChannel(p + name);
  }
  leaveChannel(name) {
    const ch = this.channels[name];
    if (!ch) return;
    delete this.channels[name];
    ch.cbs = {};
    ch.all = [];
    if (ch.live && ch.live === this.sid) this.unsub(name);
    ch.live = null;
  }
  leaveAllChannels() { for (const name in this.channels) this.leaveChannel(name); }
  socketId() { return this.sid; }
  /** The connected socket's transport: 'sse' or 'long-poll'; undefined while not connected. */
  transport() { return this.sid ? (this.es ? 'sse' : 'long-poll') : undefined; }
  connectionStatus() { return this.state; }
  onConnectionChange(cb) { this.watchers.add(cb); return () => this.watchers.delete(cb); }

  /**
   * Signs in as the app's user (Pusher user authentication: userAuthentication.endpoint, by
   * default /broadcasting/user-auth, or the token's sub), so the events the server sends with
   * sendToUser reach user.bind(). Kept across reconnects; resolves once signed in.
   */
  signin() {
    this.signing = true;
    return new Promise((ok, fail) => {
      this.signWait.push([ok, fail]);
      if (this.sid) this.sign();
    });
  }

  connect() {
    if (this.state === 'disconnected' || this.state === 'failed') this.open();
  }

  disconnect() {
    this.close();
    this.fails = 0;
    this.set('disconnected');
  }

  // ---- connection ----
  set(state) {
    if (state === this.state) return;
    this.state = state;
    for (const cb of [...this.watchers]) cb(state);
  }

  // close ends the current transport and forgets the socket; channels keep their cursors.
  close() {
    this.gen++;
    clearTimeout(this.timer);
    clearTimeout(this.dog);
    if (this.es) this.es.close();
    if (this.abort) this.abort.abort();
    this.es = this.abort = null;
    if (this.sid) this.old = [...this.old, this.sid].slice(-20);
    this.sid = this.tok = undefined;
    for (const name in this.channels) this.channels[name].live = null;
  }

  async open() {
    const gen = ++this.gen;
    const o = this.options;
    this.set(this.fails ? 'reconnecting' : 'connecting');
    try {
      this.jwt = typeof o.token === 'function' ? await o.token() : o.token;
      if (gen !== this.gen) return;
      const ES = o.EventSource || globalThis.EventSource;
      if (this.poll ||= !ES) return await this.longPoll(gen);
      // format=message: every event arrives unnamed with its name in the data, so listenToAll
      // sees events no listener named in advance.
      const url = this.url('/v1/stream?format=message' + (this.jwt ? '&token=' + encodeURIComponent(this.jwt) : ''));
      const es = this.es = new ES(url, { withCredentials: !!o.withCredentials });
      let opened = false;
      const handle = e => {
        if (this.es !== es) return;
        this.watch();
        const d = JSON.parse(e.data);
        this.frame(e.type === 'message' ? d.event : e.type, d);
      };
      this.handle = handle;
      for (const n of this.names) es.addEventListener(n, handle);
      es.onopen = () => { opened = true; };
      es.onerror = async () => {
        // Never let EventSource reopen by itself: a new socket needs new subscriptions.
        if (this.es !== es) return;
        if (opened || this.sid) return this.drop(!this.sid && opened);
        // Failed before it opened: refused (503 over_capacity …) or unreachable. EventSource
        // hides which, so ask once; a refusal is the server being full, not a buffering proxy,
        // and does not count toward the fallback to long-poll.
        this.close();
        const g = this.gen;
        const wait = await this.refusal(url);
        if (g === this.gen) this.drop(false, wait);
      };
      // No herald:connected in time: a buffering proxy holds the stream.
      this.timer = setTimeout(() => this.drop(true), o.connectTimeout ?? 5000);
    } catch (err) {
      if (gen === this.gen) this.drop();
    }
  }

  // drop ends a failed connection and schedules the next attempt: after retryAfter seconds
  // when the server said when (see pause), else after a full-jitter backoff.
  drop(streamFailed, retryAfter) {
    this.close();
    if (streamFailed && ++this.streamFails >= 2) this.poll = true;
    const o = this.options;
    if (++this.fails > (o.maxRetries ?? Infinity)) return this.set('failed');
    this.set('reconnecting');
    const cap = Math.min(o.maxReconnectDelay ?? 30000, (o.reconnectDelay ?? 1000) * 2 ** (this.fails - 1));
    const gen = this.gen;
    const wait = retryAfter === undefined ? Math.random() * cap : pause(retryAfter);
    this.timer = setTimeout(() => gen === this.gen && this.open(), wait);
  }

  // refusal fetches a stream URL whose EventSource failed before opening, only to read the
  // status and headers: aborted as soon as they arrive (a node with room again opens a stream
  // for that instant; it notices the close at once). Resolves to the Retry-After of a 503 or
  // 429, else undefined: unreachable, no or a bad header, or no refusal now.
  async refusal(url) {
    const o = this.options;
    const ctl = this.abort = new AbortController(); // disconnect() aborts it too
    const t = setTimeout(() => ctl.abort(), o.connectTimeout ?? 5000);
    try {
      const r = await (o.fetch || fetch)(url, { headers: { Accept: 'text/event-stream' },
        credentials: o.withCredentials ? 'include' : 'same-origin', signal: ctl.signal });
      return retryOf(r);
    } catch {
      return undefined;
    } finally {
      clearTimeout(t);
      ctl.abort();
    }
  }

  async longPoll(gen) {
    this.abort = new AbortController();
    const o = this.options;
    const since = Date.now();
    try {
      this.hello(await this.call('POST', '/v1/sockets'));
      let seq = '';
      while (gen === this.gen) {
        // A fallback, not a verdict: try the stream again now and then (the proxy may be gone).
        if (o.transport !== 'poll' && (o.EventSource || globalThis.EventSource) && Date.now() - since > (o.streamRetry ?? 60000)) {
          this.poll = false;
          this.streamFails = 0;
          this.close();
          return this.open();
        }
        const r = await this.call('GET', '/v1/poll?socket_id=' + this.sid + '&timeout=' + (this.options.pollTimeout ?? 25) + seq);
        if (gen !== this.gen) return;
        seq = '&seq=' + r.seq;
        for (const x of r.resync || []) this.frame('herald:resync', x);
        for (const x of r.events) this.frame(x.event, x);
      }
    } catch (err) {
      // A 503 over_capacity on POST /v1/sockets, or any refusal, with Retry-After: wait that.
      if (gen === this.gen) this.drop(false, err.retryAfter);
    }
  }

  // watch restarts the watchdog of a stream: a stream sends something (at least herald:ping)
  // every heartbeat, so a long silence means a dead connection the browser has not noticed.
  watch() {
    clearTimeout(this.dog);
    if (this.beat) this.dog = setTimeout(() => this.drop(), this.beat * 2500);
  }

  hello(s) {
    clearTimeout(this.timer);
    this.beat = this.es ? s.heartbeat : 0;
    this.watch();
    this.sid = s.socket_id;
    this.tok = s.socket_token;
    this.fails = this.streamFails = 0;
    this.set('connected');
    for (const name in this.channels) this.sub(this.channels[name]);
    if (this.signing) this.sign();
  }

  // want makes sure the stream hands us frames named event (EventSource has no wildcard).
  want(event) {
    if (this.names.has(event)) return;
    this.names.add(event);
    if (this.es) this.es.addEventListener(event, this.handle);
  }

  // frame handles one frame: an event envelope, a notice, a whisper or a control frame.
  frame(type, d) {
    if (type === 'herald:connected') return this.hello(d);
    if (type === 'herald:error') return this.drop(); // token_expired: reconnect with a fresh token
    if (type === 'herald:resync') {
      for (const name of d.channels) {
        const ch = this.channels[name];
        if (!ch) continue;
        ch.cursor = d.channel_cursor;
        ch.emit(ch.cbs['herald:resync']?.length ? 'herald:resync' : 'herald:subscription_error',
          { type: 'Resync', error: d.reason, status: 0, ...d });
      }
      return;
    }
    const ch = this.channels[d.channel] || (d.channel === this.user.name ? this.user : null);
    if (!ch) return;
    const data = d.data;
    if (d.id) {
      if (older(d.id, ch.cursor)) return;
      ch.cursor = d.id;
    } else if (type === 'herald:subscription_succeeded') {
      ch.members = data?.presence?.hash || {};
    } else if (type === 'herald:subscription_error') {
      return ch.emit(type, { type: 'AuthError', error: data?.message, status: /^(token|socket_token|invalid_sig|signature)/.test(data?.code) ? 401 : 403, code: data?.code });
    } else if (type === 'herald:member_added') {
      ch.members[data.user_id] = data.user_info;
    } else if (type === 'herald:member_removed') {
      data.user_info = ch.members[data.user_id];
      delete ch.members[data.user_id];
    }
    ch.emit(d.event || type, data, d.user_id !== undefined ? { user_id: d.user_id } : undefined, d.id);
  }

  // ---- calls ----
  // serial runs the subscription calls of one channel name one after another: the DELETE of a
  // left subscription and the POST of the one that replaces it (a remounted component) could
  // otherwise reach the server swapped, leaving the channel unsubscribed.
  serial(name, fn) {
    const prev = this.pending[name];
    const p = prev ? prev.then(fn) : fn();
    const done = this.pending[name] = p.catch(() => {});
    done.then(() => this.pending[name] === done && delete this.pending[name]);
    return p;
  }
  unsub(name) {
    const path = this.path(name); // this socket's, even if the call waits past a reconnect
    this.serial(name, () => this.call('DELETE', path)).catch(() => {});
  }

  url(path) { return (this.options.host || '').replace(/\/$/, '') + path; }
  path(name) { return '/v1/sockets/' + this.sid + '/subscriptions/' + encodeURIComponent(name); }

  async call(method, path, body) {
    const h = { Accept: 'application/json' };
    if (this.tok) h['X-Herald-Socket-Token'] = this.tok;
    if (this.jwt) h.Authorization = 'Bearer ' + this.jwt;
    if (body) h['Content-Type'] = 'application/json';
    const r = await (this.options.fetch || fetch)(this.url(path), {
      method, headers: h, body: body && JSON.stringify(body), signal: this.abort?.signal,
    });
    const j = await r.json().catch(() => ({}));
    if (!r.ok) throw Object.assign(new Error(j.error?.message || 'HTTP ' + r.status), { status: r.status, code: j.error?.code, retryAfter: retryOf(r) });
    return j;
  }

  // auth asks the app's own authEndpoint to sign the channel for this socket, like Echo.
  async auth(name, sid) {
    const o = this.options;
    // Echo's custom authorizer: authorize(socketId, callback(failed, data)).
    if (o.authorizer) {
      return new Promise((resolve, reject) => o.authorizer({ name }, o).authorize(sid,
        (failed, data) => failed ? reject(Object.assign(new Error('authorization failed'), { status: data?.status ?? 403 })) : resolve(data)));
    }
    return this.signed(o.authEndpoint, o.auth, { socket_id: sid, channel_name: name });
  }

  // signed posts a form to one of the app's signing endpoints, as Echo and pusher-js do.
  async signed(endpoint, a = {}, form) {
    const o = this.options;
    const csrf = globalThis.Laravel?.csrfToken || o.csrfToken || globalThis.document?.querySelector?.('meta[name="csrf-token"]')?.getAttribute('content');
    const h = { 'Content-Type': 'application/x-www-form-urlencoded', Accept: 'application/json' };
    if (csrf) h['X-CSRF-TOKEN'] = csrf;
    if (o.bearerToken) h.Authorization = 'Bearer ' + o.bearerToken;
    const r = await (o.fetch || fetch)(endpoint, {
      method: 'POST', credentials: 'same-origin', headers: { ...h, ...a.headers },
      body: new URLSearchParams({ ...a.params, ...form }),
    });
    if (!r.ok) throw Object.assign(new Error('authorization failed: HTTP ' + r.status), { status: r.status });
    return r.json();
  }

  // sign signs the current socket in as the user (see signin), from the user channel's cursor.
  async sign() {
    const sid = this.sid;
    const o = this.options;
    const u = o.userAuthentication || {};
    try {
      const body = o.token ? {} : await this.signed(u.endpoint || '/broadcasting/user-auth',
        { ...o.auth, ...u, headers: { ...o.auth?.headers, ...u.headers } }, { socket_id: sid });
      if (this.user.cursor) body.cursor = this.user.cursor;
      if (sid !== this.sid) return;
      const r = await this.call('POST', '/v1/sockets/' + sid + '/signin', body);
      this.user.name = r.channel;
      for (const [ok] of this.signWait.splice(0)) ok(r);
    } catch (err) {
      if (sid === this.sid) for (const [, fail] of this.signWait.splice(0)) fail(err);
    }
  }

  // sub subscribes a channel on the current socket, from its cursor.
  async sub(ch) {
    const sid = this.sid;
    if (!sid || ch.live === sid) return;
    ch.live = sid;
    const body = { channel: ch.name };
    if (ch.cursor) body.cursor = ch.cursor;
    if (this.old.length) body.exclude_socket_ids = this.old;
    try {
      if (GUARDED.test(ch.name) && !this.options.token) {
        const a = await this.auth(ch.name, sid);
        body.auth = a.auth;
        if (a.channel_data) body.channel_data = a.channel_data;
      }
      const posted = await this.serial(ch.name, () => sid === this.sid && this.channels[ch.name] === ch &&
        this.call('POST', '/v1/sockets/' + sid + '/subscriptions', body));
      // Left while the call was on its way: undo it.
      if (posted && sid === this.sid && this.channels[ch.name] !== ch) this.unsub(ch.name);
    } catch (err) {
      if (sid !== this.sid) return;
      ch.live = null;
      if (err.code === 'socket_gone') return this.drop();
      // Busy or rate-limited, and told when to come back: try again then (unless left, or
      // already taken care of by a newer socket).
      if (err.retryAfter !== undefined) return void setTimeout(() => this.channels[ch.name] === ch && this.sub(ch), pause(err.retryAfter));
      // A refused subscription also arrives as herald:subscription_error on the socket.
      if (err.status !== 401 && err.status !== 403 || !err.code) ch.emit('herald:subscription_error', { type: 'AuthError', error: err.message, status: err.status });
    }
  }

  whisper(channel, event, data) {
    if (!this.sid) return;
    this.call('POST', '/v1/channels/' + encodeURIComponent(channel) + '/whispers?socket_id=' + this.sid, { event, data })
      .catch(() => {});
  }
}

// older: cursor a (<epoch>-<seq>) is at or before b in the same epoch — already delivered.
function older(a, b) {
  if (!b) return false;
  const [ea, sa] = a.split('-');
  const [eb, sb] = b.split('-');
  return ea === eb && +sa <= +sb;
}

// retryAfter reads a Retry-After header (RFC 9110 §10.2.3) as seconds from now: delay-seconds,
// or an HTTP-date (all three of its forms start with the day's name; asctime's has no zone and
// is GMT). undefined when missing or unreadable (no decimals, no negatives, no other dates).
export function retryAfter(v, now = Date.now()) {
  v = String(v ?? '').trim();
  if (/^\d+$/.test(v)) return +v;
  if (!/^(mon|tue|wed|thu|fri|sat|sun)/i.test(v)) return undefined;
  const t = Date.parse(/ GMT$/i.test(v) ? v : v + ' GMT');
  return isNaN(t) ? undefined : Math.max(0, Math.ceil((t - now) / 1000));
}

// retryOf is the Retry-After of a refusal (503 over capacity or draining, 429), else undefined.
function retryOf(r) {
  return r.status === 503 || r.status === 429 ? retryAfter(r.headers.get('Retry-After')) : undefined;
}

// pause is the wait, in ms, for a Retry-After of s seconds: s, plus a random share of up to
// half of it (and at least up to 1 s, for 0 or a date already past). The server already spreads
// its answers over 2–5 s, but only in whole seconds: everyone refused in one burst and told "3"
// would come back in the same instant. Proportional, so a long drain (say 60 s) spreads wide.
// At most setTimeout's longest (24.8 days), past which it would fire at once.
function pause(s) {
  return Math.min(s * 1000 + Math.random() * Math.max(s * 500, 1000), 2 ** 31 - 1);
}
