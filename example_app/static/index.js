// Home page: the live counter (websocket), the room list (polled) and this session's cart.
(function () {
  "use strict";
  const $ = (sel) => document.querySelector(sel);
  const dollars = (cents) => "$" + (cents / 100).toFixed(2);

  function el(tag, props, ...children) {
    const node = Object.assign(document.createElement(tag), props || {});
    children.forEach((c) => node.append(c));
    return node;
  }

  // -- live counter: one Counter object, every tab attached to it --------------------------
  const valueEl = $("#counter-value");
  const counter = ObjectsClient.connect(`/objects/counter/${window.DEMO.counter}/ws`);
  function show(value) {
    valueEl.textContent = value;
    valueEl.classList.add("bump");
    setTimeout(() => valueEl.classList.remove("bump"), 250);
  }
  function showStatus(status, text) {
    const s = $("#counter-status");
    s.className = "status " + status;
    s.textContent = text;
  }
  counter.on("changed", (payload) => show(payload.value));
  counter.onStatus((status) => {
    showStatus(status, status === "open" ? "live" : status);
    // "open" means attached: read the value now and every later change arrives as "changed".
    // A read cut off by a dropped connection is no error: the next "open" reads again.
    if (status === "open") counter.call("get").then(show, () => {});
  });
  document.querySelectorAll("#counter-card button[data-by]").forEach((button) => {
    button.addEventListener("click", () => {
      counter.call("increment", { by: Number(button.dataset.by) }).catch((err) => {
        // Not applied, or (connection lost mid-call) not known to be: say so, don't retry.
        showStatus("closed", err.type === "disconnected" ? "not sent: reconnecting" : err.message);
      });
    });
  });

  // -- rooms: read from the database without waking them -----------------------------------
  function renderRooms(rooms) {
    const list = $("#room-list");
    list.replaceChildren(...rooms.map((r) => {
      const li = el("li", {},
        el("a", { href: `/rooms/${r.name}`, textContent: `#${r.name}` }), " ",
        el("span", { className: `pill ${r.status}`, textContent: r.status }), " ",
        el("span", { className: "muted small", textContent: `${r.posted} message${r.posted === 1 ? "" : "s"}` }));
      li.dataset.room = r.name;
      if (r.last) {
        li.append(el("div", { className: "last muted small" },
          el("b", { textContent: r.last.name + ": " }), r.last.text));
      }
      return li;
    }));
    $("#no-rooms").hidden = rooms.length > 0;
  }
  async function refreshRooms() {
    try {
      renderRooms(await (await fetch("/api/rooms")).json());
    } catch (err) { /* the next poll will tell */ }
  }
  setInterval(refreshRooms, 3000);

  $("#new-room").addEventListener("submit", (event) => {
    event.preventDefault();
    const name = event.target.room.value.trim().toLowerCase()
      .replace(/[^a-z0-9-]+/g, "-").replace(/^-+|-+$/g, "").slice(0, 40);
    if (name) location.href = `/rooms/${name}`;
  });

  // -- the cart: plain HTTP; the Cart object hibernates between visits ----------------------
  function renderCart(cart) {
    const lines = $("#cart-lines");
    if (!cart.lines.length) {
      lines.replaceChildren(el("li", { className: "empty", textContent: "Empty — add something above." }));
    } else {
      lines.replaceChildren(...cart.lines.map((line) => {
        const remove = el("button", { title: "remove", textContent: "✕" });
        remove.addEventListener("click", () => cartRequest("DELETE", `/api/cart/items/${line.sku}`));
        return el("li", {}, el("span", { textContent: `${line.quantity} × ${line.name}` }),
          el("span", {}, dollars(line.cents), remove));
      }));
    }
    $("#cart-total").textContent = dollars(cart.total_cents);
    $("#cart-wakeups").textContent =
      `loaded into memory ${cart.wakeups} time${cart.wakeups === 1 ? "" : "s"} so far`;
  }
  async function cartRequest(method, url, body) {
    try {
      const response = await fetch(url, {
        method,
        headers: body ? { "content-type": "application/json" } : {},
        body: body ? JSON.stringify(body) : undefined,
      });
      if (response.ok) renderCart(await response.json());
    } catch (err) { /* offline or leaving the page: the next click or visit shows the cart */ }
  }
  document.querySelectorAll(".product").forEach((button) => {
    button.addEventListener("click", () => cartRequest("POST", "/api/cart/items", { sku: button.dataset.sku, quantity: 1 }));
  });
  cartRequest("GET", "/api/cart");
})();
