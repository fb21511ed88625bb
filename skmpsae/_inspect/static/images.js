// skmpsae feature browser, image panels: for rows captured from an image model, app.js hands
// each atom's `vision` data here (window.SKMPSAE_VISION). Each image is a PNG thumbnail with the
// atom's activation on each patch drawn over it as a heat map (a canvas of the patch grid,
// stretched over the image); text rows of a vision-language model are listed beside the images.
(function () {
  "use strict";
  // The panels' style lives here with them, not in style.css.
  var css = document.createElement("style");
  css.textContent =
    ".vsides { display: flex; gap: 24px; align-items: flex-start; flex-wrap: wrap; }" +
    ".vcol { flex: 1 1 420px; } .vcol h4 { margin: 12px 0 4px; font-size: 13px; color: #444; }" +
    ".vrow { display: flex; flex-wrap: wrap; gap: 6px; }" +
    ".vimg { position: relative; display: inline-block; border: 1px solid #ccc; background: #000; }" +
    ".vimg img, .vimg canvas.heat { position: absolute; left: 0; top: 0; width: 100%; height: 100%; image-rendering: pixelated; }" +
    ".vimg .vval { position: absolute; right: 1px; bottom: 0; font-size: 10px; color: #fff; background: rgba(0,0,0,.55); padding: 0 2px; }" +
    "#modality { font-weight: 600; }";
  document.head.appendChild(css);

  // app.js's element builder and number format, handed over with each call.
  var el, fmt;

  // One image: the thumbnail, and over it the patch grid in orange, transparent where the atom
  // is silent, opaque at the atom's peak.
  function figure(entry, grid, size) {
    var box = el("span", { "class": "vimg", "data-image": entry.id, title: "image " + entry.id + ": " + fmt(entry.v) });
    box.style.width = size + "px"; box.style.height = size + "px";
    var img = el("img", { src: entry.src, alt: "image " + entry.id });
    box.appendChild(img);
    if (entry.heat && grid) {
      var raw = atob(entry.heat), c = el("canvas", { width: grid[1], height: grid[0], "class": "heat" });
      var ctx = c.getContext("2d"), data = ctx.createImageData(grid[1], grid[0]);
      for (var p = 0; p < grid[0] * grid[1]; p++) {
        var v = raw.charCodeAt(p);
        data.data[4 * p] = 255; data.data[4 * p + 1] = 110; data.data[4 * p + 2] = 0;
        data.data[4 * p + 3] = Math.round(0.65 * v);
      }
      ctx.putImageData(data, 0, 0);
      box.appendChild(c);
    }
    box.appendChild(el("span", { "class": "vval", text: fmt(entry.v, 2) }));
    return box;
  }
  function row(list, grid, size, id) {
    var r = el("div", { "class": "vrow", id: id });
    if (!list.length) r.appendChild(el("span", { "class": "empty", text: "none" }));
    list.forEach(function (e) { r.appendChild(figure(e, grid, size)); });
    return r;
  }

  window.SKMPSAE_VISION = function (v, meta) {
    el = meta.el; fmt = meta.fmt;
    var grid = meta.grid, out = el("div", { id: "vision" });
    var images = el("div", { "class": "vcol" }, [
      el("h3", { text: "Top-activating images" + (grid ? " (heat map: the atom on each patch)" : "") }),
      row(v.top, grid, 112, "top-images"),
    ]);
    v.bands.forEach(function (b, n) {
      images.appendChild(el("h4", { text: "Images at " + Math.round(100 * b.lo) + "–" + Math.round(100 * b.hi) + "% of the top activation" }));
      images.appendChild(row(b.images, grid, 72, "band-" + n));
    });
    var cols = [images];
    if (v.texts) {
      var texts = el("div", { "class": "vcol", id: "top-texts" }, [el("h3", { text: "Top-activating texts" })]);
      if (v.modality !== undefined) {
        texts.appendChild(el("p", { id: "modality", text: "modality score " + fmt(v.modality) +
          " (share of activation mass from image rows, per row of each modality: 0 text only, 1 image only)" }));
      }
      if (!v.texts.length) texts.appendChild(el("p", { "class": "empty", text: "This atom never fires on the texts." }));
      v.texts.forEach(function (t) {
        texts.appendChild(el("div", { "class": "ctx" }, [el("span", { "class": "val", text: fmt(t.v) }), el("span", { text: t.t })]));
      });
      cols.push(texts);
    }
    out.appendChild(el("div", { "class": "vsides" }, cols));
    return out;
  };
})();
