// EXAMPLE — the conversation dialog of a chat inbox on Herald, with Laravel's own React hooks
// (@laravel/echo-react) and Herald's connector: live messages, "X is typing…" from whispers,
// the members from presence, and a connection badge.
import { useCallback, useEffect, useRef, useState } from 'react';
import { createRoot } from 'react-dom/client';
import { configureEcho, echo, useEcho, useEchoPresence, useConnectionStatus } from '@laravel/echo-react';
import { HeraldConnector } from '@herald-rt/echo/connector';

const { herald, user, conversation } = window.INBOX;

// The only Herald-specific lines: the broadcaster and its host. (A Reverb app had
// broadcaster: 'reverb' and key/wsHost/wsPort here.)
configureEcho({
  broadcaster: HeraldConnector,
  host: herald,
  authEndpoint: '/broadcasting/auth',
  auth: { headers: { 'X-User': JSON.stringify(user) } }, // the example's stand-in for a session cookie
});

const TYPING_EVERY = 1500;  // ms between two "typing" whispers while the user types
const TYPING_EXPIRES = 3000; // ms after which a silent typer is no longer shown

// post sends a request to the backend with the socket id, so ->toOthers() leaves this tab out
// (what Echo's axios interceptor does in a Laravel app).
async function post(path, body) {
  const r = await fetch(path, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', 'X-User': JSON.stringify(user), 'X-Socket-Id': echo().socketId() ?? '' },
    body: JSON.stringify(body),
  });
  if (!r.ok) throw new Error('HTTP ' + r.status);
  return r.json();
}

// useConversation is the conversation's live state: its messages, who is typing, who is
// here, its session status, and the two things a user does: send and type.
function useConversation(id) {
  const [messages, setMessages] = useState([]);
  const [typing, setTyping] = useState({}); // name -> expiry timer
  const [members, setMembers] = useState([]);
  const [session, setSession] = useState('open');
  const lastWhisper = useRef(0);

  const stopTyping = useCallback(name => setTyping(t => {
    if (!t[name]) return t;
    clearTimeout(t[name]);
    const { [name]: _, ...rest } = t;
    return rest;
  }), []);

  const add = useCallback(m => setMessages(list => list.some(x => x.id === m.id) ? list : [...list, m]), []);
  useEcho(`conversation.${id}`, 'MessageSent', e => {
    add(e.message);
    stopTyping(e.message.user.name);
  }, [add, stopTyping]);

  const room = useEchoPresence(`conversation.${id}`, 'SessionUpdated', e => setSession(`${e.status} (by ${e.by})`));
  useEffect(() => {
    const ch = room.channel();
    if (!ch) return;
    ch.here(list => setMembers(list))
      .joining(u => setMembers(list => [...list.filter(x => x.name !== u.name), u]))
      .leaving(u => { setMembers(list => list.filter(x => x.name !== u.name)); stopTyping(u.name); })
      .listenForWhisper('typing', e => setTyping(t => {
        clearTimeout(t[e.name]);
        return { ...t, [e.name]: setTimeout(() => stopTyping(e.name), TYPING_EXPIRES) };
      }));
  }, [room, stopTyping]);

  const send = useCallback(async text => add((await post(`/conversations/${id}/messages`, { text })).message), [id, add]);
  const type = useCallback(() => {
    if (Date.now() - lastWhisper.current < TYPING_EVERY) return; // debounced
    lastWhisper.current = Date.now();
    room.channel()?.whisper('typing', { name: user.name });
  }, [room]);
  const takeOver = useCallback(() => post(`/conversations/${id}/session`, { status: 'assigned' }), [id]);
  return { messages, typing: Object.keys(typing), members, session, send, type, takeOver };
}

function Badge() {
  const status = useConnectionStatus();
  return <span className={'badge ' + status} id="badge">{status}</span>;
}

function Conversation({ id }) {
  const c = useConversation(id);
  const [draft, setDraft] = useState('');
  const list = useRef(null);
  useEffect(() => { list.current?.scrollTo(0, list.current.scrollHeight); }, [c.messages]);
  const submit = e => {
    e.preventDefault();
    if (!draft.trim()) return;
    c.send(draft.trim());
    setDraft('');
  };
  return (
    <main>
      <header>
        <h1>Conversation #{id} — {c.session}</h1>
        {user.role === 'agent' && <button onClick={c.takeOver}>Take over</button>}
        <Badge />
      </header>
      <div className="members" id="members">Here: {c.members.map(m => m.name).sort().join(', ')}</div>
      <ol id="messages" ref={list}>
        {c.messages.map(m => <li key={m.id}><b>{m.user.name}</b>{m.text}</li>)}
      </ol>
      <div className="typing" id="typing">{c.typing.length > 0 && `${c.typing.join(', ')} ${c.typing.length > 1 ? 'are' : 'is'} typing…`}</div>
      <form onSubmit={submit}>
        <input id="composer" value={draft} placeholder="Write a message" autoComplete="off"
          onChange={e => { setDraft(e.target.value); c.type(); }} />
        <button id="send">Send</button>
      </form>
    </main>
  );
}

createRoot(document.getElementById('root')).render(<Conversation id={conversation} />);
