// The search page: plain JavaScript, no libraries, nothing fetched but our own API.
// Routes live in the URL hash: #/search?q=...&layer=... and #/unit/MODEL/HOOKPOINT/INDEX.
// Every piece of data is inserted with textContent, never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const FILTERS = [["model", "f-model"], ["layer", "f-layer"], ["source", "f-source"],
                 ["min_score", "f-min-score"], ["domain", "f-domain"]];
const PAGE = 10;
let nextOffset = null;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "text") node.textContent = v;
    else if (k === "class") node.className = v;
    else node.setAttribute(k, v);
  }
  for (const c of children) if (c != null) node.append(c);
  return node;
}

function setStatus(message, isError) {
  const s = $("status");
  s.textContent = message || "";
  s.className = isError ? "error" : "";
}

async function api(path, body) {
  const key = $("api-key").value.trim();
  const headers = key ? { "X-API-Key": key } : {};
  const init = body === undefined ? { headers }
    : { method: "POST", headers: { ...headers, "Content-Type": "application/json" }, body: JSON.stringify(body) };
  const resp = await fetch(path, init);
  const type = resp.headers.get("content-type") || "";
  const answer = type.includes("json") ? await resp.json() : await resp.text();
  if (!resp.ok) {
    const msg = answer && answer.error ? answer.error.message : `HTTP ${resp.status}`;
    throw new Error(msg);
  }
  return answer;
}

const fmt = (x, d = 3) => (x === null || x === undefined ? "—" : Number(x).toFixed(d));

function scoreText(s) {
  if (!s) return "unscored";
  return `${s.scorer} ${fmt(s.value)} [${fmt(s.ci95[0], 2)}, ${fmt(s.ci95[1], 2)}]`;
}

function tokensNode(tokens, levels, activations) {
  const box = el("div", { class: "toks" });
  tokens.forEach((t, i) => {
    const level = levels[i] || 0;
    const span = el("span", { class: "tok", text: t.replace(/\n/g, "↵\n") });
    if (level > 0) span.style.background = `rgba(34,160,60,${(level / 10).toFixed(2)})`;
    if (activations) span.title = activations[i] === null ? "n/a" : String(activations[i]);
    box.append(span);
  });
  return box;
}

function unitHref(unitId) {
  return "#/unit/" + unitId.split("/").map(encodeURIComponent).join("/");
}

function hitNode(h) {
  const link = el("a", { class: "uid unit-link", href: unitHref(h.unit_id), text: h.unit_id });
  const low = h.score && h.score.value < 0.2;
  const head = el("div", { class: "head" }, link,
    h.unit_name ? el("span", { class: "name", text: `“${h.unit_name}”` }) : null,
    el("span", { class: "score badge" + (low ? " low" : ""), text: scoreText(h.score) }),
    h.explanation_source === "baseline"
      ? el("span", { class: "badge baseline", text: "no-LLM baseline: frequent tokens, not a description" }) : null,
    el("span", { class: "meta", text: `semantic #${h.semantic_rank ?? "–"} · keyword #${h.keyword_rank ?? "–"}` +
      (h.similarity === null ? "" : ` · sim ${fmt(h.similarity)}`) }));
  const li = el("li", { class: "hit" + (h.match === "weak" ? " weak" : ""), "data-unit": h.unit_id },
    head, el("p", { class: "expl", text: h.explanation }));
  if (h.score) {
    li.append(el("div", { class: "meta meaning", text: `${h.score.meaning} — ${h.score.scorer_discrimination}` }));
  }
  if (h.intervention_score !== null && h.intervention_score !== undefined) {
    li.append(el("div", { class: "meta", text: `output side (${h.intervention_scorer || "intervention"}): ${fmt(h.intervention_score)}` }));
  }
  if (h.top_example_tokens) {
    li.append(tokensNode(h.top_example_tokens.map((t) => t.text), h.top_example_tokens.map((t) => t.level)));
  }
  return li;
}

function currentParams(offset) {
  const p = new URLSearchParams();
  p.set("q", $("q").value.trim());
  for (const [name, id] of FILTERS) if ($(id).value.trim() !== "") p.set(name, $(id).value.trim());
  p.set("limit", String(PAGE));
  if (offset) p.set("offset", String(offset));
  return p;
}

