// seqlab views: a timeline of tasks and one view per primitive, drawn from traitlet state.
// Plain ES module for anywidget: no build step, no imports, no network.

const SVG = "http://www.w3.org/2000/svg";

function el(tag, attrs = {}, children = []) {
  const node = tag.startsWith("svg:")
    ? document.createElementNS(SVG, tag.slice(4))
    : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined) continue;
    if (k === "text") node.textContent = String(v);
    else node.setAttribute(k, String(v));
  }
  for (const child of children) if (child) node.appendChild(child);
  return node;
}

function fmt(t) {
  return Number(t).toFixed(3);
}

function cssToken(text) {
  return String(text).replace(/[^A-Za-z0-9_-]/g, "_");
}

// ------------------------------------------------------------------ tooltip

function makeTooltip(root) {
  const tip = el("div", { class: "seqlab-tooltip", role: "tooltip" });
  tip.style.display = "none";
  root.appendChild(tip);
  return {
    show(evt, text) {
      tip.textContent = text;
      tip.style.display = "block";
      // Keep the tooltip inside the widget: flip it left of / above the pointer near an edge.
      const box = root.getBoundingClientRect();
      const w = tip.offsetWidth;
      const h = tip.offsetHeight;
      let left = evt.clientX - box.left + 12;
      let top = evt.clientY - box.top + 12;
      if (left + w > box.width - 2) left = Math.max(2, evt.clientX - box.left - w - 12);
      if (top + h > box.height - 2) top = Math.max(2, evt.clientY - box.top - h - 12);
      tip.style.left = `${left}px`;
      tip.style.top = `${top}px`;
    },
    hide() {
      tip.style.display = "none";
    },
  };
}

function hoverable(node, tooltip, text) {
  node.addEventListener("mousemove", (evt) => tooltip.show(evt, text));
  node.addEventListener("mouseleave", () => tooltip.hide());
  node.appendChild(el("svg:title", { text }));
}

// Long names lose their middle, so the distinguishing end survives ("Pipeli…'persist'").
function shorten(name, limit) {
  name = String(name);
  if (name.length <= limit) return name;
  const head = Math.max(1, Math.floor((limit - 1) / 3));
  const tail = limit - 1 - head;
  return name.slice(0, head) + "\u2026" + name.slice(name.length - tail);
}

// ------------------------------------------------------------------ timeline

const BASE_STATES = new Set(["running", "done", "failed", "cancelled", "deadlocked", "sleeping"]);

function stateClass(label) {
  if (BASE_STATES.has(label)) return `state-${label}`;
  return "state-waiting";
}

