// The reference browser client of aiohttp-wsapp's history (docs: howto/recovery).
// Copy this file as it is: no build step, no dependency.
//
// It keeps one WebSocket open: when the socket closes, it reconnects after a random delay
// (exponential backoff with full jitter), with the last position of each group it has heard
// of in the query string ("since.<group>=<position>"), so that the server can join each
// group again with since= that position and replay what the page missed. It reads the
// default envelope (text: {"group", "position", "data"}; binary: that JSON header without
// "data", a newline, the bytes), checks that each group's positions follow one another, and
// tells the page when they do not: a gap the history could not cover, for which the page
// reloads its state.
//
//   import { WsappClient } from "./wsapp-client.js";
//   const client = new WsappClient(new URL("/ws/lobby", location.href), {
//     onBroadcast(group, data, position) { ... },  // a broadcast to a group, once, in order
//     onMessage(data) { ... },                     // any other frame, as it came
//     onGap(group) { ... },                        // missed broadcasts that cannot come back
//     onStatus(state, detail) { ... },             // "connecting", "open", "waiting"
//   });
//   client.send(JSON.stringify({ ... }));
//   client.close();

// Splits "<epoch>.<offset>" (the epoch has no "."); null for anything else.
export function parsePosition(text) {
  const match = /^([A-Za-z0-9_-]{1,64})\.(0|[1-9][0-9]{0,18})$/.exec(text);
  return match === null ? null : { epoch: match[1], offset: BigInt(match[2]) };
}

// The group, position and data of a default envelope, or null for another frame.
// A text frame that parses as a JSON object with "group" and "position" but no "data" is a
// position notice: the server says where the group is, with nothing to deliver.
export function readEnvelope(frame) {
  let head;
  let data;
  if (typeof frame === "string") {
    if (!frame.startsWith("{")) return null;
    try {
      head = JSON.parse(frame);
    } catch {
      return null;
    }
    if (head === null || typeof head !== "object") return null;
    data = head.data;
  } else {
    const bytes = new Uint8Array(frame);
    const newline = bytes.indexOf(10);
    if (newline < 0) return null;
    try {
      head = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes.subarray(0, newline)));
    } catch {
      return null;
    }
    if (head === null || typeof head !== "object" || "data" in head) return null;
    data = bytes.subarray(newline + 1);
  }
  if (typeof head.group !== "string" || parsePosition(head.position) === null) return null;
  if (data !== undefined && typeof data !== "string" && !(data instanceof Uint8Array)) return null;
  return { group: head.group, position: head.position, data };
}

export class WsappClient {
  // url: a URL (or a function returning one) of the endpoint; positions are added to a copy.
  // options: onBroadcast(group, data, position), onMessage(data), onGap(group, position),
  // onStatus(state, detail); minDelay and maxDelay of the backoff, in ms; protocols.
  constructor(url, options = {}) {
    this.url = url;
    this.options = options;
    this.minDelay = options.minDelay ?? 500;
    this.maxDelay = options.maxDelay ?? 30000;
    this.positions = new Map(); // group -> "<epoch>.<offset>", the last one received
    this.socket = null;
    this.attempt = 0;
    this.timer = null;
    this.closed = false;
    this._connect();
  }

  // Sends a frame if the socket is open; returns whether it did.
  send(data) {
    if (this.socket === null || this.socket.readyState !== WebSocket.OPEN) return false;
    this.socket.send(data);
    return true;
  }

  // Closes for good: no more reconnects.
  close(code = 1000, reason = "") {
    this.closed = true;
    clearTimeout(this.timer);
    if (this.socket !== null) this.socket.close(code, reason);
  }

  // Forget a group's position: the next connection joins it without since.
  forget(group) {
    this.positions.delete(group);
  }

  _emit(name, ...args) {
    const handler = this.options[name];
    if (typeof handler === "function") handler(...args);
  }

  _socketUrl() {
    const url = new URL(typeof this.url === "function" ? this.url() : this.url, location.href);
    if (url.protocol === "http:") url.protocol = "ws:";
    if (url.protocol === "https:") url.protocol = "wss:";
    for (const [group, position] of this.positions) url.searchParams.set(`since.${group}`, position);
    return url;
  }

  _connect() {
    this._emit("onStatus", "connecting", { attempt: this.attempt });
    const socket = new WebSocket(this._socketUrl(), this.options.protocols);
    socket.binaryType = "arraybuffer";
    this.socket = socket;
    socket.addEventListener("open", () => {
      if (this.socket !== socket) return;
      this.attempt = 0;
      this._emit("onStatus", "open", {});
    });
    socket.addEventListener("message", (event) => {
      if (this.socket === socket) this._receive(event.data);
    });
    socket.addEventListener("close", (event) => {
      if (this.socket !== socket || this.closed) return;
      this.socket = null;
      // Full jitter: a random wait up to the backoff, so that the pages of a restarted
      // server do not all come back at the same moment.
      const ceiling = Math.min(this.maxDelay, this.minDelay * 2 ** this.attempt);
      const wait = Math.round(Math.random() * ceiling);
      this.attempt += 1;
      this._emit("onStatus", "waiting", { code: event.code, reason: event.reason, wait });
      this.timer = setTimeout(() => this._connect(), wait);
    });
  }

  _receive(frame) {
    const envelope = readEnvelope(frame);
    if (envelope === null) {
      this._emit("onMessage", frame);
      return;
    }
    const { group, position, data } = envelope;
    if (!this._advance(group, position, data !== undefined)) return;
    if (data !== undefined) this._emit("onBroadcast", group, data, position);
  }

  // Moves a group's position; false for a broadcast received already (or older).
  _advance(group, text, isBroadcast) {
    const last = this.positions.has(group) ? parsePosition(this.positions.get(group)) : null;
    const next = parsePosition(text);
    if (last !== null && last.epoch === next.epoch) {
      if (next.offset <= last.offset) return false;
      const expected = isBroadcast ? last.offset + 1n : last.offset;
      if (next.offset !== expected) this._emit("onGap", group, text);
    } else if (last !== null) {
      this._emit("onGap", group, text);
    }
    this.positions.set(group, text);
    return true;
  }
}
