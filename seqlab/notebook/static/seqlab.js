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
      const box = root.getBoundingClientRect();
      tip.style.left = `${evt.clientX - box.left + 12}px`;
      tip.style.top = `${evt.clientY - box.top + 12}px`;
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

// ------------------------------------------------------------------ timeline

function stateClass(label) {
  if (label === "running" || label === "done" || label === "failed") return `state-${label}`;
  return "state-waiting";
}

function renderTimeline(model, body, tooltip, view) {
  const lanes = model.get("lanes") || [];
  const states = model.get("states") || [];
  const spans = model.get("spans") || [];
  const markers = model.get("markers") || [];
  const tEnd = model.get("t_end") || 0;
  const steps = model.get("steps") || 0;
  let axis = model.get("axis") || "auto";
  if (axis === "auto") axis = tEnd > 0 ? "time" : "steps";
  const end = axis === "time" ? tEnd : Math.max(1, steps);

  const labelW = 130;
  const laneH = 24;
  const top = 22;
  const avail = Math.max(320, (view.width || 720) - 4);
  const plotW = Math.max(80, (avail - labelW - 16) * view.zoom);
  const width = labelW + plotW + 16;
  const height = top + laneH * Math.max(1, lanes.length) + 6;
  const x = (t, s) => labelW + plotW * ((axis === "time" ? t : s) / (end || 1));

  const svg = el("svg:svg", {
    class: "seqlab-timeline-svg",
    width,
    height,
    viewBox: `0 0 ${width} ${height}`,
  });

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
    const g = el("svg:g", { class: "seqlab-lane", "data-task": name });
    g.appendChild(el("svg:rect", { class: "seqlab-lane-bg", x: 0, y, width, height: laneH }));
    g.appendChild(el("svg:text", { class: "seqlab-lane-label", x: 6, y: y + 16, text: name.slice(0, 20) }));
    svg.appendChild(g);
    return g;
  });

  const waitIds = new Map();
  for (const [lane, sid, t0, t1, s0, s1, merged] of spans) {
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
    const h = cls === "state-done" ? 4 : cls === "state-failed" ? 6 : 14;
    const rect = el("svg:rect", {
      class: `seqlab-span ${cls}${extra}`,
      "data-state": label,
      x: x0,
      y: y + (laneH - h) / 2,
      width: Math.max(0.8, x1 - x0),
      height: h,
      rx: h > 6 ? 2 : 0,
    });
    const more = merged > 1 ? ` (${merged} spans summarised)` : "";
    hoverable(rect, tooltip, `${lanes[lane]}: ${label}  ${fmt(t0)} .. ${fmt(t1)} s${more}`);
    g.appendChild(rect);
  }

  for (const [lane, t, step, kind, prim, detail] of markers) {
    const g = laneGroups[lane];
    if (!g) continue;
    const y = top + lane * laneH;
    const cx = x(t, step);
    const mark = el("svg:path", {
      class: `seqlab-marker kind-${cssToken(kind)}`,
      "data-kind": kind,
      d: `M${cx} ${y + 3} l4 5 l-4 5 l-4 -5 z`,
    });
    hoverable(mark, tooltip, `${fmt(t)}  ${lanes[lane]}  ${prim}  ${kind}${detail ? "  " + detail : ""}`);
    g.appendChild(mark);
  }
  body.appendChild(el("div", { class: "seqlab-scroll" }, [svg]));

  // legend and summary
  const legend = el("div", { class: "seqlab-legend" });
  const item = (cls, text) =>
    legend.appendChild(el("span", { class: "seqlab-legend-item" }, [el("span", { class: `seqlab-swatch ${cls}` }), el("span", { text })]));
  item("state-running", "running");
  for (const [sid, i] of waitIds) item(`state-waiting wait-${i % 4}`, states[sid]);
  item("state-done", "done");
  item("state-failed", "failed");
  const dropped = model.get("dropped") || 0;
  const hidden = model.get("hidden_tasks") || 0;
  let summary = `${lanes.length} tasks, ${steps} events, ${axis === "time" ? fmt(tEnd) + " s" : "one instant: event order"}`;
  if (dropped) summary += `, ${dropped} older markers summarised`;
  if (hidden) summary += `, ${hidden} more tasks not shown`;
  legend.appendChild(el("span", { class: "seqlab-summary", text: summary }));
  body.appendChild(legend);
}

// ------------------------------------------------------------------ barrier