function renderTimeline(model, body, tooltip, view) {
  const lanes = model.get("lanes") || [];
  const states = model.get("states") || [];
  const spans = model.get("spans") || [];
  const markers = model.get("markers") || [];
  const links = model.get("links") || [];
  const deadlock = model.get("deadlock");
  const outcomes = model.get("outcomes") || [];
  const tEnd = model.get("t_end") || 0;
  const steps = model.get("steps") || 0;
  let axis = model.get("axis") || "auto";
  if (axis === "auto") axis = tEnd > 0 ? "time" : "steps";
  const end = axis === "time" ? tEnd : Math.max(1, steps);

  const labelW = 150;
  const laneH = 24;
  const top = 22;
  const bandW = deadlock ? 170 : 0;
  const avail = Math.max(320, (view.width || 720) - 4);
  const plotW = Math.max(80, (avail - labelW - 16 - bandW) * view.zoom);
  const width = labelW + plotW + 16 + bandW;
  const height = top + laneH * Math.max(1, lanes.length) + 6;
  const x = (t, s) => labelW + plotW * ((axis === "time" ? t : s) / (end || 1));

  const svg = el("svg:svg", {
    class: "seqlab-timeline-svg",
    width,
    height,
    viewBox: `0 0 ${width} ${height}`,
  });
  const defs = el("svg:defs");
  const arrow = el("svg:marker", {
    id: `seqlab-arrow-${view.uid}`,
    viewBox: "0 0 8 8",
    refX: 7,
    refY: 4,
    markerWidth: 7,
    markerHeight: 7,
    orient: "auto-start-reverse",
  });
  arrow.appendChild(el("svg:path", { d: "M0 0 L8 4 L0 8 z", class: "seqlab-arrowhead" }));
  defs.appendChild(arrow);
  svg.appendChild(defs);

  // axis ticks at 1, 2 or 5 times a power of ten, about one per 90 pixels
  const span = end || 1;
  const raw = span / Math.max(1, Math.floor(plotW / 90));
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const stepSize = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) || 10 * mag;
  for (let v = 0; v <= span + stepSize * 1e-9; v += stepSize) {
    if (axis === "steps" && v !== Math.round(v)) continue;
    const tx = labelW + plotW * (v / span);
    svg.appendChild(el("svg:line", { class: "seqlab-grid", x1: tx, x2: tx, y1: top - 4, y2: height }));
    svg.appendChild(
      el("svg:text", {
        class: "seqlab-axis-label",
        x: tx,
        y: top - 8,
        "text-anchor": v === 0 ? "start" : tx > width - 40 ? "end" : "middle",
        text: axis === "time" ? `${Number(v.toPrecision(6))} s` : `${Math.round(v)}`,
      }),
    );
  }

  const laneGroups = lanes.map((name, i) => {
    const y = top + i * laneH;
    const outcome = outcomes[i] || "";
    const failed = outcome.startsWith("raised");
    const g = el("svg:g", {
      class: `seqlab-lane${failed ? " lane-failed" : ""}`,
      "data-task": name,
      "data-outcome": outcome,
    });
    g.appendChild(el("svg:rect", { class: "seqlab-lane-bg", x: 0, y, width, height: laneH }));
    const label = el("svg:text", { class: "seqlab-lane-label", x: 6, y: y + 16, text: shorten(name, 22) });
    hoverable(label, tooltip, outcome ? `${name}: ${outcome}` : name);
    g.appendChild(label);
    svg.appendChild(g);
    return g;
  });

  const waitIds = new Map();
  for (const [lane, sid, t0, t1, s0, s1, merged, note] of spans) {
    const g = laneGroups[lane];
    if (!g) continue;
    const label = states[sid] || "?";
    const cls = stateClass(label);
    let extra = "";
    if (cls === "state-waiting") {
      if (!waitIds.has(sid)) waitIds.set(sid, waitIds.size);
      extra = ` wait-${waitIds.get(sid) % 4}`;
    }
    const y = top + lane * laneH;
    const x0 = x(t0, s0);
    const x1 = x(t1, s1);
    const h = { "state-done": 4, "state-cancelled": 4, "state-failed": 6, "state-deadlocked": 6, "state-sleeping": 8 }[cls] || 14;
    const rect = el("svg:rect", {
      class: `seqlab-span ${cls}${extra}`,
      "data-state": label,
      "data-t0": t0,
      "data-t1": t1,
      "data-note": note || "",
      x: x0,
      // A failed lane's bar runs along the top, so the exception written below stays clear.
      y: cls === "state-failed" ? y + 3 : y + (laneH - h) / 2,
      width: Math.max(0.8, x1 - x0),
      height: h,
      rx: h > 6 ? 2 : 0,
    });
    const more = merged > 1 ? ` (${merged} spans summarised)` : "";
    const why = note ? `\n${note}` : "";
    hoverable(rect, tooltip, `${lanes[lane]}: ${label}  ${fmt(t0)} .. ${fmt(t1)} s${more}${why}`);
    g.appendChild(rect);
    if ((cls === "state-failed") && note) {
      // The exception, written where the lane ended.
      g.appendChild(el("svg:text", { class: "seqlab-failure", x: Math.max(labelW, Math.min(x0 + 4, width - bandW - 250)), y: y + 20, text: shorten(note, 40) }));
    }
  }

  // Causes: an arrow from the task that released a wait to the task it woke.
  const linkLayer = el("svg:g", { class: "seqlab-links" });
  for (const [src, tf, sf, dst, tt, st, text] of links) {
    if (!laneGroups[src] || !laneGroups[dst]) continue;
    const x0 = x(tf, sf);
    const x1 = x(tt, st);
    const y0 = top + src * laneH + laneH / 2;
    const y1 = top + dst * laneH + laneH / 2;
    const bend = Math.max(12, Math.abs(y1 - y0) / 3);
    const path = el("svg:path", {
      class: "seqlab-link",
      d: `M${x0} ${y0} C${x0 + bend} ${y0}, ${x1 - bend} ${y1}, ${x1} ${y1}`,
      "marker-end": `url(#seqlab-arrow-${view.uid})`,
      "data-from": lanes[src],
      "data-to": lanes[dst],
    });
    hoverable(path, tooltip, `${lanes[dst]} ${text}`);
    linkLayer.appendChild(path);
  }
  svg.appendChild(linkLayer);

  // Markers at (almost) the same place are stacked into one, with a count; a failure wins.
  const groups = new Map();
  for (const m of markers) {
    const key = `${m[0]}:${Math.floor(x(m[1], m[2]) / 6)}`;
    if (!groups.has(key)) groups.set(key, []);
    groups.get(key).push(m);
  }
  for (const group of groups.values()) {
    group.sort((a, b) => (a[6] === "fail") - (b[6] === "fail"));
    const [lane, t, step, , , , role] = group[group.length - 1];
    const g = laneGroups[lane];
    if (!g) continue;
    const y = top + lane * laneH;
    const cx = x(t, step);
    const kinds = [...new Set(group.map((m) => m[3]))].sort();
    const failed = group.some((m) => m[6] === "fail");
    const mark = el("svg:path", {
      class: `seqlab-marker ${kinds.map((k) => "kind-" + cssToken(k)).join(" ")}${failed ? " role-fail" : role === "release" ? " role-release" : ""}`,
      "data-kind": kinds.join(" "),
      "data-count": group.length,
      d: `M${cx} ${y + 3} l4 5 l-4 5 l-4 -5 z`,
    });
    const text = group.map((m) => `${fmt(m[1])}  ${lanes[m[0]]}  ${m[4]}  ${m[3]}${m[5] ? "  " + m[5] : ""}`).join("\n");
    hoverable(mark, tooltip, text);
    g.appendChild(mark);
    if (group.length > 1) {
      g.appendChild(el("svg:text", { class: "seqlab-count", x: cx + 5, y: y + 9, text: `\u00d7${group.length}` }));
    }
  }

  // The deadlock: a red band from when it was declared over each stuck lane, with the reason.
  if (deadlock) {
    const bx = x(deadlock.time, deadlock.step);
    for (const [lane, reason] of deadlock.tasks) {
      const g = laneGroups[lane];
      if (!g) continue;
      const y = top + lane * laneH;
      const band = el("svg:rect", { class: "seqlab-deadlock", "data-reason": reason, x: bx, y: y + 2, width: Math.max(4, width - bx - 4), height: laneH - 4 });
      hoverable(band, tooltip, `${lanes[lane]} deadlocked at ${fmt(deadlock.time)}: ${reason}`);
      g.appendChild(band);
      const room = Math.max(8, Math.floor((width - bx - 10) / 6.4));
      g.appendChild(el("svg:text", { class: "seqlab-deadlock-reason", x: bx + 4, y: y + 16, text: shorten(reason, room) }));
    }
  }
  body.appendChild(el("div", { class: "seqlab-scroll" }, [svg]));

  // legend and summary
  const legend = el("div", { class: "seqlab-legend" });
  const item = (cls, text) =>
    legend.appendChild(el("span", { class: "seqlab-legend-item" }, [el("span", { class: `seqlab-swatch ${cls}` }), el("span", { text })]));
  item("state-running", "running");
  item("state-sleeping", "sleeping");
  for (const [sid, i] of waitIds) item(`state-waiting wait-${i % 4}`, shorten(states[sid], 40));
  item("state-done", "done");
  item("state-failed", "failed");
  item("state-cancelled", "cancelled");
  if (deadlock) item("state-deadlocked", "deadlocked");
  const dropped = model.get("dropped") || 0;
  const hidden = model.get("hidden_tasks") || 0;
  const hiddenEvents = model.get("hidden_events") || 0;
  let summary = `${lanes.length} tasks, ${steps} events, ${axis === "time" ? fmt(tEnd) + " s" : "one instant: event order"}`;
  if (links.length) summary += `, ${links.length} wake-up${links.length === 1 ? "" : "s"} linked`;
  if (dropped) summary += `, ${dropped} older markers summarised`;
  if (hidden) summary += `, ${hidden} more tasks (${hiddenEvents} events) not shown`;
  legend.appendChild(el("span", { class: "seqlab-summary", text: summary }));
  body.appendChild(legend);
  if (deadlock) {
    body.appendChild(el("div", { class: "seqlab-deadlock-note", text: `DEADLOCK at ${fmt(deadlock.time)}: ${deadlock.tasks.length} tasks blocked for good` }));
  }
}