async function runSearch(offset) {
  const params = currentParams(offset);
  if (!params.get("q")) return;
  setStatus("searching…");
  try {
    const page = await api("/api/v1/search?" + params.toString());
    const list = $("results");
    if (!offset) list.replaceChildren();
    if (!offset && page.hits.length && page.hits.every((h) => h.match === "weak")) {
      list.append(el("li", { class: "no-match", text: "No good match: no explanation shares a word with the " +
        "query or is close to it. The closest ones:" }));
    }
    page.hits.forEach((h) => list.append(hitNode(h)));
    nextOffset = page.next_offset;
    $("more").hidden = nextOffset === null;
    const n = list.querySelectorAll("li.hit").length;
    setStatus(n ? `${n} hit(s)` : "no hits");
  } catch (e) {
    setStatus(e.message, true);
  }
}

function histogramNode(hist) {
  const W = 640, H = 170, pad = 28, n = hist.top.length, bw = (W - 2 * pad) / n;
  const peak = Math.max(1, ...hist.top, ...hist.random);
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("class", "hist"); svg.setAttribute("width", W); svg.setAttribute("height", H);
  svg.setAttribute("role", "img"); svg.setAttribute("aria-label", "activation histogram");
  const bar = (i, count, color, shift) => {
    const h = Math.sqrt(count / peak) * (H - 2 * pad);
    const r = document.createElementNS(ns, "rect");
    r.setAttribute("x", pad + i * bw + shift); r.setAttribute("width", Math.max(1, bw / 2 - 1));
    r.setAttribute("y", H - pad - h); r.setAttribute("height", h); r.setAttribute("fill", color);
    const t = document.createElementNS(ns, "title"); t.textContent = String(count); r.append(t);
    svg.append(r);
  };
  for (let i = 0; i < n; i++) { bar(i, hist.top[i], "#2f9e55", 0); bar(i, hist.random[i], "#8a8a8a", bw / 2); }
  const label = (x, text, anchor) => {
    const t = document.createElementNS(ns, "text");
    t.setAttribute("x", x); t.setAttribute("y", H - 8); t.setAttribute("font-size", "11");
    t.setAttribute("text-anchor", anchor); t.textContent = text; svg.append(t);
  };
  label(pad, fmt(hist.edges[0], 2), "start"); label(W - pad, fmt(hist.edges[n], 2), "end");
  label(W / 2, "activation (raw); bar height √count", "middle");
  return svg;
}

function windowsSection(title, windows) {
  if (!windows.length) return null;
  const box = el("div", {}, el("h3", { text: `${title} (${windows.length})` }));
  for (const w of windows) {
    box.append(el("div", { class: "meta", text: `${w.id} · ${w.domain} · ${w.doc_id} · max ${fmt(w.max, 3)}` }),
               tokensNode(w.tokens, w.levels, w.activations));
  }
  return box;
}

// How well the scorer tells right from wrong explanations (make bench-discrimination), per planted set.
function discriminationText(d) {
  if (!d) return "scorer discrimination not measured";
  const sets = [["auroc_token", "token-level"], ["auroc_context", "contextual"]]
    .filter(([k]) => d[k] != null).map(([k, name]) => `${fmt(d[k], 2)} on ${name}`);
  const weak = d.auroc_context != null && d.auroc_context < 0.85
    ? " — often cannot tell right from wrong on units whose firing depends on context" : "";
  return sets.length ? `scorer AUROC ${sets.join(", ")} planted concepts${weak}`
    : `scorer AUROC ${fmt(d.auroc, 2)} on ${d.n_concepts} planted concepts`;
}

