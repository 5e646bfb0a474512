// A chat room: history, presence and typing, all through one websocket to the ChatRoom object.
(function () {
  "use strict";
  const $ = (sel) => document.querySelector(sel);
  const room = document.querySelector("main.room").dataset.room;
  const NAME_KEY = "objects-demo-name";
  const me = () => (socket ? socket.connection : null); // this connection's id, once attached
  let myName = null;

  function el(tag, props, ...children) {
    const node = Object.assign(document.createElement(tag), props || {});
    children.forEach((c) => node.append(c));
    return node;
  }

  const list = $("#messages");
  function renderMessage(m) {
    const at = new Date(m.at * 1000);
    return el("li", { className: m.name === myName ? "mine" : "" },
      el("time", { dateTime: at.toISOString(), textContent: at.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }) }),
      el("span", { className: "who", textContent: m.name }),
      el("span", { className: "text", textContent: m.text }));
  }
  function renderHistory(messages) {
    list.replaceChildren(...messages.map(renderMessage));
    if (!messages.length) list.append(el("li", { className: "empty", textContent: "No messages yet. Say hello!" }));
    list.scrollTop = list.scrollHeight;
  }
  function appendMessage(m) {
    list.querySelector(".empty")?.remove();
    const stick = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
    list.append(renderMessage(m));
    if (stick) list.scrollTop = list.scrollHeight;
  }
  // The room's presence: one entry per name, however many tabs it is open in.
  function renderPresence(present) {
    const people = present
      .map(({ key, metas }) => ({ name: key, mine: metas.some((m) => m.connection === me()) }))
      .sort((a, b) => a.name.toLowerCase().localeCompare(b.name.toLowerCase()));
    $("#present").replaceChildren(...people.map((p) =>
      el("li", { className: p.mine ? "me" : "", textContent: p.mine ? `${p.name} (you)` : p.name })));
    $("#present-count").textContent = people.length;
  }
  function renderTyping(typing) {
    const names = typing.filter((p) => p.id !== me()).map((p) => p.name);
    $("#typing").textContent = !names.length ? "" :
      names.length === 1 ? `${names[0]} is typing…` : `${names.join(", ")} are typing…`;
  }

  function askForName(why) {
    $("#room-body").hidden = true;
    $("#join").hidden = false;
    $("#join-error").hidden = !why;
    $("#join-error").textContent = why || "";
    $("#name").focus();
  }

  let socket = null;
  function join(name) {
    myName = name;
    localStorage.setItem(NAME_KEY, name);
    $("#join").hidden = true;
    $("#room-body").hidden = false;
    if (socket) socket.close();
    socket = ObjectsClient.connect(
      `/objects/chat_room/${room}/ws?name=${encodeURIComponent(name)}`);
    // The server binds a name to the first browser that uses it: a taken name is refused.
    socket.ready.catch((err) => {
      if (err.type !== "refused") return;
      localStorage.removeItem(NAME_KEY);
      askForName(err.message);
    });
    socket.on("welcome", (p) => {
      renderHistory(p.history);
      renderTyping(p.typing);
    });
    socket.presence.onSync(() => renderPresence(socket.presence.list()));
    socket.on("typing", (p) => renderTyping(p.typing));
    socket.on("message", appendMessage);
    socket.onStatus((status, close) => {
      const s = $("#status");
      s.className = "status " + status;
      s.textContent = status === "open" ? "live" :
        status === "closed" && close && close.reason ? `closed: ${close.reason}` : status;
    });

    // Typing: tell the room when we start, and when we stop (idle 2 s, or sent).
    const input = $("#text");
    if (input.dataset.wired) {
      input.focus();
      return;
    }
    input.dataset.wired = "1";
    let typing = false;
    let idle = null;
    function setTyping(on) {
      if (on !== typing) {
        typing = on;
        socket.send("typing", { on }).catch(() => {});
      }
    }
    input.addEventListener("input", () => {
      setTyping(input.value.trim().length > 0);
      clearTimeout(idle);
      idle = setTimeout(() => setTyping(false), 2000);
    });
    $("#compose").addEventListener("submit", (event) => {
      event.preventDefault();
      const text = input.value.trim();
      if (!text) return;
      clearTimeout(idle);
      typing = false; // "say" clears it on the server in the same turn
      input.value = "";
      socket.send("say", { text }).catch((err) => {
        input.value = text;
        $("#typing").textContent = `not sent: ${err.message}`;
      });
    });
    input.focus();
  }

  $("#join").addEventListener("submit", (event) => {
    event.preventDefault();
    const name = $("#name").value.trim();
    if (name) join(name.slice(0, 24));
  });
  const fromUrl = new URLSearchParams(location.search).get("name");
  const known = (fromUrl || localStorage.getItem(NAME_KEY) || "").trim();
  if (known) join(known.slice(0, 24));
  else askForName("");
})();
