// Starcite admin console: follows a session's timeline live over Server-Sent Events.
// Rows are built with createElement and textContent only, so event data never becomes markup.
"use strict";

// The gateway cuts the collapsed payload preview at the same length.
const PREVIEW_CHARS = 120;

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text != null) node.textContent = String(text);
  return node;
}

function preview(compact) {
  // Count code points, not UTF-16 units, so an emoji is never cut in half.
  const chars = Array.from(compact);
  return chars.length > PREVIEW_CHARS ? chars.slice(0, PREVIEW_CHARS).join("") + "…" : compact;
}

// The same structure and classes as a server-rendered row in session.html.
function eventRow(event) {
  const item = element("li", "event arrived");
  item.dataset.seq = String(event.seq);
  const time = element("time", "event-time", event.inserted_at);
  time.dateTime = event.inserted_at ?? "";
  const head = element("div", "event-head");
  head.append(
    element("span", "event-seq", event.seq),
    element("span", "event-type", event.type),
    element("span", "event-actor", event.actor),
    time,
  );
  const meta = element("div", "event-meta");
  meta.append(element("span", "event-producer", `${event.producer_id} #${event.producer_seq}`));
  if (event.source != null) meta.append(element("span", "event-source", event.source));
  const details = element("details", "payload");
  details.append(
    element("summary", "", preview(JSON.stringify(event.payload) ?? "null")),
    element("pre", "", JSON.stringify(event.payload, null, 2) ?? "null"),
  );
  item.append(head, meta, details);
  return item;
}

function parse(data) {
  try {
    return JSON.parse(data);
  } catch {
    return null;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  const live = document.getElementById("live");
  if (!live) return;
  const timeline = document.getElementById("timeline");
  const state = document.getElementById("connection-state");
  const lastSeq = document.getElementById("last-seq");

  // Never show an event twice: start after the cursor or the newest row already on the page.
  let highest = Number(live.dataset.cursor) || 0;
  for (const row of timeline.querySelectorAll(".event")) {
    highest = Math.max(highest, Number(row.dataset.seq) || 0);
  }

  const show = (name, text) => {
    state.dataset.state = name;
    state.textContent = text;
  };
  const note = (text) => {
    const line = live.querySelector(".live-note") ?? live.appendChild(element("span", "live-note"));
    line.textContent = text;
  };

  function connect() {
    const url = new URL(live.dataset.tailUrl, window.location.href);
    url.searchParams.set("cursor", String(highest));
    show("connecting", "connecting…");
    const source = new EventSource(url);
    source.onopen = () => show("live", "live");
    // EventSource retries by itself, resuming with Last-Event-ID, unless the server refused it.
    source.onerror = () => {
      if (source.readyState === EventSource.CLOSED) show("closed", "closed");
      else show("reconnecting", "reconnecting…");
    };
    source.onmessage = (message) => {
      const event = parse(message.data);
      if (typeof event?.seq !== "number" || event.seq <= highest) return;
      highest = event.seq;
      timeline.prepend(eventRow(event));
      document.getElementById("no-events")?.remove();
      if (lastSeq) {
        lastSeq.dataset.seq = String(event.seq);
        lastSeq.textContent = `last seq ${event.seq}`;
      }
    };

    // Delivery continues after next_cursor, which is below our cursor after a session reset.
    source.addEventListener("gap", (message) => {
      const gap = parse(message.data) ?? {};
      console.warn("starcite: the tail skipped ahead", gap);
      if (typeof gap.next_cursor === "number") highest = gap.next_cursor;
      note(`Some events are not shown (${gap.reason ?? "gap"}); continuing after seq ${highest}.`);
    });
    // The gateway is shutting down; the stream ends and EventSource reconnects on its own.
    source.addEventListener("going_away", () => show("reconnecting", "reconnecting…"));
    // The gateway cut us off as too slow: start a fresh stream from what we have shown.
    source.addEventListener("overflow", () => {
      source.close();
      show("reconnecting", "reconnecting…");
      setTimeout(connect, 1000);
    });
  }

  connect();
});

// The system page's charts: every few seconds fetch the fragment the gateway renders (askama
// escapes everything in it) and swap it in; parsing it with DOMParser runs no script.
document.addEventListener("DOMContentLoaded", () => {
  const first = document.getElementById("charts");
  if (!first) return;
  const seconds = Math.max(1, Number(first.dataset.refreshSeconds) || 5);
  const url = first.dataset.refreshUrl;
  let busy = false;
  setInterval(async () => {
    if (busy) return;
    busy = true;
    try {
      const response = await fetch(url, { credentials: "same-origin", cache: "no-store" });
      if (!response.ok) return;
      const page = new DOMParser().parseFromString(await response.text(), "text/html");
      const fresh = page.getElementById("charts");
      const current = document.getElementById("charts");
      if (fresh && current) current.replaceWith(document.importNode(fresh, true));
    } catch (error) {
      console.warn("starcite: could not refresh the charts", error);
    } finally {
      busy = false;
    }
  }, seconds * 1000);
});