function renderBarrier(model, body, tooltip) {
  const barriers = model.get("barriers") || [];
  if (!barriers.length) body.appendChild(el("div", { class: "seqlab-empty", text: "no barrier events yet" }));
  for (const b of barriers) {
    const box = el("div", { class: `seqlab-barrier${b.broken ? " broken" : ""}`, "data-name": b.name });
    const parties = b.parties === null ? "?" : b.parties;
    const head = `${b.name}: generation ${b.generation}, parties ${parties}${b.broken ? ", BROKEN" : ""}`;
    box.appendChild(el("div", { class: "seqlab-heading", text: head }));
    const waiting = b.waiting || [];
    box.appendChild(
      el("div", { class: "seqlab-waiting", text: waiting.length ? `waiting: ${waiting.join(", ")}` : "nobody waiting" }),
    );
    if (b.hidden_generations) {
      box.appendChild(el("div", { class: "seqlab-muted", text: `${b.hidden_generations} older generations summarised` }));
    }
    for (const g of b.generations) {
      const row = el("div", { class: `seqlab-generation outcome-${g.outcome}` });
      row.appendChild(el("span", { class: "seqlab-gen-label", text: `gen ${g.generation}` }));
      for (const [task, index, t] of g.arrivals) {
        const chip = el("span", { class: "seqlab-chip", text: index === null ? task : `${task} #${index}` });
        chip.addEventListener("mousemove", (evt) => tooltip.show(evt, `${task} arrived at ${fmt(t)} s`));
        chip.addEventListener("mouseleave", () => tooltip.hide());
        row.appendChild(chip);
      }
      const when = g.time === null ? "" : ` at ${fmt(g.time)} s`;
      row.appendChild(el("span", { class: "seqlab-outcome", text: `${g.outcome}${when}` }));
      box.appendChild(row);
    }
    body.appendChild(box);
  }
  const hidden = model.get("hidden_events") || 0;
  if (hidden) body.appendChild(el("div", { class: "seqlab-muted", text: `${hidden} events on further barriers not shown` }));
}

// ------------------------------------------------------------------ convoy

function renderConvoy(model, body) {
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
      line.appendChild(el("span", { class: `seqlab-chip${key === null ? " idle" : ""}`, text: key === null ? `${c}: idle` : `${c}: ${key}` }));
    }
    body.appendChild(line);
  }
  const most = Math.max(1, ...rows.map((r) => r.backlog));
  const table = el("table", { class: "seqlab-table" });
  table.appendChild(
    el("tr", {}, ["key", "backlog", "", "done", "retries", "dead", "session"].map((h) => el("th", { text: h }))),
  );
  for (const r of rows) {
    const bar = el("span", { class: "seqlab-bar" });
    bar.style.width = `${Math.round((120 * r.backlog) / most)}px`;
    table.appendChild(
      el("tr", { class: r.dead ? "has-dead" : "" }, [
        el("td", { text: r.key }),
        el("td", { text: r.backlog }),
        el("td", {}, [bar]),
        el("td", { text: r.done }),
        el("td", { text: r.retries }),
        el("td", { text: r.dead }),
        el("td", { text: r.holder || "" }),
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
  svg.appendChild(el("svg:text", { class: "seqlab-ring-label", x: C, y: C - 4, "text-anchor": "middle", text: `cursor ${cursor}` }));
  svg.appendChild(el("svg:text", { class: "seqlab-axis-label", x: C, y: C + 12, "text-anchor": "middle", text: `size ${size}${model.get("size_known") ? "" : "?"}` }));
  const table = el("table", { class: "seqlab-table" });
  table.appendChild(el("tr", {}, ["stage", "sequence", "lag", "batches", "after", ""].map((h) => el("th", { text: h }))));
  for (const s of stages) {
    table.appendChild(
      el("tr", {}, [
        el("td", { text: s.name }),
        el("td", { text: s.sequence }),
        el("td", { text: s.lag }),
        el("td", { text: s.batches }),
        el("td", { text: (s.after || []).join(", ") }),
        el("td", { text: (gating.has(s.name) ? "gates producer" : "") + (s.waiting_for === null ? "" : ` waits for ${s.waiting_for}`) }),
      ]),
    );
  }
  body.appendChild(el("div", { class: "seqlab-ring" }, [svg, table]));
  const hidden = model.get("hidden_events") || 0;
  if (hidden) body.appendChild(el("div", { class: "seqlab-muted", text: `${hidden} events on further stages not shown` }));
}

// ------------------------------------------------------------------ entry point

const RENDERERS = { timeline: renderTimeline, barrier: renderBarrier, convoy: renderConvoy, ring: renderRing };

function render({ model, el: host }) {
  const root = el("div", { class: "seqlab-view" });
  host.appendChild(root);
  const kind = model.get("view_kind") || "timeline";
  const view = { zoom: 1, width: host.clientWidth || 720 };

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
  const body = el("div", { class: "seqlab-body" });
  root.appendChild(body);
  const tooltip = makeTooltip(root);

  let frame = 0;
  function draw() {
    frame = 0;
    title.textContent = model.get("title") || { timeline: "Timeline", barrier: "Barriers", convoy: "Convoy", ring: "Ring" }[kind] || kind;
    live.style.display = model.get("live") ? "inline-block" : "none";
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
