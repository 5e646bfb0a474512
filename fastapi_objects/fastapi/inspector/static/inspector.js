// The objects inspector's page: what needs a script, through the inspector's JSON API.
// The live view follows the object's broadcasts with the package's client (objects.js,
// ObjectsClient.watch); edits go as JSON Patches under If-Match; no build step.
(function () {
  "use strict";

  const base = document.body.dataset.base;
  const api = base + "/api";
  const segments = (...parts) => parts.map(encodeURIComponent).join("/");

  function say(text, ok) {
    const message = document.getElementById("message");
    if (!message) return;
    message.textContent = text;
    message.className = "message " + (ok ? "ok" : "bad");
  }

  // A JSON request; its JSON answer, or an Error carrying the server's message.
  async function send(method, url, body, headers) {
    const response = await fetch(url, {
      method: method,
      headers: Object.assign({ "Content-Type": "application/json" }, headers || {}),
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
    });
    const data = await response.json().catch(() => ({}));
    if (!response.ok) {
      const error = data.error ? data.error.message : JSON.stringify(data.detail || data);
      throw new Error(response.status + ": " + error);
    }
    return data;
  }

  // The RFC 6902 patch from one JSON value to another: objects member by member, anything
  // else (arrays, numbers, text) replaced whole.
  function diff(before, after, at, ops) {
    const plain = (v) => v !== null && typeof v === "object" && !Array.isArray(v);
    const pointer = (name) => at + "/" + name.replace(/~/g, "~0").replace(/\//g, "~1");
    if (plain(before) && plain(after)) {
      Object.keys(before).forEach((name) => {
        if (!(name in after)) ops.push({ op: "remove", path: pointer(name) });
      });
      Object.keys(after).forEach((name) => {
        if (!(name in before)) ops.push({ op: "add", path: pointer(name), value: after[name] });
        else diff(before[name], after[name], pointer(name), ops);
      });
    } else if (JSON.stringify(before) !== JSON.stringify(after)) {
      ops.push({ op: "replace", path: at, value: after });
    }
    return ops;
  }

  function cell(row, text, className) {
    const td = row.insertCell();
    td.textContent = text;
    if (className) td.className = className;
    return td;
  }

  const when = (iso) => iso.replace("T", " ").slice(0, 19);
  const short = (text, most) => (text.length > most ? text.slice(0, most - 3) + "..." : text);

  // A journal entry as a row of the journal table (who made an operator's change first).
  function journalRow(body, entry, index) {
    const row = body.insertRow(index);
    cell(row, String(entry.rev), "num");
    cell(row, when(entry.at));
    cell(row, entry.kind);
    const payload = row.insertCell();
    if (entry.payload && typeof entry.payload === "object" && entry.payload.by) {
      const by = document.createElement("span");
      by.className = "tag";
      by.textContent = "by " + entry.payload.by;
      payload.append(by, " ");
    }
    const code = document.createElement("code");
    code.textContent = short(JSON.stringify(entry.payload), 120);
    payload.append(code);
  }

  function objectPage(root) {
    const url = api + "/objects/" + segments(root.dataset.type, root.dataset.key);
    const stateView = document.getElementById("state");
    const editor = document.getElementById("editor");
    const draft = document.getElementById("draft");
    const journal = document.querySelector("#journal tbody");
    const history = document.querySelector("#history tbody");
    let state = JSON.parse(stateView.textContent);
    let rev = Number(root.dataset.rev);
    let editing = null; // {state, rev} the draft started from

    function show(next, nextRev) {
      state = next;
      rev = nextRev;
      stateView.textContent = JSON.stringify(state, null, 2);
      document.getElementById("rev").textContent = String(rev);
    }

    // After any change: the state, the journal's new entries, the kept states.
    async function refresh() {
      const found = await send("GET", url);
      show(found.state, found.rev);
      const top = journal.rows.length ? Number(journal.rows[0].cells[0].textContent) : 0;
      const added = await send("GET", url + "/journal?after=" + top);
      added.entries.forEach((entry) => journalRow(journal, entry, 0));
      if (added.entries.length) {
        document.getElementById("journal").hidden = false;
        const empty = document.getElementById("journal-empty");
        if (empty) empty.remove();
      }
      if (history) {
        const kept = await send("GET", url + "/history?limit=20");
        history.replaceChildren();
        kept.revisions.forEach((k) => {
          const row = history.insertRow();
          cell(row, String(k.rev), "num");
          cell(row, when(k.at));
          cell(row, String(k.state_version), "num");
          const action = row.insertCell();
          if (k.rev === rev) {
            action.textContent = "current";
          } else {
            const button = document.createElement("button");
            button.className = "restore";
            button.dataset.rev = String(k.rev);
            button.textContent = "Restore";
            action.append(button);
          }
        });
      }
    }
    let refreshing = Promise.resolve(); // one at a time: each reads after the last one shown
    const refreshSoon = () => {
      refreshing = refreshing.then(refresh).catch((err) => say(err.message));
    };

    document.getElementById("edit").addEventListener("click", () => {
      editing = { state: state, rev: rev };
      draft.value = JSON.stringify(state, null, 2);
      document.getElementById("edit-rev").textContent = String(rev);
      editor.hidden = false;
      draft.focus();
    });
    document.getElementById("cancel").addEventListener("click", () => {
      editor.hidden = true;
      editing = null;
    });
    editor.addEventListener("submit", async (event) => {
      event.preventDefault();
      let next;
      try {
        next = JSON.parse(draft.value);
      } catch (err) {
        say("not JSON: " + err.message);
        return;
      }
      const patch = diff(editing.state, next, "", []);
      if (patch.length === 0) {
        say("nothing changed", true);
        return;
      }
      try {
        const done = await send("PATCH", url + "/state", patch, {
          "Content-Type": "application/json-patch+json",
          "If-Match": '"' + editing.rev + '"',
        });
        show(done.state, done.rev);
        editor.hidden = true;
        editing = null;
        say("saved as rev " + done.rev, true);
        refreshSoon();
      } catch (err) {
        say(err.message);
      }
    });

    async function restore(body) {
      try {
        const done = await send("POST", url + "/restore", body);
        show(done.state, done.rev);
        say("restored rev " + done.restored + ": now at rev " + done.rev, true);
        refreshSoon();
      } catch (err) {
        say(err.message);
      }
    }
    if (history) {
      history.addEventListener("click", (event) => {
        const button = event.target.closest("button.restore");
        if (button) restore({ rev: Number(button.dataset.rev) });
      });
    }
    const restoreForm = document.getElementById("restore-form");
    if (restoreForm) {
      restoreForm.addEventListener("submit", (event) => {
        event.preventDefault();
        restore({ rev: Number(restoreForm.elements.rev.value) });
      });
    }

    // The live view: every broadcast, newest first; the page follows the commits.
    const log = document.getElementById("live");
    const badge = document.getElementById("live-status");
    const stream = ObjectsClient.watch(url + "/live");
    stream.onStatus((status) => {
      badge.textContent = status;
      badge.className = "status " + status;
    });
    stream.on("*", (payload, frame) => {
      const item = document.createElement("li");
      const time = document.createElement("span");
      time.className = "time";
      time.textContent = new Date().toISOString().slice(11, 23);
      const name = document.createElement("span");
      name.className = "event";
      name.textContent = frame.event;
      const body = document.createElement("code");
      body.textContent = JSON.stringify(payload);
      item.append(time, name, body);
      log.prepend(item);
      refreshSoon();
    });

    // Older journal entries, a page at a time, below the ones shown.
    const older = document.getElementById("older");
    let after = Number(root.dataset.journalAfter);
    const page = Number(root.dataset.journalPage);
    if (older) {
      older.addEventListener("click", async () => {
        const from = Math.max(0, after - page);
        const found = await send("GET", url + "/journal?after=" + from + "&limit=" + (after - from));
        found.entries.reverse().forEach((entry) => journalRow(journal, entry, -1));
        after = from;
        if (after === 0) older.remove();
      });
    }
  }

  function queuePage(root) {
    const url = api + "/queues/" + segments(root.dataset.queue);
    document.querySelectorAll("button.retry").forEach((button) => {
      button.addEventListener("click", async () => {
        try {
          const done = await send("POST", url + "/jobs/" + segments(button.dataset.job) + "/retry");
          if (done.retried) {
            button.closest("tr").remove();
            say("job " + button.dataset.job + " will run again", true);
          } else {
            say("job " + button.dataset.job + " is no longer dead");
          }
        } catch (err) {
          say(err.message);
        }
      });
    });
  }

  const object = document.getElementById("object");
  if (object) objectPage(object);
  const queue = document.getElementById("queue");
  if (queue) queuePage(queue);
})();