// Steer the unit on a prompt (POST /api/v1/steer): clean and steered continuations side by side,
// the next-token KL, and the tokens whose probability rose and fell most.
function steerNode(unitId) {
  const prompt = el("input", { id: "steer-prompt", maxlength: "2000", size: "40", value: "The weather today is" });
  const mode = el("select", { id: "steer-mode" }, ...["add", "scale", "clamp", "ablate"].map((m) => el("option", { text: m })));
  const strength = el("input", { id: "steer-strength", type: "number", step: "any", size: "8", placeholder: "strength" });
  const kl = el("input", { id: "steer-kl", type: "number", step: "any", min: "0", size: "6", placeholder: "target KL" });
  const go = el("button", { id: "steer-go", type: "submit", text: "Steer" });
  const out = el("div", { id: "steer-out" });
  const form = el("form", { class: "steer" }, el("label", { text: "prompt " }, prompt), " ", mode, " ", strength,
    " ", kl, " ", go);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const body = { unit_id: unitId, prompt: prompt.value, mode: mode.value, new_tokens: 12 };
    if (strength.value !== "") body.strength = Number(strength.value);
    else if (kl.value !== "" && (mode.value === "add" || mode.value === "scale")) body.target_kl = Number(kl.value);
    out.replaceChildren(el("p", { class: "meta", text: "steering… (the model loads on the first call)" }));
    try {
      const r = await api("/api/v1/steer", body);
      const p = (x) => Number(x).toPrecision(2);
      const toks = (rows) => rows.map((t) => `${JSON.stringify(t.token)} ${p(t.p_clean)}→${p(t.p_steered)}`).join(", ");
      out.replaceChildren(
        el("div", { class: "meta", text: `${r.mode}` + (r.strength === null ? ` to ${r.ablate_to}` : ` strength ${fmt(r.strength, 3)}`) +
          ` · KL ${fmt(r.kl, 3)} nats · ${r.seconds}s` }),
        el("table", { class: "steer-texts" },
          el("tr", {}, el("th", { text: "clean" }), el("th", { text: "steered" })),
          el("tr", {}, el("td", { id: "steer-clean", text: r.prompt + r.clean }), el("td", { id: "steer-steered", text: r.prompt + r.steered }))),
        el("div", { class: "meta", text: `rose: ${toks(r.risen)}` }),
        el("div", { class: "meta", text: `fell: ${toks(r.fallen)}` }));
    } catch (err) {
      out.replaceChildren(el("p", { class: "error", text: err.message }));
    }
  });
  return el("div", { class: "card" }, form, out);
}

