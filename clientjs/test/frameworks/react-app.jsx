// The page of hooks.test.js: every hook of @laravel/echo-react on the Herald connector. What each
// hook delivers is recorded in window.seen for the test and rendered for the screenshot.
import { useEffect, useState } from 'react';
import { createRoot } from 'react-dom/client';
import {
  configureEcho, echo, useEcho, useEchoPresence, useEchoPublic, useEchoNotification, useEchoModel, useConnectionStatus, useSocketId,
} from '@laravel/echo-react';
import { HeraldConnector } from '../../src/connector.js';

const params = new URLSearchParams(location.search);
const me = { id: params.get('id'), name: params.get('name') };
configureEcho({
  broadcaster: HeraldConnector,
  host: window.HERALD_HOST,
  authEndpoint: '/broadcasting/auth',
  auth: { headers: { 'X-User': JSON.stringify(me) } },
  reconnectDelay: 300,
  maxReconnectDelay: 1000,
});

window.echo = echo; // for the test's diagnostics
const seen = window.seen = { badge: [], messages: [], headlines: [], notifications: [], models: [], sessions: [], here: [], joining: [], leaving: [], typing: [] };

function Conversation({ id }) {
  const [messages, setMessages] = useState([]);
  const [typing, setTyping] = useState(null);
  const [members, setMembers] = useState([]);
  useEcho(`conversation.${id}`, 'MessageSent', e => {
    seen.messages.push(e.text);
    setMessages(m => [...m, e.text]);
  });
  const presence = useEchoPresence(`room.${id}`, 'SessionUpdated', e => seen.sessions.push(e.status));
  useEffect(() => {
    const ch = presence.channel();
    ch.here(users => { seen.here.push(users.map(u => u.name).sort()); setMembers(users); })
      .joining(u => { seen.joining.push(u.name); setMembers(m => [...m, u]); })
      .leaving(u => { seen.leaving.push(u.name); setMembers(m => m.filter(x => x.id !== u.id)); })
      .listenForWhisper('typing', e => { seen.typing.push(e.name); setTyping(e.name); });
    window.whisperTyping = () => ch.whisper('typing', { name: me.name });
    window.leaveRoom = () => presence.leave();
  }, [presence]);
  return (
    <section>
      <ul id="members">{members.map(u => <li key={u.id}>{u.name}</li>)}</ul>
      <ol id="messages">{messages.map((t, i) => <li key={i}>{t}</li>)}</ol>
      {typing && <p id="typing">{typing} is typing…</p>}
    </section>
  );
}

function App() {
  const status = useConnectionStatus();
  const socketId = useSocketId();
  useEffect(() => { seen.badge.push(status); }, [status]);
  useEffect(() => { window.socketId = socketId; }, [socketId]);
  useEchoPublic('news', 'HeadlinePublished', e => seen.headlines.push(e.title));
  useEchoNotification(`App.Models.User.${me.id}`, n => seen.notifications.push(n.type + ': ' + n.text), 'App.Notifications.Mentioned');
  useEchoModel('App.Models.Conversation', 1, ['ConversationUpdated'], e => seen.models.push(e.model.subject));
  return (
    <main>
      <h3>{me.name} <span id="badge">{status}</span></h3>
      <Conversation id="1" />
    </main>
  );
}

createRoot(document.getElementById('root')).render(<App />);
