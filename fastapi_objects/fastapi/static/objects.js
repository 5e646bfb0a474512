// fastapi_objects browser client: the browser side of the websocket frames.
//
//   const counter = ObjectsClient.connect("/objects/counter/abc/ws");
//   counter.on("changed", (payload) => render(payload.value));
//   await counter.ready;                          // attached: every later broadcast arrives
//   const value = await counter.call("increment", { by: 1 });
//   counter.send("typing", { on: true });        // a custom event for on_message
//   counter.onStatus((status) => ...);            // "connecting" | "open" | "closed"
//   counter.on("error", (error) => ...);          // error frames that answer no call
//
//   room.presence.onSync(() => render(room.presence.list()));  // [{ key, metas }, ...]
//   room.presence.onJoin((key, current, joined) => ...);       // current: undefined if new
//   room.presence.onLeave((key, current, left) => ...);        // current.metas: what remains
//
// `presence` mirrors the object's presence (the server's `conn.track`) from the
// objects:presence_state and objects:presence_diff frames, as Phoenix's JS Presence does: diffs
// wait until the state of the current attach has arrived; after a reconnect the new state is
// compared with the old, so onJoin/onLeave fire only for what changed meanwhile.
//
// "open" means attached: the server's first frame, objects:attached, has arrived, so every
// broadcast committed from then on reaches this client. `ready` resolves (with the connection
// id) at that moment; after a drop it is a new promise for the next attach, and it rejects
// only when the client gives up (a refusal such as 4403, or close()).
//
// What a page may reach is the server's choice: only object types with `public = True`
// (others close 4403, "not public"), only methods marked `@client_callable` (others reject
// with an ObjectsError of type "forbidden"; nothing ran), and only from the app's own origin
// unless the server lists others in `allowed_origins` (others close 4403). Query parameters
// of the URL reach the object as `conn.query` (the client's own word); what the app's
// `authorize` vouches for is `conn.auth`, which the page cannot set.
//
// Reconnects with exponential backoff and jitter. Calls made before the client is attached
// wait for it (up to callTimeout) and are sent once it is; calls in flight when the
// connection drops are rejected, never re-sent, so a call is applied at most once.
//
//   const stream = ObjectsClient.watch("/objects/inspector/api/objects/counter/abc/live");
//   stream.on("*", (payload, frame) => log(frame.event, payload));   // read-only
//
// State sync (classes with `sync_state = True` or `client_view`): `client.state` is the
// client's view of the object's state (null until the first objects:state), kept by the
// server's patches; `client.on("state", (state, change) => render(state))` fires on each
// change (`change`: {rev, patch}, patch null for a whole view). A patch that does not start
// from the rev held (a gap) makes the client ask for the whole view; a reconnect resumes
// from the rev held (one patch to the present, or the whole view). The state is read-only:
// change it by calling methods.
//
// `watch` follows a stream of the same frames sent as Server-Sent Events (the inspector's
// live view): on() and onStatus() as above, "open" once the server listens; it reconnects
// by itself (EventSource).
(function (global) {
  "use strict";

  const ATTACHED = "objects:attached";
  const PRESENCE_STATE = "objects:presence_state";
  const PRESENCE_DIFF = "objects:presence_diff";
  const STATE = "objects:state";
  const STATE_PATCH = "objects:state_patch";
  const STATE_REQUEST = "objects:state_request";

  // RFC 6902, copying only the containers on each operation's path: the new state is a new
  // object, the parts a patch left alone are shared with the old one.
  function applyPatch(doc, patch) {
    const root = { "": doc };
    patch.forEach((op) => {
      const write = (path, fn) => {
        const tokens = path === "" ? [] : path.slice(1).split("/").map(
          (t) => t.replace(/~1/g, "/").replace(/~0/g, "~"));
        let parent = root;
        let key = "";
        tokens.forEach((token) => {
          const child = parent[key];
          if (child === null || typeof child !== "object") throw new Error("no " + path);
          parent[key] = Array.isArray(child) ? child.slice() : Object.assign({}, child);
          parent = parent[key];
          key = Array.isArray(parent) && token !== "-" ? Number(token) : token;
        });
        fn(parent, key);
      };
      const read = (path) => {
        let value = root[""];
        if (path === "") return value;
        path.slice(1).split("/").forEach((t) => {
          value = value[t.replace(/~1/g, "/").replace(/~0/g, "~")];
        });
        return value;
      };
      const put = (value) => (parent, key) => {
        if (Array.isArray(parent)) parent.splice(key === "-" ? parent.length : key, 0, value);
        else parent[key] = value;
      };
      const drop = (parent, key) => {
        if (Array.isArray(parent)) parent.splice(key, 1);
        else delete parent[key];
      };
      if (op.op === "add") write(op.path, put(op.value));
      else if (op.op === "remove") write(op.path, drop);
      else if (op.op === "replace") write(op.path, (p, k) => { p[k] = op.value; });
      else if (op.op === "move" || op.op === "copy") {
        const value = read(op.from);
        if (op.op === "move") write(op.from, drop);
        write(op.path, put(value));
      } else if (op.op === "test") {
        if (JSON.stringify(read(op.path)) !== JSON.stringify(op.value)) throw new Error("test");
      }
    });
    return root[""];
  }

  class ObjectsError extends Error {
    constructor(type, message) {
      super(message);
      this.name = "ObjectsError";
      this.type = type;
    }
  }

  // What sockets and streams share: handlers by event name ("*": every event), and a status.
  class Emitter {
    constructor() {
      this.handlers = new Map();
      this.statusHandlers = [];
      this.status = "connecting";
      this.lastClose = null;
    }

    emit(frame) {
      const detail = frame.change || frame;
      (this.handlers.get(frame.event) || []).forEach((fn) => fn(frame.payload, detail));
      (this.handlers.get("*") || []).forEach((fn) => fn(frame.payload, frame));
    }

    on(event, fn) {
      if (!this.handlers.has(event)) this.handlers.set(event, []);
      this.handlers.get(event).push(fn);
      return () => this.handlers.set(event, this.handlers.get(event).filter((f) => f !== fn));
    }

    onStatus(fn) {
      this.statusHandlers.push(fn);
      fn(this.status, this.lastClose);
    }

    setStatus(status) {
      this.status = status;
      this.statusHandlers.forEach((fn) => fn(status, this.lastClose));
    }
  }

  const refsOf = (presence) => presence.metas.map((m) => m.phx_ref);
  const copy = (presence) => ({ metas: presence.metas.slice() });

  // The presence of the object a socket is attached to: { key: { metas: [...] } }.
  class Presence {
    constructor() {
      this.state = {};
      this.pending = null; // diffs held until this attach's state arrives (null: none awaited)
      this.fns = { join: [], leave: [], sync: [] };
    }

    onJoin(fn) { return this.subscribe("join", fn); }
    onLeave(fn) { return this.subscribe("leave", fn); }
    onSync(fn) { return this.subscribe("sync", fn); }

    subscribe(kind, fn) {
      this.fns[kind].push(fn);
      return () => { this.fns[kind] = this.fns[kind].filter((f) => f !== fn); };
    }

    // Every key, by default as { key, metas }; `chooser(key, presence)` picks something else.
    list(chooser) {
      const pick = chooser || ((key, presence) => ({ key: key, metas: presence.metas }));
      return Object.keys(this.state).map((key) => pick(key, this.state[key]));
    }

    // The attached frame says whether a state follows; if not, the presence is empty now.
    attached(stateFollows) {
      if (stateFollows) this.pending = [];
      else this.sync({});
    }

    receive(frame) {
      if (frame.event === PRESENCE_STATE) {
        this.sync(frame.payload || {});
      } else if (this.pending !== null) {
        this.pending.push(frame.payload);
      } else {
        this.apply(frame.payload);
        this.emitSync();
      }
    }

    sync(newState) {
      const joins = {};
      const leaves = {};
      Object.keys(this.state).forEach((key) => {
        if (!newState[key]) leaves[key] = copy(this.state[key]);
      });
      Object.keys(newState).forEach((key) => {
        const current = this.state[key];
        const fresh = newState[key];
        if (!current) {
          joins[key] = fresh;
          return;
        }
        const newRefs = refsOf(fresh);
        const curRefs = refsOf(current);
        const joined = fresh.metas.filter((m) => curRefs.indexOf(m.phx_ref) < 0);
        const left = current.metas.filter((m) => newRefs.indexOf(m.phx_ref) < 0);
        if (joined.length) joins[key] = { metas: joined };
        if (left.length) leaves[key] = { metas: left };
      });
      this.apply({ joins: joins, leaves: leaves });
      const pending = this.pending || [];
      this.pending = null;
      pending.forEach((diff) => this.apply(diff));
      this.emitSync();
    }

    apply(diff) {
      const state = this.state;
      Object.keys(diff.joins || {}).forEach((key) => {
        const current = state[key];
        const joined = diff.joins[key];
        const next = copy(joined);
        if (current) {
          const refs = refsOf(joined);
          next.metas.unshift(...current.metas.filter((m) => refs.indexOf(m.phx_ref) < 0));
        }
        state[key] = next;
        this.fns.join.forEach((fn) => fn(key, current, joined));
      });
      Object.keys(diff.leaves || {}).forEach((key) => {
        const current = state[key];
        if (!current) return;
        const left = diff.leaves[key];
        const refs = refsOf(left);
        current.metas = current.metas.filter((m) => refs.indexOf(m.phx_ref) < 0);
        this.fns.leave.forEach((fn) => fn(key, current, left));
        if (!current.metas.length) delete state[key];
      });
    }

    emitSync() {
      this.fns.sync.forEach((fn) => fn());
    }
  }

  class ObjectSocket extends Emitter {
    constructor(url, options) {
      super();
      this.url = ObjectSocket.absolute(url);
      this.options = Object.assign(
        { minBackoff: 250, maxBackoff: 10000, callTimeout: 30000, reconnect: true },
        options || {}
      );
      this.pending = new Map();
      this.waiting = [];
      this.nextRef = 1;
      this.attempt = 0;
      this.connection = null;
      this.closedByUser = false;
      this.presence = new Presence();
      this.state = null;
      this.rev = null; // the rev of the state held, and the run it came from (to resume)
      this.run = null;
      this.stateRequested = false;
      this.newReady();
      this.open();
    }

    static absolute(url) {
      if (/^wss?:\/\//.test(url)) return url;
      const scheme = global.location.protocol === "https:" ? "wss:" : "ws:";
      return scheme + "//" + global.location.host + url;
    }

    newReady() {
      this.ready = new Promise((resolve, reject) => {
        this.readyResolve = resolve;
        this.readyReject = reject;
      });
      // Nobody has to await it: a rejection nobody waits for is not an error in the page.
      this.ready.catch(() => {});
    }

    open() {
      this.setStatus("connecting");
      this.stateRequested = false;
      let url = this.url;
      if (this.rev !== null && this.run !== null) {
        url += (url.indexOf("?") < 0 ? "?" : "&") + "objects_rev=" + this.rev +
          "&objects_run=" + encodeURIComponent(this.run);
      }
      const ws = new WebSocket(url);
      this.ws = ws;
      ws.onmessage = (event) => this.receive(event.data);
      let closed = false;
      const onClosed = (event) => {
        if (closed) return;
        closed = true;
        this.lastClose = { code: event.code, reason: event.reason };
        const wasAttached = this.connection !== null;
        this.connection = null;
        this.pending.forEach(({ reject, timer }) => {
          clearTimeout(timer);
          reject(new ObjectsError("disconnected", "connection closed before the reply"));
        });
        this.pending.clear();
        if (wasAttached) this.newReady();
        // 44xx codes are refusals (bad key, unauthorized, forbidden): retrying cannot help.
        const refused = event.code >= 4400 && event.code < 4500 && event.code !== 4408;
        const again = !this.closedByUser && this.options.reconnect && !refused;
        if (!again) this.giveUp(event);
        this.setStatus("closed");
        if (again) this.scheduleReconnect();
      };
      ws.onclose = onClosed;
      // Node.js 20's WebSocket fires only "error" (and stays CONNECTING) when it cannot
      // connect; browsers are CLOSED by then and fire "close" next. Without this, a client
      // in Node would never reconnect after a failed attempt.
      ws.onerror = () => {
        if (ws.readyState === 0) onClosed({ code: 1006, reason: "" });
      };
    }

    giveUp(event) {
      const error = this.closedByUser
        ? new ObjectsError("closed", "the client was closed")
        : new ObjectsError("refused", event.reason || "connection refused (" + event.code + ")");
      this.readyReject(error);
      const waiting = this.waiting;
      this.waiting = [];
      waiting.forEach((held) => held.fail(error));
    }

    scheduleReconnect() {
      const base = Math.min(this.options.maxBackoff, this.options.minBackoff * 2 ** this.attempt);
      this.attempt += 1;
      setTimeout(() => this.open(), base / 2 + Math.random() * (base / 2));
    }

    attached(frame) {
      this.attempt = 0; // only an attach resets the backoff: an accept-then-close does not
      this.connection = (frame.payload && frame.payload.connection) || null;
      this.presence.attached(Boolean(frame.payload && frame.payload.presence));
      this.setStatus("open");
      this.readyResolve(this.connection);
      const waiting = this.waiting;
      this.waiting = [];
      waiting.forEach((held) => held.transmit());
    }

    receive(data) {
      let frame;
      try {
        frame = JSON.parse(data);
      } catch (err) {
        return;
      }
      if (frame.event === ATTACHED) {
        this.attached(frame);
      } else if (frame.event === PRESENCE_STATE || frame.event === PRESENCE_DIFF) {
        this.presence.receive(frame);
        this.emit(frame);
      } else if (frame.event === STATE || frame.event === STATE_PATCH) {
        this.sync(frame);
      } else if (frame.ref !== undefined && frame.ref !== null && this.pending.has(frame.ref)) {
        const { resolve, reject, timer } = this.pending.get(frame.ref);
        clearTimeout(timer);
        this.pending.delete(frame.ref);
        if (frame.ok) resolve(frame.result);
        else reject(new ObjectsError(frame.error.type, frame.error.message));
      } else if (frame.event !== undefined) {
        this.emit(frame);
      } else if (frame.ok === false) {
        (this.handlers.get("error") || []).forEach((fn) => fn(frame.error, frame));
      }
    }

    sync(frame) {
      const p = frame.payload;
      if (frame.event === STATE) {
        this.state = p.state;
        this.rev = p.rev;
        this.run = p.run;
        this.stateRequested = false;
        this.emit({ event: "state", payload: this.state, change: { rev: p.rev, patch: null } });
        return;
      }
      if (this.rev === null || this.stateRequested || p.rev <= this.rev) return; // old, or asked
      if (p.base !== this.rev) return this.requestState(); // a gap: get the whole view
      try {
        this.state = applyPatch(this.state, p.patch);
      } catch (err) {
        return this.requestState();
      }
      this.rev = p.rev;
      this.emit({ event: "state", payload: this.state, change: { rev: p.rev, patch: p.patch } });
    }

    requestState() {
      this.stateRequested = true;
      if (this.ws.readyState === 1) this.ws.send(JSON.stringify({ event: STATE_REQUEST }));
    }

    request(frame) {
      return new Promise((resolve, reject) => {
        const ref = String(this.nextRef++);
        frame.ref = ref;
        let done = false;
        const fail = (error) => {
          if (done) return;
          done = true;
          clearTimeout(timer);
          this.pending.delete(ref);
          reject(error);
        };
        const timer = setTimeout(
          () => fail(new ObjectsError("timeout", "no reply within " + this.options.callTimeout + " ms")),
          this.options.callTimeout
        );
        const transmit = () => {
          if (done) return; // timed out while waiting: never send it late
          this.pending.set(ref, {
            resolve: (value) => { done = true; resolve(value); },
            reject: (error) => { done = true; reject(error); },
            timer,
          });
          this.ws.send(JSON.stringify(frame));
        };
        if (this.status === "open") transmit();
        else this.waiting.push({ transmit, fail });
      });
    }

    call(method, args) {
      return this.request({ call: method, args: args || {} });
    }

    send(event, payload) {
      return this.request({ event: event, payload: payload === undefined ? null : payload });
    }

    close() {
      this.closedByUser = true;
      this.ws.close(1000);
    }
  }

  // A read-only stream of frames over Server-Sent Events: "open" on the server's "ready"
  // event (it listens from then on), "connecting" while EventSource reconnects.
  class ObjectStream extends Emitter {
    constructor(url) {
      super();
      this.source = new EventSource(url);
      this.source.addEventListener("ready", () => this.setStatus("open"));
      this.source.onerror = () =>
        this.setStatus(this.source.readyState === 2 ? "closed" : "connecting");
      this.source.onmessage = (event) => {
        let frame;
        try {
          frame = JSON.parse(event.data);
        } catch (err) {
          return;
        }
        if (frame.event !== undefined) this.emit(frame);
      };
    }

    close() {
      this.source.close();
      this.setStatus("closed");
    }
  }

  global.ObjectsClient = {
    connect: (url, options) => new ObjectSocket(url, options),
    watch: (url) => new ObjectStream(url),
    ObjectSocket: ObjectSocket,
    ObjectStream: ObjectStream,
    Presence: Presence,
    ObjectsError: ObjectsError,
    applyPatch: applyPatch,
  };
})(typeof window !== "undefined" ? window : globalThis);
