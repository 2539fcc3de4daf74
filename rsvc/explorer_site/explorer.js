/* RSVC concept explorer: plain JavaScript, no dependencies, works from file:// (no fetch: the data
   are <script> files). window.RSVC_INDEX (data/index.js) lists the classes; a class page loads
   data/<file>.js, which calls RSVC.classLoaded(page). Numbers carry their exact value in data-v. */
(function () {
  "use strict";
  var IDX = window.RSVC_INDEX;
  var $ = function (id) { return document.getElementById(id); };
  var classes = IDX.classes;
  var analysed = classes.filter(function (c) { return c.status !== "skipped"; });
  var skipped = classes.filter(function (c) { return c.status === "skipped"; });
  var byId = new Map(classes.map(function (c) { return [c.id, c]; }));
  var models = IDX.models;
  var GROUPS = [["top_real", "top real"], ["over", "over-predicted"], ["under", "under-predicted"]];

  function esc(s) {
    return String(s).replace(/[&<>"']/g, function (ch) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[ch];
    });
  }
  function fmt(v) {
    if (v === null || v === undefined) return "–";
    if (v !== 0 && (Math.abs(v) < 0.001 || Math.abs(v) >= 1e4)) return v.toExponential(2);
    return v.toFixed(3);
  }
  function num(key, v, cls) {
    var count = key.slice(-8) === "n_unique";
    return '<span class="num' + (cls ? " " + cls : "") + '" data-key="' + key + '" data-v="' +
      (v === null || v === undefined ? "" : String(v)) + '">' + (count && v !== null ? String(v) : fmt(v)) + "</span>";
  }

  // ------------------------------------------------------------------ the class index
  var COLUMNS = [
    { key: "name", label: "class", type: "text", get: function (c) { return c.name; } },
    { key: "mmcs", label: "MMCS", type: "num", title: "this class's MMCS (Pearson) at pre_logits",
      get: function (c) { return c.mmcs; } },
  ];
  IDX.directions.forEach(function (d, i) {
    var of = function (f) { return function (c) { return c.dirs ? c.dirs[d.key][f] : null; }; };
    var who = d.target + " from " + d.source;
    COLUMNS.push(
      { key: "d" + i + ".n_unique", label: "unique", group: i, type: "num", get: of("n_unique"),
        title: "concepts of " + d.target + " flagged unique (not represented by " + d.source + ")" },
      { key: "d" + i + ".importance_unique", label: "importance", group: i, type: "num", get: of("importance_unique"),
        title: "summed importance of those unique concepts (" + who + ")" },
      { key: "d" + i + ".min_cmcs", label: "lowest CMCS", group: i, type: "num", get: of("min_cmcs"),
        title: "the lowest CMCS (Pearson) of the class's concepts (" + who + ")" },
      { key: "d" + i + ".mean_cmcs", label: "mean CMCS", group: i, type: "num", get: of("mean_cmcs"),
        title: "mean CMCS (Pearson) of the class's concepts (" + who + ")" }
    );
  });
  var colOf = new Map(COLUMNS.map(function (c) { return [c.key, c]; }));
  var state = { sort: null, desc: false, name: "", filters: {}, sel: 0, list: analysed.slice() };

  function parseFilter(text) {
    var t = text.replace(/\s+/g, "");
    if (!t) return null;
    var m = t.match(/^(-?[\d.eE+-]+)\.\.(-?[\d.eE+-]+)$/);
    if (m) { var lo = +m[1], hi = +m[2]; return function (v) { return v !== null && v >= lo && v <= hi; }; }
    m = t.match(/^(<=|>=|<|>|=)?(-?[\d.eE+-]+)$/);
    if (!m || isNaN(+m[2])) return undefined;  // not understood: ignored, the box turns red
    var x = +m[2], op = m[1] || "=";
    return function (v) {
      if (v === null) return false;
      return op === "<" ? v < x : op === ">" ? v > x : op === "<=" ? v <= x : op === ">=" ? v >= x : v === x;
    };
  }

  function computeList() {
    var q = state.name.toLowerCase();
    var tests = [];
    Object.keys(state.filters).forEach(function (key) {
      var f = state.filters[key];
      if (f) tests.push([colOf.get(key).get, f]);
    });
    var list = analysed.filter(function (c) {
      if (q && c.name.toLowerCase().indexOf(q) < 0 && c.id.toLowerCase().indexOf(q) < 0) return false;
      return tests.every(function (t) { var v = t[0](c); return t[1](v === undefined ? null : v); });
    });
    if (state.sort) {
      var col = colOf.get(state.sort), sign = state.desc ? -1 : 1;
      list.sort(function (x, y) {  // stable; missing values last in both directions
        var a = col.get(x), b = col.get(y);
        if (a === null || a === undefined) return b === null || b === undefined ? 0 : 1;
        if (b === null || b === undefined) return -1;
        if (col.type === "text") return sign * a.localeCompare(b);
        return sign * (a < b ? -1 : a > b ? 1 : 0);
      });
    }
    state.list = list;
  }

  function rowHtml(c, i) {
    var cells = ['<td class="name"><a href="#' + encodeURIComponent(c.id) + '">' + esc(c.name) +
      "</a> <small>" + esc(c.id) + "</small>" + (c.status === "partial" ? ' <span class="badge warn" title="' +
      esc(c.reason) + '">partial</span>' : "") + "</td>"];
    for (var j = 1; j < COLUMNS.length; j++) {
      var col = COLUMNS[j], v = col.get(c);
      var hot = col.key.slice(-8) === "n_unique" && v > 0 ? "hot" : "";
      cells.push("<td>" + num(col.key, v === undefined ? null : v, hot) + "</td>");
    }
    return '<tr data-id="' + esc(c.id) + '"' + (i === state.sel ? ' class="sel"' : "") + ">" + cells.join("") + "</tr>";
  }

  function renderRows() {
    computeList();
    state.sel = Math.min(state.sel, Math.max(0, state.list.length - 1));
    $("rows").innerHTML = state.list.map(rowHtml).join("");
    $("shown").textContent = state.list.length + " of " + analysed.length + " analysed classes shown";
    document.querySelectorAll("#classes th[data-key]").forEach(function (th) {
      th.classList.toggle("asc", th.dataset.key === state.sort && !state.desc);
      th.classList.toggle("desc", th.dataset.key === state.sort && state.desc);
    });
  }

  function buildIndex() {
    var head1 = ['<th rowspan="2" data-key="name" title="sort by name">class</th>',
      '<th rowspan="2" data-key="mmcs" title="' + esc(COLUMNS[1].title) + '">MMCS<br><small>pre_logits</small></th>'];
    IDX.directions.forEach(function (d) {
      head1.push('<th colspan="4" class="group">concepts of <b>' + esc(d.target) + "</b> predicted from " +
        esc(d.source) + " <small>(" + esc(d.key) + ")</small></th>");
    });
    var head2 = [], filters = ['<td><input id="filter" type="search" placeholder="filter by name or id (/)"></td>'];
    COLUMNS.slice(1).forEach(function (col) {
      if (col.group !== undefined) head2.push('<th data-key="' + col.key + '" title="' + esc(col.title) + '">' + col.label + "</th>");
      filters.push('<td><input class="numfilter" data-key="' + col.key + '" placeholder="e.g. &lt;0.3" title="' +
        "filter: <x, >x, <=x, >=x, x, or a..b" + '"></td>');
    });
    var skippedHtml = skipped.length ? "<h2>Skipped classes (" + skipped.length + ")</h2><table id=\"skipped\"><tr><th>class</th><th>reason</th></tr>" +
      skipped.map(function (c) {
        return '<tr data-id="' + esc(c.id) + '"><td>' + esc(c.name) + " <small>" + esc(c.id) + "</small></td><td>" + esc(c.reason) + "</td></tr>";
      }).join("") + "</table>" : "<p class=\"muted\">No class was skipped.</p>";
    $("view-index").innerHTML =
      '<p class="intro">Every analysed class of <b>' + esc(IDX.pair) + "</b>. A concept is <em>unique</em> when its CMCS is " +
      "significantly below " + IDX.similarity_threshold + " and below its stability floor, discovered at false-discovery rate " +
      IDX.fdr + " (" + (IDX.fdr_method === "by" ? "Benjamini-Yekutieli" : "Benjamini-Hochberg") + " over every concept of the pair; " +
      "the tidy table's <code>unique</code> and <code>q_unique</code>). " +
      "Click a column to sort, type in the boxes below it to filter, open a class for its concepts and patches. " +
      '<span id="shown"></span></p>' +
      '<table id="classes"><thead><tr>' + head1.join("") + "</tr><tr>" + head2.join("") + '</tr><tr class="filters">' +
      filters.join("") + '</tr></thead><tbody id="rows"></tbody></table>' + skippedHtml;
    document.querySelectorAll("#classes th[data-key]").forEach(function (th) {
      th.addEventListener("click", function () { sortBy(th.dataset.key); });
    });
    $("filter").addEventListener("input", function (e) { state.name = e.target.value; state.sel = 0; renderRows(); });
    document.querySelectorAll(".numfilter").forEach(function (box) {
      box.addEventListener("input", function () {
        var f = parseFilter(box.value);
        box.classList.toggle("bad", f === undefined);
        state.filters[box.dataset.key] = f || null;
        state.sel = 0;
        renderRows();
      });
    });
    $("rows").addEventListener("click", function (e) {
      var tr = e.target.closest("tr");
      if (tr && e.target.tagName !== "A") location.hash = "#" + encodeURIComponent(tr.dataset.id);
    });
    renderRows();
  }

  function sortBy(key) {
    if (state.sort === key) state.desc = !state.desc;
    else { state.sort = key; state.desc = colOf.get(key).type === "num" && key.slice(-8) !== "min_cmcs" &&
      key.slice(-9) !== "mean_cmcs" && key !== "mmcs"; }  // counts and importance: largest first
    renderRows();
  }

  function moveSelection(step) {
    if (!state.list.length) return;
    state.sel = Math.max(0, Math.min(state.list.length - 1, state.sel + step));
    var rows = $("rows").children;
    for (var i = 0; i < rows.length; i++) rows[i].classList.toggle("sel", i === state.sel);
    rows[state.sel].scrollIntoView({ block: "nearest" });
  }

  // ------------------------------------------------------------------ class pages
  var pages = new Map(), waiting = new Map(), current = null;
  window.RSVC = {
    classLoaded: function (page) {
      pages.set(page.class_id, page);
      var done = waiting.get(page.class_id);
      if (done) { waiting.delete(page.class_id); done.forEach(function (f) { f(page); }); }
    },
  };

  function loadClass(entry, then) {
    if (pages.has(entry.id)) return then(pages.get(entry.id));
    if (waiting.has(entry.id)) return waiting.get(entry.id).push(then);
    waiting.set(entry.id, [then]);
    var s = document.createElement("script");
    s.src = "data/" + entry.file + ".js";
    s.onerror = function () {
      waiting.delete(entry.id);
      console.error("RSVC explorer: cannot load " + s.src);
      $("view-class").innerHTML = '<p class="error">The data of this class (' + esc(s.src) + ") cannot be loaded.</p>";
    };
    document.head.appendChild(s);
  }

  function neighbours(id) {
    var order = state.list.some(function (c) { return c.id === id; }) ? state.list : analysed;
    var i = order.findIndex(function (c) { return c.id === id; });
    return { prev: i > 0 ? order[i - 1] : null, next: i >= 0 && i < order.length - 1 ? order[i + 1] : null, i: i, n: order.length };
  }

  function tiles(page, list, group) {
    var sp = page.sprite;
    if (!list.length) return '<span class="muted">none</span>';
    return list.map(function (t) {
      var x = (t[0] % sp.cols) * sp.size, y = Math.floor(t[0] / sp.cols) * sp.size;
      return '<img class="tile ' + group + '" src="' + sp.src + '" width="' + sp.size + '" height="' + sp.size +
        '" style="object-position:-' + x + "px -" + y + 'px" data-tile="' + t[0] + '" alt="" title="' +
        esc(page.tiles[t[0]]) + "\nreal " + t[1] + ", predicted " + t[2] + '">';
    }).join("");
  }

  function ci(r, key) {
    return '<span class="ci">[' + num(key + "_ci_low", r[key + "_ci_low"]) + ", " + num(key + "_ci_high", r[key + "_ci_high"]) + "]</span>";
  }

  function conceptCard(page, model, part, r) {
    var rows = [
      ["CMCS (Pearson)", num("cmcs_pearson", r.cmcs_pearson, "big") + " " + ci(r, "cmcs_pearson"),
        part.source + " → " + model + " on held-out images, 95 % bootstrap interval"],
      ["SMCS (Pearson)", num("smcs_pearson", r.smcs_pearson) + " " + ci(r, "smcs_pearson"), model + " → " + model + " baseline"],
      ["CMCS / SMCS (Spearman)", num("cmcs_spearman", r.cmcs_spearman) + " / " + num("smcs_spearman", r.smcs_spearman), ""],
      ["SMCS − CMCS", num("delta_pearson", r.delta_pearson), ""],
      ["MCS (Pearson)", num("mcs_pearson", r.mcs_pearson) + " " + ci(r, "mcs_pearson") + " p " + num("mcs_p_value", r.mcs_p_value),
        "max correlation with a concept of " + part.source + " on the shared images; p against the permutation null"],
      ["importance", num("importance", r.importance), "concept integrated gradients for the class"],
      ["replacement", "l2 " + num("l2", r.l2) + " · KL " + num("kl", r.kl) + " · match " + num("match_acc", r.match_acc),
        "replace the concept by its prediction from " + part.source + ": change of " + model + "'s output"],
      ["stability floor", num("stability_self_mcs", r.stability_self_mcs) + " · cv CMCS " + num("cv_cmcs_pearson", r.cv_cmcs_pearson),
        "MCS of the concept with itself over restarts; CMCS on the held-out regression folds"],
      ["unique test", "p " + num("p_unique", r.p_unique) + " · q " + num("q_unique", r.q_unique),
        "p: one-sided test of CMCS below the threshold and the stability floor; q: its false-discovery adjusted value (unique when q <= " + IDX.fdr + ")"],
      ["note", r.note ? esc(r.note) : "", "why a number is NaN (empty: all defined)"],
    ];
    var views = '<div class="views">' + GROUPS.map(function (g) {
      return '<div class="view ' + g[0] + '"><span class="label">' + g[1] + "</span>" + tiles(page, r.views[g[0]], g[0]) + "</div>";
    }).join("") + "</div>";
    var id = model + "-" + r.concept;
    return '<article class="concept' + (r.unique ? " unique" : "") + '" id="c-' + esc(id) + '" data-concept="' + esc(id) +
      '" tabindex="-1"><header><a href="#' + encodeURIComponent(page.class_id) + "/" + encodeURIComponent(id) + '">' +
      esc(model) + " · concept " + r.concept + "</a>" + (r.unique ? ' <span class="badge">unique</span>' : "") +
      (r.unique === null ? ' <span class="muted">unique: undefined</span>' : "") +
      '</header><div class="body"><table class="nums">' + rows.map(function (x) {
        return '<tr title="' + esc(x[2]) + '"><th>' + x[0] + "</th><td>" + x[1] + "</td></tr>";
      }).join("") + "</table>" + views + "</div></article>";
  }

  var VIRIDIS = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
  function colour(v) {
    if (v === null) return "#ccc";
    var t = Math.max(0, Math.min(1, v)) * (VIRIDIS.length - 1), i = Math.min(Math.floor(t), VIRIDIS.length - 2), f = t - i;
    var c = VIRIDIS[i].map(function (x, j) { return Math.round(x + f * (VIRIDIS[i + 1][j] - x)); });
    return "rgb(" + c.join(",") + ")";
  }

  function drawMatrix(page, method) {
    var m = page.mmcs[method], canvas = $("mmcs");
    if (!m) { canvas.hidden = true; return; }
    var la = m.layers_a.length, lb = m.layers_b.length;
    var cell = Math.max(4, Math.min(22, Math.floor(520 / Math.max(la, lb))));
    canvas.width = lb * cell; canvas.height = la * cell;
    var ctx = canvas.getContext("2d");
    for (var i = 0; i < la; i++) for (var j = 0; j < lb; j++) {
      ctx.fillStyle = colour(m.matrix[i][j]); ctx.fillRect(j * cell, i * cell, cell, cell);
    }
    canvas.onmousemove = function (e) {
      var r = canvas.getBoundingClientRect(), i = Math.floor((e.clientY - r.top) / cell), j = Math.floor((e.clientX - r.left) / cell);
      if (i < 0 || j < 0 || i >= la || j >= lb) return;
      $("mmcs-cell").textContent = models[0] + " " + m.layers_a[i] + " × " + models[1] + " " + m.layers_b[j] + ": MMCS " + fmt(m.matrix[i][j]);
    };
  }

  function renderClass(entry, page, focus) {
    var nb = neighbours(entry.id);
    var link = function (c, text, key) {
      return c ? '<a href="#' + encodeURIComponent(c.id) + '" title="' + esc(c.name) + " (" + key + ')">' + text + "</a>" : '<span class="muted">' + text + "</span>";
    };
    var summary = IDX.directions.map(function (d) {
      var s = entry.dirs[d.key];
      return "<li>" + esc(d.target) + " from " + esc(d.source) + ": " + num(d.key + ".n_unique", s.n_unique) + " of " + s.n +
        " concepts unique (importance " + num(d.key + ".importance_unique", s.importance_unique) + "), lowest CMCS " +
        num(d.key + ".min_cmcs", s.min_cmcs) + ", mean " + num(d.key + ".mean_cmcs", s.mean_cmcs) + "</li>";
    }).join("");
    var sections = models.map(function (model) {
      var part = page.concepts[model];
      return '<section class="model"><h2>Concepts of ' + esc(model) + " <small>predicted from " + esc(part.source) + " (" +
        esc(part.direction) + ")</small></h2>" + (page.sprite ? "" : '<p class="muted">No patches: the held-out set was too small.</p>') +
        '<div class="cards">' + part.concepts.map(function (r) { return conceptCard(page, model, part, r); }).join("") + "</div></section>";
    }).join("");
    var hasSpearman = !!page.mmcs.spearman;
    $("view-class").innerHTML =
      '<nav class="classnav">' + link(nb.prev, "‹ previous", "p") + ' <a href="#" title="Esc">class index</a> ' +
      link(nb.next, "next ›", "n") + ' <span class="muted">' + (nb.i + 1) + " of " + nb.n + "</span></nav>" +
      '<h1 id="class-title">' + esc(page.name) + " <small>" + esc(page.class_id) + "</small></h1>" +
      (page.note ? '<p class="warn">' + esc(page.note) + "</p>" : "") +
      '<div class="top"><div><p>MMCS (Pearson) at pre_logits: ' + num("mmcs", entry.mmcs, "big") + "</p><ul>" + summary + "</ul>" +
      '<p class="muted">Patches: held-out images, one per image; green the highest real coefficients, orange the most ' +
      "over-predicted, blue the most under-predicted by the other model (the top-real images excluded). Hover for values.</p></div>" +
      '<figure class="matrix"><figcaption>Layerwise MMCS of this class: rows ' + esc(models[0]) + ", columns " + esc(models[1]) +
      (hasSpearman ? ' <select id="mmcs-method"><option>pearson</option><option>spearman</option></select>' : "") +
      '</figcaption><canvas id="mmcs"></canvas><div class="legend"><span>0</span><i></i><span>1</span></div>' +
      '<div id="mmcs-cell" class="muted">hover a cell for its layers and value (grey: undefined)</div></figure></div>' + sections;
    drawMatrix(page, "pearson");
    if (hasSpearman) $("mmcs-method").addEventListener("change", function (e) { drawMatrix(page, e.target.value); });
    $("crumbs").textContent = "› " + page.name;
    document.title = page.name + " · RSVC explorer";
    focusConcept(focus, focus !== null);
  }

  function cards() { return Array.prototype.slice.call(document.querySelectorAll("#view-class article.concept")); }

  function focusConcept(id, scroll) {
    var all = cards(), el = null;
    if (id !== null && id !== undefined) {
      el = document.getElementById("c-" + id) || (/^\d+$/.test(id) ? document.getElementById("c-" + models[0] + "-" + id) : null);
    }
    all.forEach(function (c) { c.classList.toggle("focus", c === el); });
    if (el && scroll) { el.scrollIntoView({ block: "start" }); el.focus({ preventScroll: true }); }
    if (!el && scroll !== false) window.scrollTo(0, 0);
    current.concept = el ? el.dataset.concept : null;
  }

  function stepConcept(step) {
    var all = cards(); if (!all.length) return;
    var i = all.findIndex(function (c) { return c.dataset.concept === current.concept; });
    i = i < 0 ? (step > 0 ? 0 : all.length - 1) : Math.max(0, Math.min(all.length - 1, i + step));
    var id = all[i].dataset.concept;
    history.replaceState(null, "", "#" + encodeURIComponent(current.id) + "/" + encodeURIComponent(id));
    focusConcept(id, true);
  }

  // ------------------------------------------------------------------ routing and keys
  function route() {
    var hash = decodeURIComponent(location.hash.replace(/^#/, ""));
    var slash = hash.indexOf("/");
    var id = slash < 0 ? hash : hash.slice(0, slash), concept = slash < 0 ? null : hash.slice(slash + 1);
    var entry = byId.get(id);
    if (!id || !entry) {
      current = null;
      $("view-class").hidden = true; $("view-index").hidden = false;
      $("crumbs").textContent = id ? "› unknown class " + id : "";
      document.title = "RSVC explorer · " + IDX.pair;
      return;
    }
    $("view-index").hidden = true; $("view-class").hidden = false;
    if (current && current.id === id && current.rendered) { focusConcept(concept, true); return; }
    current = { id: id, concept: null, rendered: false };
    var at = state.list.findIndex(function (c) { return c.id === id; });
    if (at >= 0) state.sel = at;
    if (entry.status === "skipped") {
      $("view-class").innerHTML = '<nav class="classnav"><a href="#">class index</a></nav><h1 id="class-title">' + esc(entry.name) +
        " <small>" + esc(entry.id) + '</small></h1><p class="warn">Skipped: ' + esc(entry.reason) + "</p>";
      current.rendered = true;
      return;
    }
    $("view-class").innerHTML = '<p class="muted">loading ' + esc(entry.name) + " …</p>";
    loadClass(entry, function (page) {
      if (!current || current.id !== id) return;
      current.rendered = true;
      renderClass(entry, page, concept);
    });
  }

  document.addEventListener("keydown", function (e) {
    if (!$("help").hidden) { $("help").hidden = true; e.preventDefault(); return; }
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    var typing = /^(INPUT|SELECT|TEXTAREA)$/.test(e.target.tagName);
    if (typing) { if (e.key === "Escape") e.target.blur(); if (e.key === "Enter") openSelected(); return; }
    var onClass = !$("view-class").hidden, k = e.key;
    if (k === "?") $("help").hidden = false;
    else if (!onClass && k === "/") { e.preventDefault(); $("filter").focus(); }
    else if (!onClass && (k === "j" || k === "ArrowDown")) { e.preventDefault(); moveSelection(1); }
    else if (!onClass && (k === "k" || k === "ArrowUp")) { e.preventDefault(); moveSelection(-1); }
    else if (!onClass && k === "Enter") openSelected();
    else if (onClass && (k === "j" || k === "ArrowDown")) { e.preventDefault(); stepConcept(1); }
    else if (onClass && (k === "k" || k === "ArrowUp")) { e.preventDefault(); stepConcept(-1); }
    else if (onClass && (k === "n" || k === "p")) {
      var nb = current && neighbours(current.id), to = nb && (k === "n" ? nb.next : nb.prev);
      if (to) location.hash = "#" + encodeURIComponent(to.id);
    } else if (onClass && (k === "Escape" || k === "u")) location.hash = "#";
  });

  function openSelected() {
    var c = state.list[state.sel];
    if (c) location.hash = "#" + encodeURIComponent(c.id);
  }

  $("pair").textContent = IDX.pair + " · " + analysed.length + " classes" + (skipped.length ? ", " + skipped.length + " skipped" : "");
  $("help-button").addEventListener("click", function () { $("help").hidden = false; });
  buildIndex();
  window.addEventListener("hashchange", route);
  route();
  window.RSVC_READY = performance.now();  // the index table is rendered (the benchmark waits for this)
})();