// ------------------------------------------------------------------ barrier

function renderBarrier(model, body, tooltip) {
  const barriers = model.get("barriers") || [];
  if (!barriers.length) body.appendChild(el("div", { class: "seqlab-empty", text: "no barrier events yet" }));
  for (const b of barriers) {
    const stuck = b.deadlock !== null && b.deadlock !== undefined;
    const box = el("div", { class: `seqlab-barrier${b.broken ? " broken" : ""}${stuck ? " deadlocked" : ""}`, "data-name": b.name });
    const parties = b.parties === null ? "?" : b.parties;
    const unit = b.unit || "generation";
    let head = `${b.name}: ${parties} parties, ${unit} ${b.generation}`;
    if (b.broken) head += `, BROKEN${b.reason ? " (" + b.reason + ")" : ""}`;
    else if (b.reason) head += ` (${b.reason})`;
    box.appendChild(el("div", { class: "seqlab-heading", text: head }));
    const waiting = b.waiting || [];
    let status = waiting.length ? `${b.arrived}: ${waiting.join(", ")} waiting` : "nobody waiting";
    if (stuck) status += ` \u2014 DEADLOCKED at ${fmt(b.deadlock)}`;
    box.appendChild(el("div", { class: `seqlab-waiting${stuck ? " stuck" : ""}`, text: status }));
    if (b.hidden_generations) {
      box.appendChild(el("div", { class: "seqlab-muted", text: `${b.hidden_generations} older generations summarised` }));
    }
    for (const g of b.generations) {
      const row = el("div", { class: `seqlab-generation outcome-${g.outcome}` });
      row.appendChild(el("span", { class: "seqlab-gen-label", text: `${unit === "phase" ? "phase" : "gen"} ${g.generation}` }));
      for (const [task, index, t, waited, st] of g.arrivals) {
        const label = index === null ? task : `${task} #${index}`;
        const chip = el("span", { class: `seqlab-chip arrival-${st}`, "data-task": task, text: waited === null ? label : `${label} \u00b7 ${Number(waited).toFixed(2)} s` });
        const why = `${task} arrived at ${fmt(t)} s${index === null ? "" : " with index " + index}; ${st}` + (waited === null ? "" : ` after waiting ${fmt(waited)} s`);
        chip.addEventListener("mousemove", (evt) => tooltip.show(evt, why));
        chip.addEventListener("mouseleave", () => tooltip.hide());
        row.appendChild(chip);
      }
      let end = g.outcome;
      if (g.time !== null) end += ` at ${fmt(g.time)} s`;
      if (g.by) end += ` by ${g.by}`;
      if (g.action) end += ` (action ran in ${g.action})`;
      row.appendChild(el("span", { class: "seqlab-outcome", text: end }));
      box.appendChild(row);
    }
    body.appendChild(box);
  }
  const hidden = model.get("hidden_events") || 0;
  if (hidden) body.appendChild(el("div", { class: "seqlab-muted", text: `${hidden} events on further barriers not shown` }));
}

