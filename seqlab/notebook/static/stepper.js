// seqlab's stepper: you are the scheduler. Every button sends a message to the kernel,
// which steps the program and sends the new state back; nothing is computed here.
// Plain ES module for anywidget: no build step, no imports, no network.

function el(tag, attrs = {}, children = []) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined) continue;
    if (k === "text") node.textContent = String(v);
    else node.setAttribute(k, String(v));
  }
  for (const child of children) if (child) node.appendChild(child);
  return node;
}

const STATE_WORDS = {
  runnable: "can step",
  waiting: "waiting",
  done: "done",
  failed: "failed",
  cancelled: "cancelled",
};

function render({ model, el: host }) {
  const root = el("div", { class: "seqlab-view seqlab-stepper" });
  host.appendChild(root);
  function send(action, task) {
    root.dataset.busy = "1";
    model.send(task === undefined ? { action } : { action, task });
  }
  function button(label, title, action, attrs = {}) {
    const b = el("button", { class: "seqlab-button", title, type: "button", "data-action": action, ...attrs, text: label });
    b.addEventListener("click", () => send(action, attrs["data-task"]));
    return b;
  }

  function draw() {
    root.replaceChildren();
    delete root.dataset.busy;
    const finished = model.get("finished");
    const reached = model.get("goal_reached");
    root.dataset.steps = String(model.get("steps"));
    root.dataset.finished = finished ? "1" : "0";
    root.dataset.goalReached = reached ? "1" : "0";

    const head = el("div", { class: "seqlab-toolbar" }, [
      el("span", { class: "seqlab-title", text: model.get("title") }),
      el("span", { class: "seqlab-muted", text: `step ${model.get("steps")}` }),
    ]);
    root.appendChild(head);
    const goal = model.get("goal");
    if (goal) {
      root.appendChild(
        el("div", { class: `seqlab-stepper-goal${reached ? " reached" : ""}`, "data-goal": reached ? "reached" : "open" }, [
          el("b", { text: reached ? "Goal reached: " : "Goal: " }),
          el("span", { text: goal }),
        ]),
      );
    }

    const runnable = new Set(model.get("runnable") || []);
    const list = el("div", { class: "seqlab-stepper-tasks" });
    for (const t of model.get("tasks") || []) {
      const card = el("div", { class: `seqlab-stepper-task state-${t.state}`, "data-task": t.name, "data-state": t.state });
      const top = el("div", { class: "seqlab-stepper-task-head" }, [
        el("b", { text: t.name }),
        el("span", { class: "seqlab-stepper-state", text: STATE_WORDS[t.state] || t.state }),
      ]);
      if (runnable.has(t.name)) {
        top.appendChild(button(`step ${t.name}`, `let ${t.name} run to its next checkpoint`, "step", { "data-task": t.name }));
      }
      card.appendChild(top);
      if (t.state === "waiting" && t.waits_on) card.appendChild(el("div", { class: "seqlab-muted", text: `waits ${t.waits_on}` }));
      if (t.context && t.context.length) card.appendChild(el("pre", { class: "seqlab-stepper-code", text: t.context.join("\n") }));
      else if (t.line) card.appendChild(el("div", { class: "seqlab-muted", text: `at ${t.line}` }));
      list.appendChild(card);
    }
    root.appendChild(list);

    const watched = model.get("watched") || [];
    if (watched.length) {
      const table = el("table", { class: "seqlab-table seqlab-stepper-watch" });
      for (const [name, value] of watched) {
        table.appendChild(el("tr", { "data-watch": name }, [el("td", {}, [el("code", { text: name })]), el("td", {}, [el("code", { text: value })])]));
      }
      root.appendChild(table);
    }

    const bar = el("div", { class: "seqlab-toolbar seqlab-stepper-controls" });
    if (!finished) bar.appendChild(button("run until something happens", "step the tasks in turn until one finishes, fails or starts waiting", "run"));
    bar.appendChild(button("undo", "take back the last step", "undo"));
    bar.appendChild(button("reset", "start the program again", "reset"));
    bar.appendChild(button("let the explorer find a failure", "search schedules for a failure, then replay it here step by step", "explore"));
    const plan = model.get("plan") || [];
    const path = model.get("path") || [];
    if (plan.length && !finished && path.every((n, i) => plan[i] === n) && path.length < plan.length) {
      bar.appendChild(button(`next step of the failure (${plan[path.length]})`, "take the explorer's next step", "replay"));
    }
    root.appendChild(bar);

    const message = model.get("message");
    if (message) root.appendChild(el("div", { class: "seqlab-stepper-message", text: message }));
    root.appendChild(el("div", { class: "seqlab-stepper-path" }, [el("b", { text: "path: " }), el("span", { text: path.join(" \u2192 ") || "(no steps yet)" })]));
    const outcome = model.get("outcome");
    if (outcome) root.appendChild(el("pre", { class: "seqlab-stepper-outcome", text: outcome }));
    root.appendChild(el("div", { class: "seqlab-muted seqlab-stepper-schedule", text: `schedule: ${model.get("schedule")}` }));
  }

  model.on("change", draw);
  draw();
  return () => model.off("change", draw);
}

export default { render };
