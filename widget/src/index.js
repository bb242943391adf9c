// The front end of curate.maps.widget.MapWidget: an anywidget ESM module drawing the map with
// regl-scatterplot (WebGL), with a 2-D canvas on top for cluster labels and highlighted points,
// a legend (scrollable and searchable for many categories), a hover card filled by Python, and
// pan / box / lasso modes. Python sends points as binary buffers (traits _xy, _codes); the
// selection goes back as int32 row indices (trait `selection`).
import createScatterplot from "regl-scatterplot";
import { scaleLinear } from "d3-scale";

const CSS = `
.cmw{font:12px system-ui,sans-serif;color:#222;display:flex;gap:8px;position:relative}
.cmw-main{position:relative;flex:1 1 auto;min-width:200px;border:1px solid #ddd;border-radius:4px;overflow:hidden;background:#fff}
.cmw-main canvas{display:block}
.cmw-over{position:absolute;left:0;top:0;pointer-events:none}
.cmw-bar{position:absolute;left:6px;top:6px;display:flex;gap:4px;z-index:2;align-items:center}
.cmw-bar button{font:12px system-ui;padding:2px 8px;border:1px solid #bbb;background:#fff;border-radius:3px;cursor:pointer}
.cmw-bar button.on{background:#2b6cb0;color:#fff;border-color:#2b6cb0}
.cmw-count{background:rgba(255,255,255,.85);padding:2px 6px;border-radius:3px}
.cmw-side{width:230px;flex:0 0 230px;display:flex;flex-direction:column;gap:4px}
.cmw-side input{font:12px system-ui;padding:3px 5px;border:1px solid #bbb;border-radius:3px}
.cmw-legend{overflow-y:auto;border:1px solid #eee;border-radius:4px;padding:2px}
.cmw-item{display:flex;align-items:center;gap:5px;padding:1px 3px;cursor:pointer;white-space:nowrap}
.cmw-item:hover{background:#f0f4fa}
.cmw-sw{width:11px;height:11px;border-radius:2px;flex:0 0 11px}
.cmw-name{overflow:hidden;text-overflow:ellipsis;flex:1 1 auto}
.cmw-n{color:#888;font-variant-numeric:tabular-nums}
.cmw-ramp{height:12px;border-radius:2px}
.cmw-card{position:absolute;z-index:3;pointer-events:none;background:#fff;border:1px solid #bbb;border-radius:4px;box-shadow:0 2px 8px rgba(0,0,0,.2);padding:6px;width:220px;display:none}
.cmw-card img{max-width:208px;max-height:160px;display:block;margin-bottom:4px}
.cmw-card .cap{margin-bottom:4px}
.cmw-card table{font-size:11px;border-collapse:collapse}
.cmw-card td{padding:0 6px 0 0;vertical-align:top;white-space:nowrap}
.cmw-card td+td{white-space:normal;word-break:break-all}
`;

function el(tag, cls, parent) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (parent) parent.appendChild(e);
  return e;
}

function view(model, name, Type) {
  const v = model.get(name);
  if (!v) return new Type(0);
  const buf = v.buffer ? v.buffer : v;
  const off = v.byteOffset || 0;
  const len = (v.byteLength !== undefined ? v.byteLength : buf.byteLength) / Type.BYTES_PER_ELEMENT;
  return new Type(buf, off, len);
}

