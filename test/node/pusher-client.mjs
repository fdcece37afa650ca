// Drives Herald's Pusher HTTP API with the real `pusher` npm package (pusher-http-node), for
// test/pusher_test.go. Usage:
//
//   node pusher-client.mjs '<json>'
//
// where <json> is {"appId","key","secret","ports":[…],"ops":[…]}. Each op runs in turn and
// prints one JSON line:
//
//   {"op":"trigger","via":0,"channels":"a" | ["a","b"],"event":"E","data":…,"params":{…}}
//   {"op":"triggerBatch","via":0,"batch":[{"channel","name","data","socket_id"?,"info"?},…]}
//   {"op":"get","via":0,"path":"/channels","params":{…}}
//   {"op":"terminateUserConnections","via":0,"userId":"7"}
//     → {"op","ok":true,"status":200,"body":<the answer's JSON>}
//       or {"op","ok":false,"status":<HTTP status>,"body":"<answer text>","error":"…"}
//   {"op":"authorizeChannel","socketId":"1.2","channel":"private-x","presenceData":{…}?}
//   {"op":"authenticateUser","socketId":"1.2","userData":{"id":"7"}}
//     → {"op","ok":true,"result":{"auth","channel_data"?|"user_data"?}}
//
// "via" is the index of the port (the Herald node) the request goes to; "secret" on an op
// signs that op with another secret. The library is used exactly as an application would.
import Pusher from "pusher";

const cfg = JSON.parse(process.argv[2] ?? "null");
if (!cfg || !cfg.appId || !cfg.key || !cfg.secret || !Array.isArray(cfg.ports) || !Array.isArray(cfg.ops)) {
  console.error("usage: node pusher-client.mjs '{\"appId\",\"key\",\"secret\",\"ports\":[…],\"ops\":[…]}'");
  process.exit(2);
}

function client(op) {
  const port = cfg.ports[op.via ?? 0];
  if (port === undefined) throw new Error(`no port for via=${op.via}`);
  return new Pusher({
    appId: cfg.appId,
    key: cfg.key,
    secret: op.secret ?? cfg.secret,
    host: "127.0.0.1",
    port: String(port),
    useTLS: false,
    timeout: 20000,
  });
}

async function answer(promise) {
  try {
    const res = await promise;
    const text = await res.text();
    return { ok: true, status: res.status, body: JSON.parse(text) };
  } catch (err) {
    return { ok: false, status: err.status ?? 0, body: err.body ?? "", error: String(err.message ?? err) };
  }
}

async function run(op) {
  const p = client(op);
  switch (op.op) {
    case "trigger":
      return answer(p.trigger(op.channels, op.event, op.data, op.params));
    case "triggerBatch":
      return answer(p.triggerBatch(op.batch));
    case "get":
      return answer(p.get({ path: op.path, params: op.params }));
    case "terminateUserConnections":
      return answer(p.terminateUserConnections(op.userId));
    case "authorizeChannel":
      return { ok: true, result: p.authorizeChannel(op.socketId, op.channel, op.presenceData) };
    case "authenticateUser":
      return { ok: true, result: p.authenticateUser(op.socketId, op.userData) };
    default:
      throw new Error(`unknown op ${JSON.stringify(op.op)}`);
  }
}

for (const op of cfg.ops) {
  let out;
  try {
    out = await run(op);
  } catch (err) {
    out = { ok: false, status: 0, body: "", error: String(err.message ?? err) };
  }
  process.stdout.write(JSON.stringify({ op: op.op, ...out }) + "\n");
}