// ------------------------------------------------------------------ convoy

const FATE_CLASS = { delivered: "fate-ok", "dead-lettered": "fate-dead", retrying: "fate-retry", redelivering: "fate-retry", "in flight": "fate-flight", queued: "fate-queued" };

function renderConvoy(model, body, tooltip) {
  const totals = model.get("totals") || {};
  const rows = model.get("key_rows") || [];
  body.appendChild(
    el("div", {
      class: "seqlab-muted",
      text: Object.entries(totals).map(([k, v]) => `${k} ${v}`).join("  ·  "),
    }),
  );
  const consumers = model.get("consumers") || [];
  if (consumers.length) {
    const line = el("div", { class: "seqlab-consumers" });
    for (const [c, key] of consumers) {
      line.appendChild(el("span", { class: `seqlab-chip${key === null ? " idle" : ""}`, text: key === null ? `consumer ${c}: idle` : `consumer ${c}: ${key}` }));
    }
    body.appendChild(line);
  }
  const most = Math.max(1, ...rows.map((r) => r.backlog));
  const table = el("table", { class: "seqlab-table" });
  table.appendChild(
    el("tr", {}, ["key", "backlog", "", "messages, in order", "sessions"].map((h) => el("th", { text: h }))),
  );
  for (const r of rows) {
    const bar = el("span", { class: "seqlab-bar" });
    bar.style.width = `${Math.round((80 * r.backlog) / most)}px`;
    const messages = el("td", { class: "seqlab-messages" });
    if (r.hidden_messages) messages.appendChild(el("span", { class: "seqlab-muted", text: `+${r.hidden_messages} earlier ` }));
    for (const m of r.messages || []) {
      let text = `#${m.sequence} ${m.fate}`;
      if (m.fate === "dead-lettered") text += `: ${m.error || "?"}`;
      const chip = el("span", { class: `seqlab-msg ${FATE_CLASS[m.fate] || ""}`, "data-fate": m.fate, text });
      const history = (m.history || []).join("\n") || m.fate;
      chip.addEventListener("mousemove", (evt) => tooltip.show(evt, `#${m.sequence}${m.message ? " " + m.message : ""}\n${history}`));
      chip.addEventListener("mouseleave", () => tooltip.hide());
      messages.appendChild(chip);
    }
    const sessions = (r.sessions || []).map(([c, t0, t1]) => `${c}: ${fmt(t0)}..${t1 === null ? "now" : fmt(t1)}`).join(", ");
    table.appendChild(
      el("tr", { class: r.dead ? "has-dead" : "", "data-key": r.key }, [
        el("td", { text: r.key }),
        el("td", { text: r.backlog }),
        el("td", {}, [bar]),
        messages,
        el("td", { class: "seqlab-muted", text: sessions }),
      ]),
    );
  }
  body.appendChild(table);
  const hidden = model.get("hidden_keys") || 0;
  if (hidden) body.appendChild(el("div", { class: "seqlab-muted", text: `${hidden} more keys summarised` }));
}