async function showUnit(unitId) {
  $("results-view").hidden = true;
  const view = $("unit-view");
  view.hidden = false;
  view.replaceChildren(el("p", { text: "loading…" }));
  try {
    const u = await api("/api/v1/units/" + unitId.split("/").map(encodeURIComponent).join("/"));
    const s = u.stats;
    const back = el("a", { href: "#/back", text: "← back to results" });
    back.addEventListener("click", (e) => { e.preventDefault(); history.back(); });
    const parts = [back, el("h2", { id: "unit-title", text: u.unit_id }),
      u.name ? el("div", { class: "name", text: `direction “${u.name}”` }) : null,
      el("div", { class: "meta", text: `hookpoint ${u.hookpoint} · layer ${u.layer} · ${u.source} · collection ${u.collection_id}` }),
      el("div", { class: "meta", text: `max ${fmt(s.max)} · mean ${fmt(s.mean)} · std ${fmt(s.std)} · density ${fmt(100 * (s.density || 0), 2)}% · ${s.n_tokens} tokens` })];
    if (u.output_side) {
      const toks = (rows) => rows.map((t) => JSON.stringify(t.token)).join(", ");
      parts.push(el("div", { class: "output-side" },
        el("div", { text: `promotes: ${toks(u.output_side.promoted)}` }),
        el("div", { text: `suppresses: ${toks(u.output_side.suppressed)}` }),
        el("div", { class: "meta", text: "what the unit writes, read through the unembedding (output side)" })));
    }
    if (u.steering_effect) {
      const d = u.steering_effect.details, p = (x) => Number(x).toPrecision(2);
      const toks = (rows) => rows.map((t) => `${JSON.stringify(t.token)} ${p(t.p_clean)}→${p(t.p_steered)}`).join(", ");
      parts.push(el("div", { class: "output-side steering-effect" },
        el("div", { text: `steered, rose: ${toks(u.steering_effect.promoted)}` }),
        el("div", { text: `steered, fell: ${toks(u.steering_effect.suppressed)}` }),
        el("div", { class: "meta", text: `measured by the intervention scorer: strength ${p(d.strength)}, KL ${p(d.kl)} over ${d.prompts} neutral prompts` })));
    }
    if (u.warnings.length) {
      parts.push(el("ul", { class: "warnings" }, ...u.warnings.map((w) => el("li", { text: `⚠ ${w.message}`, "data-code": w.code }))));
    }
    parts.push(el("h3", { text: "Explanations and scores" }));
    for (const e of u.explanations) {
      const origin = e.source === "baseline" ? "no-LLM baseline (frequent tokens, not a description)"
        : e.source === "imported" ? `imported (${e.explainer_model})`
        : `explainer ${e.explainer_model}` + (e.source ? ` (candidate ${e.source})` : "");
      const card = el("div", { class: "card" + (e.source === "baseline" ? " baseline" : "") },
        e.status === "ok" ? el("p", { class: "expl", text: e.text }) : el("p", { class: "failed", text: `failed: ${e.error}` }),
        el("div", { class: "meta source", text: `${origin} · ${e.prompt} · ${e.indexed_at ? "indexed" : "not indexed"}` }));
      for (const sc of e.scores) {
        const dom = Object.entries(sc.per_domain).map(([d, v]) => `${d} ${fmt(v)}`).join(", ");
        card.append(el("div", { class: "score", text: sc.status === "ok"
          ? `${sc.scorer}: ${fmt(sc.value)}  95% CI [${fmt(sc.ci95[0])}, ${fmt(sc.ci95[1])}]${dom ? "  (" + dom + ")" : ""}`
          : `${sc.scorer}: failed (${sc.error})` }));
        if (sc.meaning) card.append(el("div", { class: "meta meaning", text: sc.meaning.words }));
        card.append(el("div", { class: "meta disc", text: discriminationText(sc.discrimination) }));
      }
      parts.push(card);
    }
    if (!u.explanations.length) parts.push(el("p", { class: "meta", text: "not explained yet" }));
    parts.push(el("h3", { text: "Steer this unit" }), steerNode(u.unit_id));
    parts.push(el("h3", { text: "Activation histogram" }), histogramNode(u.histogram),
      el("div", { class: "legend meta" }, el("span", { style: "background:#2f9e55" }), "top windows",
        el("span", { style: "background:#8a8a8a" }), "random windows"));
    const pick = (kind, split) => u.windows.filter((w) => w.kind === kind && (!split || w.split === split));
    parts.push(windowsSection("Top windows shown to the explainer", pick("top", "explain")),
      windowsSection("Top windows held out", pick("top", "heldout")),
      windowsSection("Random windows", pick("random")));
    view.replaceChildren(...parts.filter((p) => p));
    setStatus("");
  } catch (e) {
    view.replaceChildren();
    setStatus(e.message, true);
  }
}

function route() {
  const hash = location.hash || "#/";
  if (hash.startsWith("#/unit/")) {
    showUnit(hash.slice(7).split("/").map(decodeURIComponent).join("/"));
    return;
  }
  $("unit-view").hidden = true;
  $("results-view").hidden = false;
  if (hash.startsWith("#/search?")) {
    const p = new URLSearchParams(hash.slice(9));
    $("q").value = p.get("q") || "";
    for (const [name, id] of FILTERS) $(id).value = p.get(name) || "";
    runSearch(0);
  }
}

function init() {
  const keyInput = $("api-key");
  keyInput.value = sessionStorage.getItem("explainer-api-key") || "";
  keyInput.addEventListener("change", () => sessionStorage.setItem("explainer-api-key", keyInput.value.trim()));
  $("search-form").addEventListener("submit", (e) => {
    e.preventDefault();
    sessionStorage.setItem("explainer-api-key", keyInput.value.trim());
    const p = currentParams(0);
    p.delete("limit");
    const target = "#/search?" + p.toString();
    if (location.hash === target) runSearch(0); else location.hash = target;
  });
  $("more").addEventListener("click", () => runSearch(nextOffset));
  window.addEventListener("hashchange", route);
  route();
}

document.addEventListener("DOMContentLoaded", init);
