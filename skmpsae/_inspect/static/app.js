// skmpsae feature browser: static, no server, no network. The index (data/index.js) sets
// window.SKMPSAE_INDEX; each atom's details live in data/atoms_NNNN.js, loaded on demand
// through a <script> tag (fetch() is refused on file:// pages), which calls SKMPSAE_CHUNK.
(function () {
  "use strict";
  var INDEX = window.SKMPSAE_INDEX;
  var A = INDEX.atoms, META = INDEX.meta, K = META.n_components;
  var chunks = {}, waiting = {};
  var state = { sort: "freq", asc: false, page: 0, query: "", perPage: 100 };
  var main = document.getElementById("main");
  var search = document.getElementById("search");

  window.SKMPSAE_CHUNK = function (c, data) {
    chunks[c] = data;
    (waiting[c] || []).forEach(function (f) { f(data); });
    delete waiting[c];
  };
  function loadChunk(c, done) {
    if (chunks[c]) { done(chunks[c]); return; }
    if (waiting[c]) { waiting[c].push(done); return; }
    waiting[c] = [done];
    var s = document.createElement("script");
    s.src = "data/atoms_" + String(c).padStart(4, "0") + ".js";
    s.onerror = function () { main.textContent = "Missing data file " + s.src; };
    document.head.appendChild(s);
  }
  function el(tag, attrs, children) {
    var e = document.createElement(tag);
    for (var k in attrs || {}) {
      if (k === "text") e.textContent = attrs[k]; else e.setAttribute(k, attrs[k]);
    }
    (children || []).forEach(function (c) { if (c) e.appendChild(c); });
    return e;
  }
  var FLAG = 0.5;  // one token with more than this share of an atom's firings is flagged
  function fmt(x, d) { return x === null || x === undefined ? "–" : Number(x).toFixed(d === undefined ? 3 : d); }
  function pct(x) { return (100 * x).toPrecision(3) + "%"; }
  function atomLink(i, label) { return el("a", { href: "#atom/" + i, text: label || ("atom " + i) }); }
  function shown(t) { return t.replace(/\n/g, "\u21b5"); }

  document.getElementById("meta").textContent =
    META.estimator + " · " + K.toLocaleString() + " atoms · " + META.n_samples.toLocaleString() + " rows" +
    (META.source ? " · " + META.source : "");

  // -- index ----------------------------------------------------------------------------------
  var COLUMNS = [
    ["id", "atom"], ["freq", "firing rate"], ["mean", "mean act."], ["max", "max act."],
  ];
  if (A.share) COLUMNS.push(["share", "top-token share"]);
  if (A.step) COLUMNS.push(["step", "mean MP step"]);
  if (A.parent) COLUMNS.push(["parent", "parent"]);
  if (A.modality) COLUMNS.push(["modality", "modality score"]);
  COLUMNS.push(["top", A.grid !== undefined ? "top images / texts" : "top tokens"]);

  function value(key, i) {
    if (key === "id") return i;
    if (key === "freq") return A.freq[i];
    if (key === "top") return A.top[i];
    return A[key][i] === null ? -Infinity : A[key][i];
  }
  function matches() {
    var q = state.query.trim().toLowerCase();
    var ids = [];
    if (/^#?\d+$/.test(q)) {
      var n = parseInt(q.replace("#", ""), 10);
      return n < K ? [n] : [];
    }
    for (var i = 0; i < K; i++) {
      if (!q || A.search[i].indexOf(q) >= 0) ids.push(i);
    }
    return ids;
  }
  function renderIndex() {
    var ids = matches();
    var key = state.sort, sign = state.asc ? 1 : -1;
    ids.sort(function (a, b) {
      var x = value(key, a), y = value(key, b);
      if (x < y) return -sign; if (x > y) return sign; return a - b;
    });
    var pages = Math.max(1, Math.ceil(ids.length / state.perPage));
    state.page = Math.min(state.page, pages - 1);
    var slice = ids.slice(state.page * state.perPage, (state.page + 1) * state.perPage);
    var head = el("tr", {}, COLUMNS.map(function (c) {
      var th = el("th", { text: c[1], "data-key": c[0] });
      if (c[0] === state.sort) th.className = "sorted" + (state.asc ? " asc" : "");
      th.onclick = function () {
        if (state.sort === c[0]) state.asc = !state.asc; else { state.sort = c[0]; state.asc = c[0] === "id" || c[0] === "step"; }
        renderIndex();
      };
      return th;
    }));
    var body = el("tbody");
    slice.forEach(function (i) {
      var cells = COLUMNS.map(function (c) {
        var k = c[0];
        if (k === "id") return el("td", {}, [atomLink(i, String(i))]);
        if (k === "freq") return el("td", { "class": "num", text: pct(A.freq[i] / META.n_samples) });
        if (k === "top") return el("td", { text: A.top[i] });
        if (k === "parent") return el("td", {}, [A.parent[i] >= 0 ? atomLink(A.parent[i], String(A.parent[i])) : null]);
        if (k === "share") {
          if (A.share[i] === null) return el("td", { "class": "num" });
          return el("td", { "class": "num" + (A.share[i] > FLAG ? " flag" : ""), text: pct(A.share[i]) + " \u201c" + shown(A.share_token[i].trim() || A.share_token[i]) + "\u201d" });
        }
        return el("td", { "class": "num", text: fmt(A[k][i], k === "step" ? 2 : 3) });
      });
      body.appendChild(el("tr", { "data-atom": i }, cells));
    });
    var prev = el("button", { text: "‹ previous" }), next = el("button", { text: "next ›" });
    prev.disabled = state.page === 0; next.disabled = state.page >= pages - 1;
    prev.onclick = function () { state.page--; renderIndex(); };
    next.onclick = function () { state.page++; renderIndex(); };
    var pager = el("div", { "class": "pager" }, [prev, el("span", {
      id: "count", text: ids.length.toLocaleString() + " atoms" + (state.query ? " match “" + state.query + "”" : "") +
        " · page " + (state.page + 1) + " of " + pages }), next]);
    main.replaceChildren(pager, el("table", { id: "atoms" }, [el("thead", {}, [head]), body]));
  }

  // -- one atom -------------------------------------------------------------------------------
  function card(title, children) { return el("div", { "class": "card" }, [el("h3", { text: title })].concat(children)); }
  function histogram(h) {
    var W = 260, H = 90, n = h.counts.length, peak = Math.max.apply(null, h.counts.concat([1]));
    var ns = "http://www.w3.org/2000/svg", svg = document.createElementNS(ns, "svg");
    svg.setAttribute("width", W); svg.setAttribute("height", H + 16); svg.setAttribute("id", "histogram");
    h.counts.forEach(function (c, b) {
      var r = document.createElementNS(ns, "rect"), bh = H * c / peak;
      r.setAttribute("x", b * W / n); r.setAttribute("width", Math.max(1, W / n - 1));
      r.setAttribute("y", H - bh); r.setAttribute("height", bh); r.setAttribute("fill", "#e07b00");
      var t = document.createElementNS(ns, "title");
      t.textContent = fmt(h.hi * b / n) + "–" + fmt(h.hi * (b + 1) / n) + ": " + c; r.appendChild(t);
      svg.appendChild(r);
    });
    [[0, "start", "0"], [W, "end", fmt(h.hi)]].forEach(function (a) {
      var t = document.createElementNS(ns, "text");
      t.setAttribute("x", a[0]); t.setAttribute("y", H + 13); t.setAttribute("font-size", "11");
      t.setAttribute("text-anchor", a[1]); t.textContent = a[2]; svg.appendChild(t);
    });
    return svg;
  }
  // The tree of atoms, from the index's parents: this atom's ancestors, then its subtree as
  // nested <details>, each link labelled P(parent | child).
  var KIDS = null;
  function kidsOf(i) {
    if (!KIDS) {
      KIDS = {};
      A.parent.forEach(function (p, c) { if (p >= 0) (KIDS[p] = KIDS[p] || []).push(c); });
    }
    return KIDS[i] || [];
  }
  function treeNode(i, depth, here) {
    var label = [atomLink(i, (i === here ? "this atom (" + i + ")" : "atom " + i))];
    if (A.parent_p[i] !== null && depth > 0) label.push(el("span", { "class": "empty", text: "  P(parent | child) = " + fmt(A.parent_p[i], 2) }));
    var kids = kidsOf(i);
    if (!kids.length) return el("div", { "class": "leaf" }, label);
    var node = el("details", {}, [el("summary", {}, label.concat([el("span", { text: " · " + kids.length + " children" })]))]);
    if (depth < 1) node.open = true;
    node.addEventListener("toggle", function () {
      if (node.open && node.children.length === 1) kids.forEach(function (k) { node.appendChild(treeNode(k, depth + 1, here)); });
    });
    if (node.open) kids.forEach(function (k) { node.appendChild(treeNode(k, depth + 1, here)); });
    return node;
  }
  function familyTree(i) {
    var chain = [], p = A.parent[i], seen = {};
    while (p >= 0 && !seen[p]) { seen[p] = 1; chain.unshift(p); p = A.parent[p]; }
    var path = el("div", { "class": "links" }, [el("b", { text: "path from the root: " })]);
    chain.forEach(function (a) { path.appendChild(atomLink(a)); path.appendChild(el("span", { text: "→ " })); });
    path.appendChild(el("span", { text: "atom " + i }));
    return el("div", { id: "tree" }, [chain.length ? path : null, treeNode(i, 0, i)]);
  }
  function bars(shares) {  // one bar per step, labelled by step; height: the share of selections
    var W = 260, H = 90, n = shares.length, peak = Math.max.apply(null, shares.concat([1e-9]));
    var ns = "http://www.w3.org/2000/svg", svg = document.createElementNS(ns, "svg");
    svg.setAttribute("width", W); svg.setAttribute("height", H + 16); svg.setAttribute("id", "steps");
    shares.forEach(function (v, t) {
      var r = document.createElementNS(ns, "rect"), bh = H * v / peak, w = W / n;
      r.setAttribute("x", t * w); r.setAttribute("width", Math.max(1, w - 2));
      r.setAttribute("y", H - bh); r.setAttribute("height", bh); r.setAttribute("fill", "#3b6fb6");
      var tip = document.createElementNS(ns, "title"); tip.textContent = "step " + (t + 1) + ": " + pct(v); r.appendChild(tip);
      svg.appendChild(r);
      if (n <= 16 || t % Math.ceil(n / 16) === 0) {
        var lab = document.createElementNS(ns, "text");
        lab.setAttribute("x", t * w + w / 2); lab.setAttribute("y", H + 13); lab.setAttribute("font-size", "11");
        lab.setAttribute("text-anchor", "middle"); lab.textContent = String(t + 1); svg.appendChild(lab);
      }
    });
    return svg;
  }
  function image(b64, shape, signed) {
    var raw = atob(b64), c = el("canvas", { width: shape[1], height: shape[0] });
    c.style.width = (shape[1] * 3) + "px"; c.style.height = (shape[0] * 3) + "px";
    var ctx = c.getContext("2d"), img = ctx.createImageData(shape[1], shape[0]);
    for (var p = 0; p < shape[0] * shape[1]; p++) {
      var v = raw.charCodeAt(p), r, g, b;
      if (signed) { var s = (v - 128) / 127; r = s > 0 ? 255 : Math.round(255 * (1 + s)); b = s < 0 ? 255 : Math.round(255 * (1 - s)); g = Math.round(255 * (1 - Math.abs(s))); }
      else { r = g = b = 255 - v; }
      img.data[4 * p] = r; img.data[4 * p + 1] = g; img.data[4 * p + 2] = b; img.data[4 * p + 3] = 255;
    }
    ctx.putImageData(img, 0, 0);
    return c;
  }
  function contextLine(ctx, peak) {  // the tokens, each shaded by the atom's activation on it
    var line = el("div", { "class": "ctx" }, [el("span", { "class": "val", text: fmt(ctx.v) })]);
    ctx.t.forEach(function (tok, k) {
      var a = ctx.a[k], s = el("span", { "class": "tok" + (k === ctx.c ? " centre" : ""), text: shown(tok) });
      if (a > 0) { s.style.background = "rgba(255,140,0," + Math.min(1, a / peak).toFixed(3) + ")"; s.setAttribute("data-act", a); }
      s.title = "row " + (ctx.row - ctx.c + k) + ": " + fmt(a);
      line.appendChild(s);
    });
    return line;
  }
  // Contexts drawn at random from bands of quantiles of the atom's activations, top band first.
  function bandList(bands, peak) {
    var out = el("div", { id: "bands" }, [el("h3", { text: "Contexts across the range (drawn at random from each band, top contexts left out)" })]);
    bands.forEach(function (b, n) {
      var range = b.hi === null ? "above " + fmt(b.lo) : (b.lo === 0 ? "up to " + fmt(b.hi) : fmt(b.lo) + "–" + fmt(b.hi));
      var box = el("div", { "class": "band", id: "band-" + n, "data-lo": b.lo, "data-hi": b.hi === null ? "" : b.hi }, [
        el("h4", { text: "Quantiles " + Math.round(100 * b.q[0]) + "–" + Math.round(100 * b.q[1]) + "% of its firings: activation " + range })]);
      if (!b.contexts.length) box.appendChild(el("p", { "class": "empty", text: "no firings here beyond the top contexts" }));
      b.contexts.forEach(function (ctx) { box.appendChild(contextLine(ctx, peak)); });
      out.appendChild(box);
    });
    return out;
  }
  function renderAtom(i) {
    if (!(i >= 0 && i < K)) { main.replaceChildren(el("p", { text: "No atom " + i + " (0 to " + (K - 1) + ")." })); return; }
    main.replaceChildren(el("p", { id: "progress", text: "Loading atom " + i + "…" }));
    var c = Math.floor(i / INDEX.chunk_size);
    loadChunk(c, function (data) {
      if (location.hash !== "#atom/" + i) return;
      var d = data[i - c * INDEX.chunk_size], parts = [];
      var nav = el("div", { "class": "links" }, [el("a", { href: "#", text: "← all atoms" }),
        i > 0 ? atomLink(i - 1, "‹ " + (i - 1)) : null, i < K - 1 ? atomLink(i + 1, (i + 1) + " ›") : null]);
      parts.push(nav, el("h2", { id: "title", text: "Atom " + i }));
      parts.push(el("p", { text: "fires in " + A.freq[i].toLocaleString() + " of " + META.n_samples.toLocaleString() +
        " rows (" + pct(A.freq[i] / META.n_samples) + "); mean activation when firing " + fmt(A.mean[i]) +
        ", max " + fmt(A.max[i]) + (d.negative ? "; " + d.negative + " firings below zero" : "") }));
      if (A.share && A.share[i] > FLAG) {
        parts.push(el("p", { "class": "flag", id: "flag", text: "\u26a0 " + pct(A.share[i]) + " of firings on \u201c" +
          shown(A.share_token[i].trim() || A.share_token[i]) + "\u201d: the contexts below may suggest a meaning this token, not the text, carries." }));
      }
      var cards = [];
      var q = d.quantiles.map(function (x) { return "q" + x[0] + " = " + fmt(x[1]); }).join(", ");
      cards.push(card("Activation when firing", [histogram(d.hist), el("div", { text: q })]));
      if (d.tokens) {
        var fired = Math.max(A.freq[i], 1);
        var tokRows = d.tokens.map(function (x) {
          return el("tr", { "class": x[1] / fired > FLAG ? "flag" : "" }, [el("td", { "class": "logit", text: shown(x[0]) }),
            el("td", { "class": "num", text: x[1].toLocaleString() }), el("td", { "class": "num", text: pct(x[1] / fired) })]);
        });
        cards.push(card("Most frequent tokens (of its firings)", [d.tokens.length ? el("table", { id: "tokens" }, [el("thead", {}, [el("tr", {}, [
          el("th", { text: "token" }), el("th", { text: "firings" }), el("th", { text: "share" })])]), el("tbody", {}, tokRows)]) :
          el("span", { "class": "empty", text: "never fires" })]));
      }
      if (d.steps) {
        var total = d.steps.reduce(function (a, b) { return a + b; }, 0) || 1;
        cards.push(card("Matching-pursuit step of selection", [bars(d.steps.map(function (s) { return s / total; }))]));
      }
      if (d.parent !== undefined) {
        var fam = [];
        fam.push(el("div", {}, [el("b", { text: "parent: " }), d.parent >= 0 ? atomLink(d.parent) : el("span", { "class": "empty", text: "none" }),
          d.parent >= 0 ? el("span", { text: " (P(parent | this) = " + fmt(d.parent_p, 2) +
            (d.parent_first !== null && d.parent_first !== undefined ? ", parent selected first in " + pct(d.parent_first) : "") + ")" }) : null]));
        var kids = el("div", { "class": "links", id: "children" }, [el("b", { text: "children: " })]);
        if (!d.children.length) kids.appendChild(el("span", { "class": "empty", text: "none" }));
        d.children.forEach(function (k) { kids.appendChild(atomLink(k[0])); });
        fam.push(kids);
        if (A.parent_p) fam.push(familyTree(i));
        cards.push(card(META.ordered ? "Hierarchy (matching-pursuit co-selection)" : "Hierarchy (co-activation)", fam));
      }
      if (!d.logits && META.logits_note) {
        cards.push(card("Direct logit effect", [el("span", { "class": "empty", id: "no-logits", text: META.logits_note })]));
      }
      if (d.logits) {
        var rows = function (list, cls) {
          return el("div", { "class": "logit " + cls }, list.map(function (x) { return el("div", { text: (x[1] > 0 ? "+" : "") + fmt(x[1], 2) + "  " + shown(x[0]) }); }));
        };
        cards.push(card("Direct logit effect", [el("div", { "class": "grid" }, [el("div", {}, [el("b", { text: "promoted" }), rows(d.logits.up, "pos")]),
          el("div", {}, [el("b", { text: "suppressed" }), rows(d.logits.down, "neg")])])]));
      }
      if (d.image) {
        var imgs = el("div", { "class": "images" }, [image(d.image, META.image_shape, true)]);
        cards.push(card("Atom", [imgs]));
      }
      parts.push(el("div", { "class": "grid" }, cards));
      if (d.vision && window.SKMPSAE_VISION) {  // image rows: static/images.js draws them
        parts.push(window.SKMPSAE_VISION(d.vision, { grid: A.grid, el: el, fmt: fmt }));
        main.replaceChildren.apply(main, parts);
        return;
      }
      parts.push(el("h3", { text: d.images ? "Top-activating images" : "Top-activating contexts" }));
      if (d.images) {
        parts.push(el("div", { "class": "images", id: "contexts" }, d.images.map(function (b, k) {
          var w = el("span", {}, [image(b, META.image_shape, false)]); w.title = "row " + d.contexts[k].row + ": " + fmt(d.contexts[k].v); return w;
        })));
      } else {
        var list = el("div", { id: "contexts" });
        if (!d.contexts.length) list.appendChild(el("p", { "class": "empty", text: "This atom never fires on these rows." }));
        // One shading scale for the page: the top activation, so that the bands compare.
        var peak = d.contexts.length ? d.contexts[0].v : 1;
        d.contexts.forEach(function (ctx) { list.appendChild(contextLine(ctx, peak)); });
        parts.push(list);
        if (d.bands && d.contexts.length) parts.push(bandList(d.bands, peak));
      }
      main.replaceChildren.apply(main, parts);
    });
  }

  function route() {
    var m = /^#atom\/(\d+)$/.exec(location.hash);
    if (m) renderAtom(parseInt(m[1], 10)); else renderIndex();
  }
  search.addEventListener("input", function () {
    state.query = search.value; state.page = 0;
    if (location.hash) location.hash = ""; else renderIndex();
  });
  window.addEventListener("hashchange", route);
  route();
})();
