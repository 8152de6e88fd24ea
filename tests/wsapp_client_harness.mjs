// Runs examples/chat/static/wsapp-client.js in Node.js with a stand-in WebSocket, for
// tests/test_wsapp_client_js.py: node wsapp_client_harness.mjs CLIENT_URL SCENARIO_JSON.
// Each step of the scenario opens, feeds, drops the last socket or fires the next timer; the
// harness prints what the client reported, the URLs it opened and its positions, as JSON.
const sockets = [];
const timers = [];
globalThis.location = { href: "http://example.test/page" };
globalThis.setTimeout = (callback, wait) => {
  timers.push({ callback, wait });
  return timers.length;
};
globalThis.clearTimeout = () => {};
class FakeSocket {
  static OPEN = 1;
  constructor(url) {
    this.url = String(url);
    this.listeners = {};
    this.sent = [];
    this.readyState = 0;
    sockets.push(this);
  }
  addEventListener(name, listener) { (this.listeners[name] ??= []).push(listener); }
  emit(name, event = {}) { for (const listener of this.listeners[name] ?? []) listener(event); }
  open() { this.readyState = 1; this.emit("open"); }
  receive(data) { this.emit("message", { data }); }
  drop(code = 1006) { this.readyState = 3; this.emit("close", { code, reason: "" }); }
  send(data) { this.sent.push(data); }
  close() { this.readyState = 3; }
}
globalThis.WebSocket = FakeSocket;
const { WsappClient, readEnvelope } = await import(process.argv[2]);
const events = [];
const plain = (value) => (value instanceof Uint8Array ? Array.from(value) : value);
const record = (name) => (...args) => events.push([name, ...args.map(plain)]);
const scenario = JSON.parse(process.argv[3]);
const randoms = scenario.randoms ?? [];
Math.random = () => randoms.length ? randoms.shift() : 0.5;
const client = new WsappClient("http://example.test/ws/room", {
  onBroadcast: record("broadcast"), onMessage: record("message"), onGap: record("gap"),
  onStatus: (state, detail) => events.push(["status", state, detail.wait ?? null]),
  minDelay: 100, maxDelay: 1000,
});
for (const step of scenario.steps) {
  const socket = sockets[sockets.length - 1];
  if (step.open) socket.open();
  if (step.text !== undefined) socket.receive(step.text);
  if (step.binary !== undefined) socket.receive(new Uint8Array(step.binary).buffer);
  if (step.drop) socket.drop();
  if (step.timer) timers.shift().callback();
}
console.log(JSON.stringify({
  events: events.filter((e) => e[0] !== "status" || scenario.statuses),
  urls: sockets.map((s) => s.url),
  waits: timers.map((t) => t.wait),
  positions: Object.fromEntries(client.positions),
  parsed: (scenario.parse ?? []).map((f) => readEnvelope(f)),
}));
