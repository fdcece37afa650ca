// Herald's debug console (docs/operations.md). The page opens a connection of its own with
// clientjs's bundle (window.Herald) through this node's /v1 routes, which the admin listener
// serves on its own origin: no CORS, and the admin cookie authenticates every call. Everything
// a server or a peer sent is put on the page with textContent, never as HTML.
'use strict';

(() => {
  const $ = id => document.getElementById(id);
  const MAX_ROWS = 1000;      // the log keeps the newest rows
  const MAX_STATES = 50;
  const NODES_EVERY = 5000;   // ms between refreshes of the node list

  const state = {
    client: null,
    token: '',
    transport: 'sse',
    reconnects: 0,
    channels: new Map(), // name -> its <li>
  };

  // ---- small helpers ----

  function clock(d = new Date()) {
    const p = (n, w = 2) => String(n).padStart(w, '0');
    return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}`;
  }

  function el(tag, attrs = {}, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === 'class') e.className = v;
      else if (k === 'text') e.textContent = v;
      else if (k.startsWith('data-')) e.setAttribute(k, v);
      else e[k] = v;
    }
    for (const c of children) e.append(c);
    return e;
  }

  function show(id, text, ok) {
    const p = $(id);
    p.textContent = text;
    p.dataset.ok = ok ? 'true' : 'false';
  }

  const guarded = name => /^(private|presence)-/.test(name);
  const json = v => (v === undefined ? '' : JSON.stringify(v));

  // api calls this origin: the admin cookie goes with it; a JWT only when asked for.
  async function api(method, path, body, withToken) {
    const headers = { Accept: 'application/json' };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    if (withToken && state.token) headers.Authorization = 'Bearer ' + state.token;
    const r = await fetch(path, {
      method, headers, credentials: 'same-origin', cache: 'no-store',
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await r.text();
    let data;
    try { data = JSON.parse(text); } catch { data = undefined; }
    return { status: r.status, ok: r.ok, data, text };
  }

  // problem describes a failed answer: its status and the server's error code and message.
  function problem(r) {
    const e = r.data && r.data.error;
    return e ? `${r.status} ${e.code}: ${e.message}` : `${r.status} ${r.text.slice(0, 200)}`;
  }

  // ---- the log ----

  function addRow(kind, channel, event, id, data, extra) {
    const body = $('log-body');
    const dataText = json(data) + (extra ? '  ' + extra : '');
    const tr = el('tr', { 'data-kind': kind, 'data-channel': channel || '', 'data-event': event || '' },
      el('td', { class: 'time', text: clock() }),
      el('td', { class: 'kind', text: kind }),
      el('td', { text: channel || '' }),
      el('td', { text: event || '' }),
      el('td', { class: 'id', text: id || '' }),
      el('td', { class: 'data', text: dataText }));
    body.prepend(tr);
    while (body.rows.length > MAX_ROWS) body.deleteRow(body.rows.length - 1);
    filterRow(tr, filterText());
    countRows();
  }

  const filterText = () => $('log-filter').value.trim().toLowerCase();

  function filterRow(tr, f) {
    tr.hidden = f !== '' && !tr.textContent.toLowerCase().includes(f);
  }

  function applyFilter() {
    const f = filterText();
    for (const tr of $('log-body').rows) filterRow(tr, f);
    countRows();
  }

  function countRows() {
    const rows = $('log-body').rows;
    let shown = 0;
    for (const tr of rows) if (!tr.hidden) shown++;
    $('log-count').textContent = shown === rows.length ? `${rows.length} rows` : `${shown} of ${rows.length} rows`;
  }

  // ---- the connection ----

  function renderConnection() {
    const h = state.client;
    const s = h ? h.connectionStatus() : 'disconnected';
    $('conn-state').textContent = s;
    $('conn-state').dataset.state = s;
    $('conn-transport').textContent = (h && h.transport()) || '–';
    $('conn-socket').textContent = (h && h.socketId()) || '–';
    $('conn-reconnects').textContent = String(state.reconnects);
  }

  function onState(h, s) {
    if (h !== state.client) return; // a client this page has replaced
    if (s === 'reconnecting') state.reconnects++;
    if (s !== 'connected') {
      for (const li of state.channels.values()) setChannel(li, 'pending');
    }
    const detail = s === 'connected' ? `${h.transport()} · ${h.socketId()}` : '';
    const log = $('state-log');
    log.prepend(el('li', { 'data-state': s }, el('time', { text: clock() }), ' ', el('b', { text: s }), detail ? ' ' + detail : ''));
    while (log.children.length > MAX_STATES) log.lastElementChild.remove();
    renderConnection();
  }

  // connect replaces the client, to change the transport; channels keep their cursors.
  function connect() {
    const cursors = {};
    const old = state.client;
    if (old) {
      for (const [name, ch] of Object.entries(old.channels)) cursors[name] = ch.cursor;
      state.client = null;
      old.disconnect();
    }
    // namespace '': listenToAll hands over every event name as it was published. The token
    // function is asked at every connect, so a new token takes effect on the next one.
    const h = new Herald.Herald({
      token: () => state.token || undefined,
      transport: state.transport,
      namespace: '',
      withoutInterceptors: true,
    });
    state.client = h;
    h.onConnectionChange(s => onState(h, s));
    onState(h, h.connectionStatus()); // the constructor already started connecting
    for (const name of state.channels.keys()) listen(h, name, cursors[name]);
  }

  // reopen starts a new socket on the same client: channels are subscribed again from their
  // cursors, with the current token.
  function reopen() {
    state.client.disconnect();
    state.client.connect();
  }

  // ---- channels ----

  function listen(h, name, cursor) {
    const ch = h.channel(name);
    if (cursor) ch.cursor = cursor;
    const li = state.channels.get(name);
    ch.on('herald:subscription_succeeded', d => {
      const ids = d && d.presence ? d.presence.ids : undefined;
      setChannel(li, 'subscribed', ids ? `${ids.length} member${ids.length === 1 ? '' : 's'}` : '');
      addRow('notice', name, 'herald:subscription_succeeded', '', d);
    });
    ch.on('herald:subscription_error', e => {
      setChannel(li, 'error', e.code || e.error || String(e.status));
      addRow('error', name, 'herald:subscription_error', '', e);
    });
    ch.on('herald:member_added', d => {
      setChannel(li, 'subscribed', `${Object.keys(ch.members).length} members`);
      addRow('notice', name, 'herald:member_added', '', d);
    });
    ch.on('herald:member_removed', d => {
      setChannel(li, 'subscribed', `${Object.keys(ch.members).length} members`);
      addRow('notice', name, 'herald:member_removed', '', d);
    });
    ch.on('herald:resync', d => addRow('notice', name, 'herald:resync', d.cursor, d));
    ch.listenToAll((event, data, meta) => {
      const ev = event.replace(/^\./, '');
      if (meta.id) addRow('event', meta.channel, ev, meta.id, data);
      else addRow('whisper', meta.channel, ev, '', data, meta.user_id !== undefined ? `from ${meta.user_id}` : '');
    });
  }

  function setChannel(li, status, detail = '') {
    li.dataset.status = status;
    li.querySelector('.status').textContent = detail ? `${status} · ${detail}` : status;
  }

  function subscribe(name) {
    name = name.trim();
    if (!name) return show('channel-status', 'name a channel', false);
    if (state.channels.has(name)) return show('channel-status', `already subscribed to ${name}`, false);
    const buttons = el('span', { class: 'buttons' });
    const li = el('li', { 'data-channel': name, 'data-status': 'pending' },
      el('code', { text: name }), ' ', el('span', { class: 'status', text: 'pending' }), buttons);
    if (guarded(name)) {
      buttons.append(el('button', { type: 'button', class: 'whisper', text: 'Whisper typing', onclick: () => whisper(name) }));
    }
    buttons.append(el('button', { type: 'button', text: 'Publish here', onclick: () => { $('pub-channel').value = name; } }));
    buttons.append(el('button', { type: 'button', class: 'leave', text: 'Leave', onclick: () => leave(name) }));
    state.channels.set(name, li);
    $('channel-list').append(li);
    if (!$('pub-channel').value) $('pub-channel').value = name;
    show('channel-status', '', true);
    listen(state.client, name);
  }

  function leave(name) {
    const li = state.channels.get(name);
    if (!li) return;
    state.channels.delete(name);
    li.remove();
    state.client.leaveChannel(name);
    addRow('sent', name, 'unsubscribe', '', undefined);
  }

  // whisper sends a typing client event through the client. The client does not report a
  // refusal (the server answers the call, not the socket); the peers' logs show arrivals.
  function whisper(name) {
    const data = { typing: true, user: $('mint-user').value || 'console', at: clock() };
    state.client.channel(name).whisper('typing', data);
    addRow('sent', name, 'client-typing', '', data);
  }

  // ---- tokens ----

  function claimsOf(tok) {
    try {
      const part = tok.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
      return JSON.parse(atob(part + '='.repeat((4 - part.length % 4) % 4)));
    } catch {
      return undefined;
    }
  }

  function useToken(tok) {
    state.token = tok.trim();
    $('token').value = state.token;
    if (!state.token) {
      show('token-status', 'no token: public channels only, no publishing', true);
    } else {
      const c = claimsOf(state.token);
      if (!c) show('token-status', 'this is not a JWT', false);
      else {
        const exp = c.exp ? new Date(c.exp * 1000).toLocaleTimeString() : 'never';
        show('token-status', `sub ${c.sub ?? '–'} · subscribe ${json(c['herald.subscribe'] || [])} · publish ${json(c['herald.publish'] || [])} · expires ${exp}`, true);
      }
    }
    reopen();
  }

  // mint asks the server (herald serve --dev only) for a token that may subscribe and publish
  // on every channel in use here, and uses it.
  async function mint() {
    const names = new Set(state.channels.keys());
    for (const id of ['sub-channel', 'pub-channel']) {
      const v = $(id).value.trim();
      if (v) names.add(v);
    }
    if (names.size === 0) return show('token-status', 'name a channel to mint a token for', false);
    let r;
    try {
      r = await api('POST', '/admin/dev/token', { channels: [...names], user_id: $('mint-user').value.trim() || 'console' });
    } catch (err) {
      return show('token-status', 'mint: ' + err.message, false);
    }
    if (r.status === 404) {
      $('mint').disabled = true;
      return show('token-status', 'minting tokens needs herald serve --dev: paste a token instead', false);
    }
    if (!r.ok) return show('token-status', 'mint: ' + problem(r), false);
    useToken(r.data.token);
  }

  // ---- publishing ----

  async function publish(test) {
    const channel = $('pub-channel').value.trim();
    let data;
    try {
      data = JSON.parse($('pub-data').value || 'null');
    } catch (err) {
      return show('publish-status', 'data is not JSON: ' + err.message, false);
    }
    let r;
    try {
      r = test
        ? await api('POST', '/v1/test', { channel: channel || undefined, message: data }, true)
        : await api('POST', '/v1/channels/' + encodeURIComponent(channel) + '/events', { event: $('pub-event').value, data }, true);
    } catch (err) {
      return show('publish-status', 'publish: ' + err.message, false);
    }
    if (!r.ok) return show('publish-status', problem(r), false);
    show('publish-status', `${r.status}: ${r.data.channel} ${r.data.id}`, true);
  }

  // ---- the server ----

  async function getJSON(path, pre) {
    try {
      const r = await api('GET', path);
      if (pre) $(pre).textContent = r.data ? JSON.stringify(r.data, null, 2) : problem(r);
      return r;
    } catch (err) {
      if (pre) $(pre).textContent = err.message;
      return undefined;
    }
  }

  async function refreshServer() {
    const [cfg] = await Promise.all([getJSON('/v1/config', 'server-config'), getJSON('/v1/health', 'server-health'), refreshNodes()]);
    if (cfg && cfg.ok) $('server-summary').textContent = `${cfg.data.protocol} · version ${cfg.data.version || '–'} · ${cfg.data.store} store`;
  }

  async function refreshNodes() {
    const r = await getJSON('/admin/nodes');
    const body = $('nodes-body');
    body.replaceChildren();
    if (!r) return;
    if (!r.ok) {
      const hint = r.status === 401 ? ' (the admin cookie is missing: open /console?token=… again)' : '';
      body.append(el('tr', {}, el('td', { colSpan: 7, class: 'error', text: problem(r) + hint })));
      return;
    }
    for (const n of r.data.nodes) {
      const st = n.stats || n;
      const conns = Object.entries(st.connections || {}).map(([k, v]) => `${k} ${v}`).join(', ') || '0';
      body.append(el('tr', { 'data-node': n.id, class: n.self ? 'self' : '' },
        el('td', { text: n.id + (n.self ? ' (this node)' : '') }),
        el('td', { text: n.addr || '' }),
        el('td', { text: n.version || '' }),
        el('td', { text: n.started ? new Date(n.started).toLocaleString() : '' }),
        el('td', { text: conns + (n.stats ? '' : ' (no answer)') }),
        el('td', { text: String(st.sockets ?? '') }),
        el('td', { text: String(st.channels ?? '') })));
    }
  }

  // ---- wiring ----

  function start() {
    if (!window.Herald || !window.Herald.Herald) {
      show('channel-status', 'herald.min.js did not load', false);
      return;
    }
    $('subscribe-form').addEventListener('submit', e => { e.preventDefault(); subscribe($('sub-channel').value); });
    $('publish-form').addEventListener('submit', e => { e.preventDefault(); publish(false); });
    $('pub-test').addEventListener('click', () => publish(true));
    $('use-token').addEventListener('click', () => useToken($('token').value));
    $('mint').addEventListener('click', mint);
    $('reconnect').addEventListener('click', reopen);
    $('transport-choice').addEventListener('change', e => { state.transport = e.target.value; connect(); });
    $('log-filter').addEventListener('input', applyFilter);
    $('log-clear').addEventListener('click', () => { $('log-body').replaceChildren(); countRows(); });
    $('server-refresh').addEventListener('click', refreshServer);
    connect();
    refreshServer();
    setInterval(() => { if (!document.hidden) refreshNodes(); }, NODES_EVERY);
  }

  start();
})();