// ------------------------------------------------------------------ ring

function renderRing(model, body, tooltip) {
  const size = model.get("size") || 8;
  const cursor = model.get("cursor");
  const claimed = model.get("claimed");
  const stages = model.get("stages") || [];
  const gating = new Set(model.get("gating") || []);
  const producer = model.get("producer") || {};
  const low = stages.length ? Math.min(...stages.map((s) => s.sequence)) : cursor;
  const shown = Math.min(size, 64);
  const R = 95;
  const C = 125;
  const svg = el("svg:svg", { class: "seqlab-ring-svg", width: 250, height: 250, viewBox: "0 0 250 250" });
  for (let i = 0; i < shown; i++) {
    const seq = cursor >= 0 ? cursor - ((((cursor - i) % shown) + shown) % shown) : i - shown;
    let cls = "slot-empty";
    if (low < seq && seq <= cursor) cls = "slot-published";
    else if (cursor < seq && seq <= claimed) cls = "slot-claimed";
    const angle = (2 * Math.PI * i) / shown - Math.PI / 2;
    const dot = el("svg:circle", {
      class: `seqlab-slot ${cls}`,
      cx: C + R * Math.cos(angle),
      cy: C + R * Math.sin(angle),
      r: Math.max(3, Math.min(10, 280 / shown)),
    });
    hoverable(dot, tooltip, `slot ${i}: sequence ${seq} (${cls.slice(5)})`);
    svg.appendChild(dot);
  }
  // Every stage's cursor on the ring: a pointer from the centre to the slot it has reached.
  stages.forEach((s, n) => {
    if (s.sequence < 0) return;
    const angle = (2 * Math.PI * (((s.sequence % shown) + shown) % shown)) / shown - Math.PI / 2;
    const r0 = 30 + 10 * (n % 4);
    const line = el("svg:line", {
      class: `seqlab-stage-cursor wait-${n % 4}`,
      "data-stage": s.name,
      x1: C + r0 * Math.cos(angle),
      y1: C + r0 * Math.sin(angle),
      x2: C + (R - 12) * Math.cos(angle),
      y2: C + (R - 12) * Math.sin(angle),
    });
    hoverable(line, tooltip, `${s.name} at ${s.sequence}`);
    svg.appendChild(line);
  });
  svg.appendChild(el("svg:text", { class: "seqlab-ring-label", x: C, y: C - 4, "text-anchor": "middle", text: `cursor ${cursor}` }));
  svg.appendChild(el("svg:text", { class: "seqlab-axis-label", x: C, y: C + 12, "text-anchor": "middle", text: `size ${size}${model.get("size_known") ? "" : "?"}` }));

  // The stages as a graph: columns by depth, an arrow from each stage to those after it.
  const depth = new Map();
  const byName = new Map(stages.map((s) => [s.name, s]));
  const depthOf = (name, seen = new Set()) => {
    if (depth.has(name)) return depth.get(name);
    if (seen.has(name)) return 0;
    seen.add(name);
    const s = byName.get(name);
    const d = s && s.after.length ? 1 + Math.max(...s.after.map((a) => depthOf(a, seen))) : 1;
    depth.set(name, d);
    return d;
  };
  stages.forEach((s) => depthOf(s.name));
  const cols = new Map();
  for (const s of stages) {
    const d = depth.get(s.name);
    if (!cols.has(d)) cols.set(d, []);
    cols.get(d).push(s);
  }
  const maxDepth = Math.max(0, ...cols.keys());
  const rowsMax = Math.max(1, ...[...cols.values()].map((c) => c.length));
  const gw = 120 * (maxDepth + 1) + 20;
  const gh = Math.max(80, 44 * rowsMax + 20);
  const graph = el("svg:svg", { class: "seqlab-stage-graph", width: gw, height: gh, viewBox: `0 0 ${gw} ${gh}` });
  const pos = new Map();
  pos.set("producer", [10, gh / 2 - 16]);
  for (const [d, col] of cols) col.forEach((s, i) => pos.set(s.name, [10 + 120 * d, (gh / (col.length + 1)) * (i + 1) - 16]));
  const node = (name, label, cls, tip) => {
    const [nx, ny] = pos.get(name);
    const g = el("svg:g", { class: `seqlab-stage-node ${cls}`, "data-stage": name });
    g.appendChild(el("svg:rect", { x: nx, y: ny, width: 100, height: 32, rx: 4 }));
    g.appendChild(el("svg:text", { x: nx + 50, y: ny + 13, "text-anchor": "middle", text: shorten(label[0], 16) }));
    g.appendChild(el("svg:text", { class: "seqlab-axis-label", x: nx + 50, y: ny + 26, "text-anchor": "middle", text: label[1] }));
    hoverable(g, tooltip, tip);
    graph.appendChild(g);
  };
  const edge = (a, b, cls) => {
    const [ax, ay] = pos.get(a);
    const [bx, by] = pos.get(b);
    graph.appendChild(el("svg:line", { class: `seqlab-stage-edge ${cls}`, x1: ax + 100, y1: ay + 16, x2: bx - 2, y2: by + 16, "marker-end": "url(#seqlab-ring-arrow)" }));
  };
  const defs = el("svg:defs");
  const arrowHead = el("svg:marker", { id: "seqlab-ring-arrow", viewBox: "0 0 8 8", refX: 7, refY: 4, markerWidth: 7, markerHeight: 7, orient: "auto" });
  arrowHead.appendChild(el("svg:path", { d: "M0 0 L8 4 L0 8 z", class: "seqlab-arrowhead" }));
  defs.appendChild(arrowHead);
  graph.appendChild(defs);
  for (const s of stages) {
    if (!s.after.length) {
      edge("producer", s.name, "");
      continue;
    }
    for (const a of s.after) {
      if (pos.has(a)) edge(a, s.name, "");
    }
  }
  node("producer", ["producer", producer.waiting ? "WAITING: ring full" : `cursor ${cursor}`], producer.waiting ? "waiting" : "", model.get("producer_text") || "producer");
  for (const s of stages) {
    const mean = s.batches ? (s.events / s.batches).toFixed(1) : "-";
    const busy = s.waiting_for === null ? "" : ` waits ${s.waiting_for}`;
    node(s.name, [s.name, `at ${s.sequence}${busy}`], gating.has(s.name) ? "gating" : "", `${s.name}: sequence ${s.sequence}, lag ${s.lag}, ${s.batches} batches (largest ${s.largest}, mean ${mean})${gating.has(s.name) ? ", gates the producer" : ""}`);
  }

  const table = el("table", { class: "seqlab-table" });
  table.appendChild(el("tr", {}, ["stage", "sequence", "lag", "batches", "largest", "mean", "after", ""].map((h) => el("th", { text: h }))));
  for (const s of stages) {
    table.appendChild(
      el("tr", { "data-stage": s.name }, [
        el("td", { text: s.name }),
        el("td", { text: s.sequence }),
        el("td", { text: s.lag }),
        el("td", { text: s.batches }),
        el("td", { text: s.largest }),
        el("td", { text: s.batches ? (s.events / s.batches).toFixed(1) : "-" }),
        el("td", { text: (s.after || []).join(", ") }),
        el("td", { text: (gating.has(s.name) ? "gates producer" : "") + (s.waiting_for === null ? "" : ` waits for ${s.waiting_for}`) }),
      ]),
    );
  }
  body.appendChild(el("div", { class: "seqlab-ring" }, [svg, el("div", {}, [graph, table])]));
  body.appendChild(el("div", { class: `seqlab-producer${producer.waiting ? " waiting" : ""}`, text: model.get("producer_text") || "" }));
  const hidden = model.get("hidden_events") || 0;
  if (hidden) body.appendChild(el("div", { class: "seqlab-muted", text: `${hidden} events on further stages not shown` }));
}

