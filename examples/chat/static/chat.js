// The chat page: one WebSocket to /ws/<room>?name=<name>, through the reference client
// (wsapp-client.js), which reconnects with backoff and recovers what the page missed.
// User text only ever goes into the page through textContent, never as HTML.
import { WsappClient } from "./wsapp-client.js";

const MIN_DELAY = 500; // ms: the first reconnect waits up to this long
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

// The current membership; a client of an older one is closed, so switching rooms
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
  url.searchParams.set("name", name);
  return url;
}

function join(name, room) {
  leave();
  messages.replaceChildren();
  // A shareable address: reloading it rejoins the same room under the same name.
  history.replaceState(null, "", `?${new URLSearchParams({ name, room })}`);
  const current = { name, room, client: null };
  session = current;
  // The reference client reconnects by itself, rejoining the room since the last message
  // received: the room's messages arrive once each, in order, across reconnects.
  current.client = new WsappClient(socketUrl(name, room), {
    minDelay: MIN_DELAY,
    maxDelay: MAX_DELAY,
    onBroadcast: (group, data) => show(JSON.parse(data), current),
    onMessage: (frame) => show(JSON.parse(frame), current),
    onGap: () => show({ type: "gap" }, current),
    onStatus: (state, detail) => {
      if (state === "open") {
        setStatus("connected", `In room ${room} as ${name}`);
        textInput.focus();
      } else if (state === "waiting") {
        setPresence(null); // until the server counts again
        const seconds = Math.max(1, Math.round(detail.wait / 1000));
        setStatus("reconnecting", `Disconnected; trying again in ${seconds} s…`);
      } else {
        setStatus("connecting", `Connecting to ${room}…`);
      }
    },
  });
}

function leave() {
  if (session === null) return;
  setPresence(null);
  const old = session;
  session = null;
  old.client.close(1000, "left the room");
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function show(event, current) {
  if (session !== current) return;
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
  } else if (event.type === "gap") {
    item.append(element("span", "notice", "Some messages were missed: the server no longer has them"));
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
  if (!text.trim() || session === null) return;
  if (session.client.send(JSON.stringify({ type: "message", text }))) textInput.value = "";
});

// Prefill from the address (?name=…&room=…); join at once when both are there.
const params = new URLSearchParams(location.search);
nameInput.value = params.get("name") ?? "";
roomInput.value = params.get("room") ?? roomInput.value;
if (nameInput.value && roomInput.value && joinForm.checkValidity()) {
  join(nameInput.value.trim(), roomInput.value.trim());
}
