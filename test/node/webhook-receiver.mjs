// A webhook endpoint for test/webhooks_test.go: every request Herald sends is checked with
// the real `pusher` npm package's webhook() validator, as an application's endpoint would.
// Usage:
//
//   node webhook-receiver.mjs '{"appId","key","secret"}'
//
// It listens on a free loopback port and prints one JSON line per event:
//
//   {"listening":<port>}
//   {"valid":true|false,"time_ms":…,"events":[…],"status":<the answer>}   per request
//
// and reads commands on stdin, one per line: "fail <n>" answers the next n requests with 500
// (without reading their events as delivered), "ok" answers 200 again.
import http from "node:http";
import readline from "node:readline";
import Pusher from "pusher";

const cfg = JSON.parse(process.argv[2] ?? "null");
if (!cfg || !cfg.appId || !cfg.key || !cfg.secret) {
  console.error("usage: node webhook-receiver.mjs '{\"appId\",\"key\",\"secret\"}'");
  process.exit(2);
}
const pusher = new Pusher({ appId: cfg.appId, key: cfg.key, secret: cfg.secret });
let failing = 0;

readline.createInterface({ input: process.stdin }).on("line", line => {
  const [cmd, n] = line.trim().split(" ");
  if (cmd === "fail") failing = Number(n);
  if (cmd === "ok") failing = 0;
});
process.stdin.on("end", () => process.exit(0)); // the test ended

const server = http.createServer((req, res) => {
  let body = "";
  req.setEncoding("utf8");
  req.on("data", c => { body += c; });
  req.on("end", () => {
    const status = failing > 0 ? 500 : 200;
    if (failing > 0) failing--;
    const hook = pusher.webhook({ headers: req.headers, rawBody: body });
    const valid = hook.isValid();
    const out = { valid, status, path: req.url };
    if (valid) {
      out.time_ms = hook.getTime().getTime();
      out.events = hook.getEvents();
    }
    console.log(JSON.stringify(out));
    res.writeHead(status, { "Content-Type": "text/plain" });
    res.end(status === 200 ? "ok" : "try again");
  });
});
server.listen(0, "127.0.0.1", () => console.log(JSON.stringify({ listening: server.address().port })));
