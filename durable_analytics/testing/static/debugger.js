// The debugger page: polls /debugger/events for what the collector accepted since the cursor
// and shows it newest first. Plain DOM, no framework, nothing fetched from anywhere else.
// Message contents go into the page through textContent only, never as HTML.
"use strict";

(function () {
  const POLL_MS = 500;
  const RETRY_MS = 2000;
  const KEEP = 5000; // events the page holds (what the filters search)
  const MAX_ROWS = 500; // rows in the table at most, so thousands of events stay fast

  const $ = (id) => document.getElementById(id);
  const tbody = $("events").tBodies[0];
  const filters = { type: $("filter-type"), event: $("filter-event"), user: $("filter-user") };
  const state = {
    cursor: 0,
    generation: null,
    paused: false,
    selected: null,
    events: [], // oldest first
    bySeq: new Map(),
    dirty: false,
  };

  function label(message) {
    const m = message || {};
    switch (m.type) {
      case "track":
        return m.event;
      case "page":
      case "screen":
        return [m.category, m.name].filter((v) => v != null && v !== "").join(" / ");
      case "group":
        return m.groupId == null ? "" : "group " + m.groupId;
      case "alias":
        return (m.previousId == null ? "?" : m.previousId) + " → " + (m.userId == null ? "?" : m.userId);
      case "identify":
        return m.traits && typeof m.traits === "object" ? "traits: " + Object.keys(m.traits).join(", ") : "";
      default:
        return "";
    }
  }

  function who(message) {
    const m = message || {};
    if (m.userId != null) return String(m.userId);
    if (m.anonymousId != null) return "anon " + m.anonymousId;
    return "";
  }

  function clock(seconds) {
    const d = new Date(seconds * 1000);
    const pad = (n, w) => String(n).padStart(w || 2, "0");
    return pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds()) + "." + pad(d.getMilliseconds(), 3);
  }

  function matches(entry) {
    const m = entry.message || {};
    const type = filters.type.value;
    if (type && m.type !== type) return false;
    const name = filters.event.value.trim().toLowerCase();
    if (name && !String(m.event != null ? m.event : m.name != null ? m.name : "").toLowerCase().includes(name)) {
      return false;
    }
    const user = filters.user.value.trim().toLowerCase();
    if (user) {
      const ids = [m.userId, m.anonymousId].filter((v) => v != null).map((v) => String(v).toLowerCase());
      if (!ids.some((id) => id.includes(user))) return false;
    }
    return true;
  }

  function cell(row, text, className) {
    const td = row.insertCell();
    td.textContent = text == null ? "" : String(text);
    if (className) td.className = className;
    td.title = td.textContent;
    return td;
  }

  function rowFor(entry) {
    const m = entry.message || {};
    const tr = document.createElement("tr");
    tr.dataset.seq = String(entry.seq);
    tr.tabIndex = 0;
    if (entry.seq === state.selected) tr.className = "selected";
    cell(tr, clock(entry.received), "mono");
    const kind = tr.insertCell();
    const badge = document.createElement("span");
    badge.className = "type " + (typeof m.type === "string" ? m.type : "");
    badge.textContent = m.type == null ? "?" : String(m.type);
    kind.appendChild(badge);
    if (entry.duplicate) {
      const dup = document.createElement("span");
      dup.className = "dup";
      dup.textContent = "duplicate";
      dup.title = "this messageId had already been accepted";
      kind.appendChild(dup);
    }
    cell(tr, label(m));
    cell(tr, who(m));
    cell(tr, m.timestamp, "mono");
    cell(tr, m.messageId, "mono");
    return tr;
  }

  function showCount() {
    const shown = tbody.rows.length;
    let matching = 0;
    for (const entry of state.events) if (matches(entry)) matching += 1;
    const capped = matching > shown ? " (newest " + shown.toLocaleString() + " shown)" : "";
    $("shown").textContent =
      matching.toLocaleString() + " of " + state.events.length.toLocaleString() + " events match" + capped;
    $("empty").hidden = state.events.length > 0;
  }

  // Redraw the table from the events held: after a filter change, a resume or a reset.
  function render() {
    const fragment = document.createDocumentFragment();
    for (let i = state.events.length - 1; i >= 0 && fragment.childNodes.length < MAX_ROWS; i--) {
      if (matches(state.events[i])) fragment.appendChild(rowFor(state.events[i]));
    }
    tbody.replaceChildren(fragment);
    state.dirty = false;
    showCount();
  }

  // New events (oldest first) go on top, newest first; the oldest rows fall off the bottom.
  function prepend(entries) {
    const fragment = document.createDocumentFragment();
    for (let i = entries.length - 1; i >= 0 && fragment.childNodes.length < MAX_ROWS; i--) {
      if (matches(entries[i])) fragment.appendChild(rowFor(entries[i]));
    }
    tbody.insertBefore(fragment, tbody.firstChild);
    while (tbody.rows.length > MAX_ROWS) tbody.deleteRow(-1);
    showCount();
  }

  function remember(entries) {
    for (const entry of entries) {
      state.events.push(entry);
      state.bySeq.set(entry.seq, entry);
    }
    const extra = state.events.length - KEEP;
    if (extra > 0) {
      for (const old of state.events.splice(0, extra)) state.bySeq.delete(old.seq);
    }
  }

  function forget() {
    state.events = [];
    state.bySeq.clear();
    closeDetail();
    render();
  }

  function select(seq) {
    const entry = state.bySeq.get(seq);
    if (!entry) return;
    state.selected = seq;
    for (const row of tbody.querySelectorAll("tr.selected")) row.classList.remove("selected");
    const row = tbody.querySelector('tr[data-seq="' + seq + '"]');
    if (row) row.classList.add("selected");
    const m = entry.message || {};
    $("detail-title").textContent = (m.type || "message") + " " + (m.messageId || "");
    $("json").textContent = JSON.stringify(m, null, 2);
    $("detail").hidden = false;
  }

  function closeDetail() {
    state.selected = null;
    $("detail").hidden = true;
    for (const row of tbody.querySelectorAll("tr.selected")) row.classList.remove("selected");
  }

  function describeFaults(faults) {
    const parts = [];
    const injected = Object.entries(faults.injected || {});
    if (injected.length) {
      parts.push("injected: " + injected.map(([what, n]) => what + " ×" + n.toLocaleString()).join(", "));
    }
    if (faults.pending && faults.pending.length) parts.push(faults.pending.length + " scripted answer(s) pending: " + faults.pending.slice(0, 5).join(", "));
    if (faults.default) parts.push("every request answered: " + faults.default);
    if (faults.reject_marker) parts.push("batches containing " + JSON.stringify(faults.reject_marker) + " rejected");
    for (const [key, value] of Object.entries(faults)) {
      if (!["injected", "pending", "default", "reject_marker"].includes(key) && value != null && value !== false) {
        parts.push(key.replace(/_/g, " ") + ": " + (typeof value === "object" ? JSON.stringify(value) : value));
      }
    }
    const node = $("faults");
    node.textContent = parts.length ? "Faults — " + parts.join("; ") : "no faults injected";
    node.classList.toggle("active", parts.length > 0);
  }

  function showCounts(counts) {
    for (const [name, value] of Object.entries(counts)) {
      const node = $("count-" + name);
      if (node) node.textContent = Number(value).toLocaleString();
    }
  }

  function setStatus(text, kind) {
    const node = $("status");
    node.textContent = text;
    node.className = "status " + kind;
  }

  function receive(data) {
    if (state.generation !== null && (data.generation !== state.generation || data.cursor < state.cursor)) {
      forget(); // the collector was reset or restarted
    }
    state.generation = data.generation;
    state.cursor = data.cursor;
    remember(data.events);
    if (state.paused) state.dirty = state.dirty || data.events.length > 0;
    else if (data.events.length) prepend(data.events);
    showCounts(data.counts);
    describeFaults(data.faults || {});
  }

  async function poll() {
    let wait = POLL_MS;
    try {
      const response = await fetch("/debugger/events?after=" + state.cursor, { cache: "no-store" });
      if (!response.ok) throw new Error("HTTP " + response.status);
      receive(await response.json());
      setStatus(state.paused ? "paused" : "live", state.paused ? "paused" : "live");
    } catch (error) {
      setStatus("collector unreachable — retrying", "down");
      wait = RETRY_MS;
    }
    setTimeout(poll, wait);
  }

  let typing = null;
  function refilter() {
    clearTimeout(typing);
    typing = setTimeout(render, 120);
  }
  filters.type.addEventListener("change", render);
  filters.event.addEventListener("input", refilter);
  filters.user.addEventListener("input", refilter);
  $("filters").addEventListener("submit", (event) => event.preventDefault());

  tbody.addEventListener("click", (event) => {
    const row = event.target.closest("tr");
    if (row) select(Number(row.dataset.seq));
  });
  tbody.addEventListener("keydown", (event) => {
    const row = event.target.closest("tr");
    if (row && (event.key === "Enter" || event.key === " ")) {
      event.preventDefault();
      select(Number(row.dataset.seq));
    }
  });
  $("detail-close").addEventListener("click", closeDetail);
  $("pause").addEventListener("click", () => {
    state.paused = !state.paused;
    $("pause").textContent = state.paused ? "Resume" : "Pause";
    $("pause").setAttribute("aria-pressed", String(state.paused));
    setStatus(state.paused ? "paused" : "live", state.paused ? "paused" : "live");
    if (!state.paused && state.dirty) render();
  });
  $("clear").addEventListener("click", forget);

  render();
  poll();
})();
