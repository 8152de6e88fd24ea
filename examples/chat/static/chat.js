// The chat page: one WebSocket to /ws/<room>?name=<name>, reconnecting with backoff.
// User text only ever goes into the page through textContent, never as HTML.
"use strict";

const MIN_DELAY = 500; // ms before the first reconnect attempt
const MAX_DELAY = 10000; // backoff stops growing here

const $ = (id) => document.getElementById(id);
const joinForm = $("join");
const sendForm = $("send");
const nameInput = $("name");
const roomInput = $("room");
const textInput = $("text");
const sendButton = $("send-button");
const statusLine = $("status");
const presence = $("presence");
const messages = $("messages");

// The current membership; a socket of an older one is ignored, so switching rooms
// never triggers a reconnect of the room we left.
let session = null;

function setStatus(state, text) {
  statusLine.dataset.state = state;
  statusLine.textContent = text;
  const open = state === "connected";
  textInput.disabled = !open;
  sendButton.disabled = !open;
}

// How many are in the room, in every server process; null hides it (not in a room).
function setPresence(count) {
  presence.hidden = count === null;
  presence.dataset.count = count === null ? "" : String(count);
  presence.textContent =
    count === null ? "" : `${count} ${count === 1 ? "person" : "people"} in the room`;
}

function socketUrl(name, room) {
  const url = new URL(`/ws/${encodeURIComponent(room)}`, location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  url.searchParams.set("name", name);
  return url;
}

function connect(current) {
  setStatus("connecting", `Connecting to ${current.room}…`);
  const socket = new WebSocket(socketUrl(current.name, current.room));
  let opened = false;
  current.socket = socket;
  socket.addEventListener("open", () => {
    if (session !== current) return;
    opened = true;
    current.delay = MIN_DELAY;
    setStatus("connected", `In room ${current.room} as ${current.name}`);
    textInput.focus();
  });
  socket.addEventListener("message", (event) => {
    if (session === current) show(JSON.parse(event.data), current);
  });
  socket.addEventListener("close", () => {
    if (session !== current) return;
    setPresence(null); // until the server counts again
    // Closed before it opened: the server is down, or refused the handshake (a page
    // cannot tell which: browsers hide the HTTP status of a failed WebSocket handshake).
    reconnectLater(current, opened ? "Disconnected" : "Cannot connect");
  });
}

function reconnectLater(current, why) {
  // Jitter spreads the reconnects of many pages after a server restart.
  const wait = Math.round(current.delay * (0.5 + Math.random() / 2));
  current.delay = Math.min(current.delay * 2, MAX_DELAY);
  const seconds = Math.max(1, Math.round(wait / 1000));
  setStatus("reconnecting", `${why}; trying again in ${seconds} s…`);
  current.timer = setTimeout(() => connect(current), wait);
}

function join(name, room) {
  leave();
  session = { name, room, socket: null, timer: null, delay: MIN_DELAY };
  messages.replaceChildren();
  // A shareable address: reloading it rejoins the same room under the same name.
  history.replaceState(null, "", `?${new URLSearchParams({ name, room })}`);
  connect(session);
}

function leave() {
  if (session === null) return;
  setPresence(null);
  const old = session;
  session = null;
  clearTimeout(old.timer);
  if (old.socket !== null) old.socket.close(1000, "left the room");
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function show(event, current) {
  if (event.type === "presence") {
    setPresence(event.count);
    return;
  }
  const item = element("li", event.type);
  item.append(element("time", "time", new Date().toLocaleTimeString([], { timeStyle: "short" })));
  if (event.type === "message") {
    if (event.name === current.name) item.classList.add("mine");
    item.append(element("span", "name", event.name), element("span", "text", event.text));
  } else if (event.type === "join") {
    item.append(element("span", "notice", `${event.name} joined`));
  } else if (event.type === "leave") {
    item.append(element("span", "notice", `${event.name} left`));
  } else if (event.type === "error") {
    item.append(element("span", "notice", event.text));
  } else {
    return; // a newer server's event this page does not know: skip it
  }
  messages.append(item);
  item.scrollIntoView({ block: "end" });
}

joinForm.addEventListener("submit", (event) => {
  event.preventDefault();
  join(nameInput.value.trim(), roomInput.value.trim());
});

sendForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const text = textInput.value;
  if (!text.trim() || session === null || session.socket.readyState !== WebSocket.OPEN) return;
  session.socket.send(JSON.stringify({ type: "message", text }));
  textInput.value = "";
});

// Prefill from the address (?name=…&room=…); join at once when both are there.
const params = new URLSearchParams(location.search);
nameInput.value = params.get("name") ?? "";
roomInput.value = params.get("room") ?? roomInput.value;
if (nameInput.value && roomInput.value && joinForm.checkValidity()) {
  join(nameInput.value.trim(), roomInput.value.trim());
}