function render({ model, el: root }) {
  const style = el("style", null, root);
  style.textContent = CSS;
  const box = el("div", "cmw", root);
  const main = el("div", "cmw-main", box);
  const canvas = el("canvas", null, main);
  const over = el("canvas", "cmw-over", main);
  const bar = el("div", "cmw-bar", main);
  const modes = {};
  for (const [m, label] of [["pan", "pan"], ["box", "box"], ["lasso", "lasso"]]) {
    const b = el("button", null, bar);
    b.textContent = label;
    b.dataset.mode = m;
    modes[m] = b;
  }
  const clear = el("button", null, bar);
  clear.textContent = "clear";
  clear.dataset.action = "clear";
  const count = el("span", "cmw-count", bar);
  const card = el("div", "cmw-card", main);
  const side = el("div", "cmw-side", box);
  const title = el("div", null, side);
  title.style.fontWeight = "600";
  const search = el("input", null, side);
  search.placeholder = "filter legend";
  const legend = el("div", "cmw-legend", side);

  let width = 0;
  const height = () => model.get("height");
  const xScale = scaleLinear().domain([-1, 1]);
  const yScale = scaleLinear().domain([-1, 1]);
  const plot = createScatterplot({
    canvas, xScale, yScale, pointSize: model.get("point_size"),
    pointSizeSelected: 1, pointOutlineWidth: 1, opacity: 0.8,
    lassoType: "freeform", lassoMinDelay: 5, deselectOnDblClick: true,
    performanceMode: model.get("performance_mode"), backgroundColor: "#ffffff",
  });
  let xy = new Float32Array(0);
  let codes = new Uint16Array(0);
  let n = 0;
  let mouse = [0, 0];

  function resize() {
    width = Math.max(200, main.clientWidth || 600);
    const h = height();
    canvas.style.width = `${width}px`;
    canvas.style.height = `${h}px`;
    const dpr = window.devicePixelRatio || 1;
    over.width = width * dpr;
    over.height = h * dpr;
    over.style.width = `${width}px`;
    over.style.height = `${h}px`;
    legend.style.maxHeight = `${h - 50}px`;
    plot.set({ width, height: h });
    overlay();
  }

  function setMode(m) {
    for (const [k, b] of Object.entries(modes)) b.classList.toggle("on", k === m);
    if (m === "pan") plot.set({ mouseMode: "panZoom" });
    else plot.set({ mouseMode: "lasso", lassoType: m === "box" ? "rectangle" : "freeform" });
    model.set("mode", m);
    model.save_changes();
  }

  function colours() {
    const pal = model.get("_palette");
    plot.set({ pointColor: pal.length ? pal : ["#3b6ea5"], colorBy: "valueA" });
  }

  function selectedArray() {
    return Array.from(view(model, "selection", Int32Array));
  }

  function drawPoints() {
    const raw = view(model, "_xy", Float32Array);
    codes = view(model, "_codes", Uint16Array);
    n = codes.length;
    xy = raw;
    const x = raw.subarray(0, n);
    const y = raw.subarray(n, 2 * n);
    const z = new Float32Array(n);
    for (let i = 0; i < n; i++) z[i] = codes[i];
    colours();
    return plot.draw({ x, y, z }, { zDataType: "categorical", selected: selectedArray() })
      .then(() => { overlay(); showCount(); });
  }

  function recolour() {
    codes = view(model, "_codes", Uint16Array);
    if (codes.length !== n) return drawPoints();
    const z = new Float32Array(n);
    for (let i = 0; i < n; i++) z[i] = codes[i];
    colours();
    return plot.draw({ x: xy.subarray(0, n), y: xy.subarray(n, 2 * n), z },
      { zDataType: "categorical", selected: selectedArray(), preventFilterReset: true })
      .then(() => { overlay(); renderLegend(); });
  }

  function showCount() {
    const k = view(model, "selection", Int32Array).length;
    const h = view(model, "_highlight", Int32Array).length;
    count.textContent = `${n.toLocaleString()} points` + (k ? ` · ${k.toLocaleString()} selected` : "")
      + (h ? ` · ${h.toLocaleString()} highlighted` : "");
  }

  function overlay() {
    const ctx = over.getContext("2d");
    const dpr = window.devicePixelRatio || 1;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, over.width, over.height);
    const hl = view(model, "_highlight", Int32Array);
    ctx.lineWidth = 1.5;
    ctx.strokeStyle = "#d00000";
    const h = height();
    for (let j = 0; j < Math.min(hl.length, 20000); j++) {
      const i = hl[j];
      const px = xScale(xy[i]);
      const py = yScale(xy[n + i]);
      if (px < -5 || py < -5 || px > width + 5 || py > h + 5) continue;
      ctx.beginPath();
      ctx.arc(px, py, 5, 0, 2 * Math.PI);
      ctx.stroke();
    }
    if (!model.get("show_labels")) return;
    ctx.font = "600 12px system-ui,sans-serif";
    ctx.textAlign = "center";
    ctx.textBaseline = "middle";
    ctx.lineJoin = "round";
    const placed = [];
    for (const [lx, ly, text] of model.get("_labels")) {
      const px = xScale(lx);
      const py = yScale(ly);
      if (px < 0 || py < 0 || px > width || py > h) continue;
      const w = ctx.measureText(text).width;
      const r = [px - w / 2, py - 8, px + w / 2, py + 8];
      if (placed.some((q) => r[0] < q[2] && r[2] > q[0] && r[1] < q[3] && r[3] > q[1])) continue;
      placed.push(r);
      ctx.lineWidth = 3;
      ctx.strokeStyle = "rgba(255,255,255,0.9)";
      ctx.strokeText(text, px, py);
      ctx.fillStyle = "#111";
      ctx.fillText(text, px, py);
    }
  }

  function renderLegend() {
    const lg = model.get("_legend") || {};
    title.textContent = lg.title || "";
    legend.textContent = "";
    const q = search.value.trim().toLowerCase();
    search.style.display = lg.kind === "category" && (lg.items || []).length > 12 ? "" : "none";
    if (lg.kind === "numeric") {
      const ramp = el("div", "cmw-ramp", legend);
      ramp.style.background = `linear-gradient(to right, ${lg.ramp.join(",")})`;
      const ends = el("div", null, legend);
      ends.style.display = "flex";
      ends.style.justifyContent = "space-between";
      el("span", null, ends).textContent = lg.span[0].toPrecision(3);
      el("span", null, ends).textContent = lg.span[1].toPrecision(3);
    }
    for (const it of lg.items || []) {
      if (q && !it.name.toLowerCase().includes(q)) continue;
      const row = el("div", "cmw-item", legend);
      row.dataset.code = it.code;
      row.title = `${it.name}: ${it.count.toLocaleString()} points (click selects them)`;
      el("span", "cmw-sw", row).style.background = it.colour;
      el("span", "cmw-name", row).textContent = it.name;
      el("span", "cmw-n", row).textContent = it.count.toLocaleString();
      row.onclick = () => {
        const picked = [];
        for (let i = 0; i < n; i++) if (codes[i] === it.code) picked.push(i);
        plot.select(picked);
      };
    }
  }

  function showCard() {
    const c = model.get("hover_card") || {};
    if (c.index === undefined || c.index !== model.get("hovered")) {
      card.style.display = "none";
      return;
    }
    card.textContent = "";
    if (c.thumbnail) {
      const img = el("img", null, card);
      img.src = c.thumbnail;
    }
    el("div", "cap", card).textContent = c.caption || "";
    const t = el("table", null, card);
    for (const [k, v] of [["id", c.sample_id], ...Object.entries(c.values || {})]) {
      const r = el("tr", null, t);
      el("td", null, r).textContent = k;
      el("td", null, r).textContent = typeof v !== "number" ? String(v)
        : Number.isInteger(v) ? v.toLocaleString() : v.toPrecision(4);
    }
    const left = Math.min(mouse[0] + 14, Math.max(0, width - 236));
    const top = Math.min(mouse[1] + 14, Math.max(0, height() - 240));
    card.style.left = `${left}px`;
    card.style.top = `${top}px`;
    card.style.display = "block";
  }

  canvas.addEventListener("mousemove", (e) => {
    const r = canvas.getBoundingClientRect();
    mouse = [e.clientX - r.left, e.clientY - r.top];
  });
  plot.subscribe("pointOver", (i) => { model.set("hovered", i); model.save_changes(); });
  plot.subscribe("pointOut", () => {
    model.set("hovered", -1);
    model.save_changes();
    card.style.display = "none";
  });
  const sendSelection = (idx) => {
    const a = Int32Array.from(idx);
    model.set("selection", new DataView(a.buffer));
    model.save_changes();
    showCount();
  };
  plot.subscribe("select", ({ points }) => sendSelection(points));
  plot.subscribe("deselect", () => sendSelection([]));
  plot.subscribe("view", overlay);
  for (const [m, b] of Object.entries(modes)) b.onclick = () => setMode(m);
  clear.onclick = () => plot.deselect();
  search.oninput = renderLegend;

  model.on("change:_xy", () => drawPoints());
  model.on("change:_codes", () => recolour());
  model.on("change:_palette", () => colours());
  model.on("change:_legend", renderLegend);
  model.on("change:_labels", overlay);
  model.on("change:show_labels", overlay);
  model.on("change:_highlight", () => { overlay(); showCount(); });
  model.on("change:hover_card", showCard);
  model.on("change:height", resize);
  model.on("change:point_size", () => plot.set({ pointSize: model.get("point_size") }));
  model.on("change:selection", () => {
    const want = selectedArray();
    const have = plot.get("selectedPoints") || [];
    if (want.length !== have.length || want.some((v, i) => v !== have[i])) {
      plot.select(want, { preventEvent: true });
    }
    showCount();
  });

  const ro = new ResizeObserver(() => resize());
  ro.observe(main);
  resize();
  setMode(model.get("mode") || "pan");
  renderLegend();
  drawPoints();
  root.curatePlot = plot;  // the browser tests and screenshots reach the plot through this
  return () => { ro.disconnect(); plot.destroy(); };
}

export default { render };