// ------------------------------------------------------------------ entry point

const RENDERERS = { timeline: renderTimeline, barrier: renderBarrier, convoy: renderConvoy, ring: renderRing };

function render({ model, el: host }) {
  const root = el("div", { class: "seqlab-view" });
  host.appendChild(root);
  const kind = model.get("view_kind") || "timeline";
  const view = { zoom: 1, width: host.clientWidth || 720, uid: Math.random().toString(36).slice(2) };

  const bar = el("div", { class: "seqlab-toolbar" });
  const title = el("span", { class: "seqlab-title" });
  const live = el("span", { class: "seqlab-live", text: "live" });
  bar.appendChild(title);
  bar.appendChild(live);
  if (kind === "timeline") {
    const button = (text, label, fn) => {
      const b = el("button", { class: "seqlab-button", title: label, "aria-label": label, text });
      b.addEventListener("click", fn);
      bar.appendChild(b);
    };
    button("−", "zoom out", () => { view.zoom = Math.max(1, view.zoom / 2); draw(); });
    button("+", "zoom in", () => { view.zoom = Math.min(256, view.zoom * 2); draw(); });
    button("fit", "fit to width", () => { view.zoom = 1; draw(); });
  }
  root.appendChild(bar);
  // The time scrubber: replays a finished trace through the view (the kernel recomputes the
  // state at the chosen time); shown only when the view can be replayed.
  const scrubber = el("div", { class: "seqlab-scrubber" });
  const slider = el("input", { type: "range", min: 0, max: 1000, value: 1000, class: "seqlab-scrub", "aria-label": "replay up to this time" });
  const scrubLabel = el("span", { class: "seqlab-scrub-label" });
  scrubber.appendChild(el("span", { class: "seqlab-muted", text: "replay" }));
  scrubber.appendChild(slider);
  scrubber.appendChild(scrubLabel);
  root.appendChild(scrubber);
  let scrubEnd = 0;
  slider.addEventListener("input", () => {
    const v = Number(slider.value);
    const n = v >= 1000 ? -1 : Math.round((scrubEnd * v) / 1000);
    scrubLabel.textContent = n < 0 ? "end" : `first ${n} of ${scrubEnd} events`;
    model.set("scrub", n);
    model.save_changes();
  });
  const body = el("div", { class: "seqlab-body" });
  root.appendChild(body);
  const tooltip = makeTooltip(root);

  let frame = 0;
  function draw() {
    frame = 0;
    title.textContent = model.get("title") || { timeline: "Timeline", barrier: "Barriers", convoy: "Convoy", ring: "Ring" }[kind] || kind;
    live.style.display = model.get("live") ? "inline-block" : "none";
    const scrubbable = model.get("scrubbable");
    scrubber.style.display = scrubbable ? "flex" : "none";
    if (model.get("scrub") < 0) {
      // Showing the end: remember how many events the whole run has, for the slider's scale.
      scrubEnd = model.get("steps") || 0;
      slider.value = 1000;
      scrubLabel.textContent = "end";
    }
    root.dataset.scrub = String(model.get("scrub"));
    const scroll = body.querySelector(".seqlab-scroll");
    const left = scroll ? scroll.scrollLeft : 0;
    body.replaceChildren();
    (RENDERERS[kind] || renderTimeline)(model, body, tooltip, view);
    const again = body.querySelector(".seqlab-scroll");
    if (again) again.scrollLeft = left;
  }
  function schedule() {
    if (!frame) frame = requestAnimationFrame(draw);
  }
  if (kind === "timeline") {
    body.addEventListener(
      "wheel",
      (evt) => {
        if (!(evt.ctrlKey || evt.metaKey)) return;
        evt.preventDefault();
        view.zoom = Math.min(256, Math.max(1, view.zoom * (evt.deltaY < 0 ? 1.25 : 0.8)));
        schedule();
      },
      { passive: false },
    );
  }
  model.on("change", schedule);
  let observer = null;
  if (typeof ResizeObserver !== "undefined") {
    observer = new ResizeObserver(() => {
      const w = host.clientWidth;
      if (w && Math.abs(w - view.width) > 2) {
        view.width = w;
        schedule();
      }
    });
    observer.observe(host);
  }
  draw();
  return () => {
    model.off("change", schedule);
    if (observer) observer.disconnect();
    if (frame) cancelAnimationFrame(frame);
  };
}

export default { render };
