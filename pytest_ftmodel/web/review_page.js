// The review page. Everything shown from the sheet goes through textContent: model answers are untrusted.
"use strict";

const token = new URLSearchParams(location.search).get("token") || "";
const state = { data: null, index: 0, criterion: 0, reviewer: "", notesTimer: null };
const $ = (id) => document.getElementById(id);

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

// Control characters (ANSI escapes among them) shown as visible \\xNN escapes, and bidirectional
// controls (which reorder what is shown: "Trojan Source") as \\uNNNN, never acted on: the same
// characters, in the same form, as pytest_ftmodel/escaping.py escapes for the terminal and the reports.
function visible(text) {
  return String(text).replace(/[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/g, (c) => {
    const code = c.charCodeAt(0);
    return code > 0xff ? "\\u" + code.toString(16).padStart(4, "0") : "\\x" + code.toString(16).padStart(2, "0");
  });
}

// Paragraphs and ``` code blocks, built as text nodes.
function renderText(container, text) {
  container.replaceChildren();
  if (text === null || text === undefined) {
    container.append(el("p", { class: "muted", text: "(none)" }));
    return;
  }
  if (String(text).trim() === "") {
    container.append(el("p", { class: "muted", text: "(empty answer)" }));
    return;
  }
  const parts = visible(text).split("```");
  parts.forEach((part, i) => {
    if (i % 2 === 1) {
      const newline = part.indexOf("\n");
      const lang = newline > 0 ? part.slice(0, newline).trim() : "";
      const code = /^[\w+#.-]{1,20}$/.test(lang) ? part.slice(newline + 1) : part.replace(/^\n/, "");
      const pre = el("pre", { class: "code" }, el("code", { text: code.replace(/\n$/, "") }));
      if (lang && code !== part) pre.dataset.lang = lang;
      container.append(pre);
    } else {
      for (const para of part.split(/\n\s*\n/)) {
        if (para.trim()) container.append(el("p", { text: para.replace(/^\n+|\n+$/g, "") }));
      }
    }
  });
}

async function api(method, path, body) {
  const response = await fetch(path, {
    method,
    headers: { "X-Review-Token": token, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: "no-store",
  });
  let payload = {};
  try { payload = await response.json(); } catch (e) { payload = { error: response.statusText }; }
  if (!response.ok) throw new Error(payload.error || response.statusText);
  return payload;
}

function setStatus(text, kind) {
  const s = $("status");
  s.textContent = text;
  s.className = "status " + (kind || "");
}

const isAB = () => state.data.kind === "ab";
const items = () => state.data.items;
const item = () => items()[state.index];

function mine(it) {
  if (isAB()) return it.judgements[state.reviewer] || null;
  return it.reviews[state.reviewer] || null;
}

function isDone(it) {
  const m = mine(it);
  if (isAB()) return m !== null;
  return m !== null && state.data.criteria.every((c) => m.scores[c] !== null && m.scores[c] !== undefined);
}

function left() { return items().filter((it) => !isDone(it)).length; }

function nextTodo(after) {
  const n = items().length;
  for (let step = 1; step <= n; step++) {
    const i = (after + step) % n;
    if (!isDone(items()[i])) return i;
  }
  return null;
}

function needName() {
  if (state.reviewer) return false;
  setStatus("Type your name first: your answers are kept under it.", "error");
  $("reviewer").focus();
  return true;
}

// Changes are applied here at once and sent one after another, in order, so typing ahead of the
// server loses nothing; the server's answer (the merged review) then replaces the local copy.
let queue = Promise.resolve();
let pending = 0;

function applyLocally(it, change) {
  if (isAB()) {
    const m = it.judgements[state.reviewer] || (change.choice ? { choice: change.choice, reason: "" } : null);
    if (!m) return;
    if (change.choice) m.choice = change.choice;
    if (change.reason !== undefined) m.reason = change.reason;
    it.judgements[state.reviewer] = m;
  } else {
    const m = it.reviews[state.reviewer] || { scores: Object.fromEntries(state.data.criteria.map((c) => [c, null])), notes: "" };
    Object.assign(m.scores, change.scores || {});
    if (change.notes !== undefined) m.notes = change.notes;
    it.reviews[state.reviewer] = m;
  }
}

function save(change, target) {
  if (needName()) return false;
  const it = target || item();
  const reviewer = state.reviewer;
  applyLocally(it, change);
  pending += 1;
  setStatus(`saving\u2026 (${pending})`, "busy");
  queue = queue.then(async () => {
    try {
      const { saved, judges } = await api("POST", "/api/save", { item: it.id, reviewer, ...change });
      pending -= 1;
      if (judges !== undefined && reviewer === state.reviewer) {
        it.judges = judges;
        if (it === item()) renderJudges(it);
      }
      if (pending === 0) {  // only then is the server's copy no older than this page's
        if (isAB()) it.judgements[reviewer] = saved;
        else it.reviews[reviewer] = saved;
        setStatus("saved", "ok");
      }
    } catch (err) {
      pending -= 1;
      setStatus("not saved: " + err.message + " \u2014 reload the page", "error");
    }
  });
  return true;
}

function firstOpenCriterion(it) {
  const m = mine(it);
  const open = state.data.criteria.findIndex((c) => !m || m.scores[c] === null || m.scores[c] === undefined);
  return open < 0 ? 0 : open;
}

function go(index) {
  flushNotes();
  const n = items().length;
  state.index = Math.max(0, Math.min(n - 1, index));
  if (!isAB()) state.criterion = firstOpenCriterion(item());
  render();
  window.scrollTo(0, 0);
}

function goNextTodo() {
  const next = nextTodo(state.index);
  if (next === null) { render(); return; }
  go(next);
}

// ---- rendering ---------------------------------------------------------------------------------

function render() {
  const it = item();
  const n = items().length;
  const remaining = left();
  $("progress-text").textContent = `item ${state.index + 1} of ${n} \u00b7 ${remaining} left`;
  $("progress-bar").style.width = `${(100 * (n - remaining)) / n}%`;
  const done = $("done");
  done.hidden = remaining !== 0;
  done.textContent = `All ${n} ${isAB() ? "comparisons judged" : "items scored"} by ${state.reviewer} \u2014 thank you. ` +
    "Everything is saved; you can still go back and change any answer, or close this tab.";
  const idLine = $("item-id") || el("div", { id: "item-id", class: "muted item-id" });
  idLine.textContent = `id ${visible(it.id)}`;
  renderText($("prompt"), it.prompt);
  $("prompt").before(idLine);
  const pair = $("pair");
  pair.replaceChildren();
  const card = (title, text, cls) => {
    const body = el("div", { class: "text" });
    renderText(body, text);
    return el("article", { class: "card " + (cls || "") }, el("h2", { text: title }), body);
  };
  if (isAB()) {
    if (it.expected !== null && it.expected !== undefined) pair.append(card("Reference answer", it.expected, "reference wide"));
    const m = mine(it);
    pair.append(card("Answer A", it.A, m && m.choice === "A" ? "chosen" : ""));
    pair.append(card("Answer B", it.B, m && m.choice === "B" ? "chosen" : ""));
    renderABPanel(it);
  } else {
    pair.append(card("Reference answer", it.expected, "reference"));
    pair.append(card("Model answer", it.generated, "answer"));
    renderReviewPanel(it);
  }
}

function navButtons() {
  return el("div", { class: "nav" },
    el("button", { type: "button", text: "\u2190 back", onclick: () => go(state.index - 1) }),
    el("button", { type: "button", text: "next \u2192", onclick: () => go(state.index + 1) }));
}

function renderReviewPanel(it) {
  const panel = $("panel");
  const m = mine(it);
  const rows = state.data.criteria.map((c, ci) => {
    const value = m ? m.scores[c] : null;
    const buttons = [1, 2, 3, 4, 5].map((v) =>
      el("button", {
        type: "button", class: "score" + (value === v ? " on" : ""), text: String(v), "aria-label": `${c} ${v}`,
        onclick: () => { state.criterion = ci; score(v); },
      }));
    return el("div", {
      class: "criterion" + (ci === state.criterion ? " current" : ""), "data-criterion": c,
      onclick: (e) => { if (e.target.tagName !== "BUTTON") { state.criterion = ci; render(); } },
    }, el("span", { class: "name", text: visible(c) }), el("span", { class: "scores" }, ...buttons));
  });
  const notes = el("textarea", { id: "notes", rows: "4", maxlength: "20000", placeholder: "notes (optional): what is wrong or good" });
  notes.value = m ? m.notes || "" : "";
  notes.dataset.item = it.id;
  notes.addEventListener("input", () => {
    clearTimeout(state.notesTimer);
    state.notesTimer = setTimeout(flushNotes, 700);
  });
  notes.addEventListener("blur", flushNotes);
  panel.replaceChildren(
    el("h2", { text: "Scores (1 = poor, 5 = excellent)" }), ...rows,
    el("div", { id: "judges", class: "judges" }),
    el("label", { class: "notes-label", for: "notes", text: "Notes" }), notes, navButtons());
  renderJudges(it);
}

// The server sends an automated judge's scores of an item only once this reviewer has scored it.
function renderJudges(it) {
  const box = $("judges");
  if (!box) return;
  const judges = Object.entries(it.judges || {});
  box.replaceChildren(...judges.map(([name, j]) => el("p", {
    class: "judge",
    text: `judge ${visible(name)}: ` + Object.entries(j.scores).map(([c, v]) => `${visible(c)} ${Number(v).toFixed(1)}`).join(", "),
  })));
}

function flushNotes() {
  clearTimeout(state.notesTimer);
  const notes = $("notes");
  if (!notes || isAB() || !state.reviewer) return;
  const it = state.data.items.find((x) => String(x.id) === notes.dataset.item);
  if (!it) return;
  const m = mine(it);
  if ((m ? m.notes || "" : "") === notes.value) return;
  save({ notes: notes.value }, it);
}

function renderABPanel(it) {
  const panel = $("panel");
  const m = mine(it);
  const choice = (label, value) => el("button", {
    type: "button", class: "choice" + (m && m.choice === value ? " on" : ""), text: label,
    onclick: () => choose(value),
  });
  const reason = el("input", { id: "reason", maxlength: "20000", placeholder: "reason (optional), Enter saves and moves on", autocomplete: "off" });
  reason.value = m ? m.reason || "" : "";
  reason.addEventListener("keydown", (e) => {
    if (e.key === "Enter") {
      e.preventDefault();
      if (!mine(item())) { setStatus("choose A, B or tie first", "error"); return; }
      if (reason.value !== (mine(item()).reason || "")) save({ reason: reason.value });
      reason.blur();
      goNextTodo();
    }
  });
  reason.addEventListener("blur", () => {
    const m = mine(it);
    if (m && reason.value !== (m.reason || "")) save({ reason: reason.value }, it);
  });
  panel.replaceChildren(
    el("h2", { text: "Which answer is better?" }),
    el("div", { class: "choices" }, choice("A", "A"), choice("Tie", "tie"), choice("B", "B")),
    el("label", { class: "notes-label", for: "reason", text: "Reason" }), reason, navButtons());
}

function score(value) {
  const c = state.data.criteria[state.criterion];
  if (!save({ scores: { [c]: value } })) return;
  if (state.criterion < state.data.criteria.length - 1) {
    state.criterion += 1;
    render();
  } else {
    goNextTodo();
  }
}

function choose(value) {
  if (!save({ choice: value })) return;
  render();
  $("reason").focus();
}

// ---- keys --------------------------------------------------------------------------------------

function onKey(e) {
  if (!state.data || e.ctrlKey || e.metaKey || e.altKey) return;
  const typing = ["INPUT", "TEXTAREA"].includes(document.activeElement.tagName);
  if (typing) {
    if (e.key === "Escape") document.activeElement.blur();
    return;
  }
  const key = e.key;
  if (key === "ArrowLeft" || (!isAB() && key === "b") || (isAB() && key === "p")) go(state.index - 1);
  else if (key === "ArrowRight" || key === "n") go(state.index + 1);
  else if (!isAB() && /^[1-5]$/.test(key)) score(Number(key));
  else if (!isAB() && key === "ArrowUp") { state.criterion = Math.max(0, state.criterion - 1); render(); }
  else if (!isAB() && key === "ArrowDown") { state.criterion = Math.min(state.data.criteria.length - 1, state.criterion + 1); render(); }
  else if (!isAB() && key === "e") $("notes").focus();
  else if (isAB() && (key === "a" || key === "A")) choose("A");
  else if (isAB() && (key === "b" || key === "B")) choose("B");
  else if (isAB() && (key === "t" || key === "T")) choose("tie");
  else if (isAB() && key === "r") $("reason").focus();
  else return;
  e.preventDefault();
}

function renderKeys() {
  const keys = isAB()
    ? [["a", "A is better"], ["b", "B is better"], ["t", "tie"], ["Enter", "save reason, next"], ["\u2190 / p", "previous"], ["\u2192 / n", "next"], ["r", "edit reason"], ["Esc", "leave a text box"]]
    : [["1\u20135", "score, then next criterion"], ["\u2191 \u2193", "choose criterion"], ["\u2190 / b", "previous item"], ["\u2192 / n", "next item"], ["e", "edit notes"], ["Esc", "leave a text box"]];
  $("keys").replaceChildren(...keys.map(([k, what]) => el("span", {}, el("kbd", { text: k }), " " + what)));
}

// The judges' scores of the items the current reviewer has scored, asked anew (another name was typed,
// or the page's reviewer is not the one the server was started for).
function refreshJudges() {
  const asked = state.reviewer;
  api("GET", "/api/sheet?reviewer=" + encodeURIComponent(asked)).then((fresh) => {
    if (asked !== state.reviewer) return;
    const byId = new Map(fresh.items.map((x) => [String(x.id), x.judges || {}]));
    for (const it of items()) it.judges = byId.get(String(it.id)) || {};
    renderJudges(item());
  }).catch(() => {});
}

async function load() {
  try {
    // no name asked: the server answers for the reviewer it was started for (--judge), never for a name
    // this browser remembers, which may not be the person reviewing now
    state.data = await api("GET", "/api/sheet");
  } catch (err) {
    setStatus("cannot load the sheet: " + err.message, "error");
    return;
  }
  if (!items().length) { setStatus("this sheet has no items", "error"); return; }
  document.body.classList.add(isAB() ? "ab" : "review");
  $("title").textContent = isAB() ? "A/B comparison" : "Review";
  $("sheet").textContent = visible(state.data.sheet);
  const remembered = localStorage.getItem("ftmodel-reviewer") || "";
  state.reviewer = (state.data.reviewer || remembered).trim();
  const who = $("reviewer");
  who.value = state.reviewer;
  who.addEventListener("change", () => {
    state.reviewer = who.value.trim();
    localStorage.setItem("ftmodel-reviewer", state.reviewer);
    for (const it of items()) it.judges = {};  // another person: the judges of the items they scored, asked anew
    refreshJudges();
    const next = nextTodo(-1);
    go(next === null ? 0 : next);
  });
  who.addEventListener("keydown", (e) => { if (e.key === "Enter") who.blur(); });
  if (state.reviewer && state.reviewer !== (state.data.reviewer || "").trim()) refreshJudges();
  renderKeys();
  const first = state.reviewer ? nextTodo(-1) : 0;
  go(first === null ? 0 : first);
  if (!state.reviewer) needName();
}

document.addEventListener("keydown", onKey);
document.addEventListener("DOMContentLoaded", load);
