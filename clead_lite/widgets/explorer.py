"""The embedding explorer of notebook 07: where do adversarial examples land in a model's embedding space?

Two parts, kept apart so that the slow one is testable and the fast one stays fast:

- `precompute_explorer_data(models, x, y, attacks, eps_values)` (in `explorer_data.py`, re-exported here) does
  all the work up front: for every model,
  attack and eps it attacks the images (white-box, against that model), embeds the clean and adversarial
  images, fits ONE 2-D UMAP map on both sets together (cached on disk by `course.umap_cache`), and
  stores predictions, probabilities and separation metrics. Returns an `ExplorerData`.
- `embedding_explorer(data)` builds the ipywidgets explorer on top: choose the model, the attack, eps and the
  colouring; pick a point (index slider, "next fooled" button, or the point nearest to typed map coordinates)
  and see its clean image, its adversarial image and both predictions. Interaction only redraws (a PNG from
  matplotlib's Agg backend into an `ipywidgets.Image`), so it works in JupyterLab, Colab and VS Code without
  the matplotlib widget backend, and answers at once.

Stable CSS classes for the browser test: `clead-embedding-explorer` (the whole widget), `clead-explorer-model`,
`clead-explorer-attack`, `clead-explorer-eps`, `clead-explorer-color`, `clead-explorer-point`,
`clead-explorer-next-fooled`, `clead-explorer-find-x`, `clead-explorer-find-y`, `clead-explorer-find`,
`clead-explorer-plot`, `clead-explorer-images`, `clead-explorer-caption`, `clead-explorer-metrics`.
"""
from __future__ import annotations

import io
import re

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .explorer_data import (ExplorerData, fooled_indices, nearest_point, point_details,  # noqa: F401 (re-exported)
                            precompute_explorer_data)
from .viz import ADV_COLOR, CLEAN_COLOR, perturbation_image, to_numpy_image

COLOR_MODES = ("class", "clean / adversarial", "fooled")
_DPI = 80                      # the explorer's pictures: 1 figure inch = 80 screen pixels

__all__ = ["ExplorerData", "precompute_explorer_data", "embedding_explorer", "EmbeddingExplorer",
           "nearest_point", "point_details", "fooled_indices", "draw_map", "COLOR_MODES"]


# =============================================================================================== drawing
def _point_colors(data: ExplorerData, e: dict, mode: str) -> tuple[np.ndarray, np.ndarray, list]:
    """RGBA colours (N, 4) for the clean and the adversarial points, and legend handles."""
    from matplotlib.lines import Line2D
    n = len(data.y)
    if mode == "class":
        cmap = matplotlib.colormaps["tab10" if len(data.classes) <= 10 else "tab20"]
        c = cmap(data.y.numpy() % cmap.N)
        handles = [Line2D([], [], marker="o", ls="", color=cmap(k % cmap.N), label=data.classes[k])
                   for k in sorted(set(data.y.tolist()))]
        return c, c, handles
    if mode == "clean / adversarial":
        clean = np.tile(matplotlib.colors.to_rgba(CLEAN_COLOR), (n, 1))
        adv = np.tile(matplotlib.colors.to_rgba(ADV_COLOR), (n, 1))
        handles = [Line2D([], [], marker="o", ls="", color=CLEAN_COLOR, label="clean"),
                   Line2D([], [], marker="^", ls="", color=ADV_COLOR, label="adversarial")]
        return clean, adv, handles
    grey, green, red = (matplotlib.colors.to_rgba(c) for c in ("#bbbbbb", "#2ca02c", ADV_COLOR))
    ok = (e["pred_adv"] == data.y).numpy()
    adv = np.where(ok[:, None], np.array(green), np.array(red))
    handles = [Line2D([], [], marker="o", ls="", color=grey, label="clean"),
               Line2D([], [], marker="^", ls="", color=green, label="adversarial, still right"),
               Line2D([], [], marker="^", ls="", color=red, label="adversarial, wrong")]
    return np.tile(grey, (n, 1)), adv, handles


def draw_map(ax, data: ExplorerData, model: str, attack: str, eps: float, mode: str = "class",
             index: int | None = None, legend: bool = True) -> None:
    """Scatter the shared UMAP map (clean: circles, adversarial: triangles) into `ax`; mark point `index`;
    legend: draw the colour legend right of the axes (False: leave it to a neighbouring panel)."""
    e = data.entry(model, attack, eps)
    n = len(data.y)
    xy = e["coords"]
    c_clean, c_adv, handles = _point_colors(data, e, mode)
    ax.clear()
    size = 14 if n <= 1000 else 6
    ax.scatter(xy[:n, 0], xy[:n, 1], c=c_clean, s=size, marker="o", alpha=0.75, linewidths=0)
    ax.scatter(xy[n:, 0], xy[n:, 1], c=c_adv, s=size * 1.4, marker="^", alpha=0.75, linewidths=0)
    if index is not None:
        (u0, v0), (u1, v1) = xy[index], xy[n + index]
        ax.annotate("", xy=(u1, v1), xytext=(u0, v0),
                    arrowprops=dict(arrowstyle="->", color="black", lw=2, shrinkA=4, shrinkB=4))
        ax.scatter([u0], [v0], s=180, facecolors="none", edgecolors="black", linewidths=2.5, marker="o")
        ax.scatter([u1], [v1], s=220, facecolors="none", edgecolors="black", linewidths=2.5, marker="^")
    ax.set_title(f"{model}: {attack} eps = {eps:.3g} ({data.space})\n"
                 "o clean, ^ adversarial (one UMAP on both)", fontsize=12)
    ax.set_xlabel("UMAP 1")
    ax.set_ylabel("UMAP 2")
    ax.grid(False)
    legend_title = {"class": "true class", "clean / adversarial": None, "fooled": None}[mode]
    if not legend:
        return
    ax.legend(handles=handles, title=legend_title, fontsize=12, loc="center left", bbox_to_anchor=(1.01, 0.5),
              frameon=False, markerscale=1.2)


def caption_html(data: ExplorerData, details: dict) -> str:
    """One line of text about the selected point (the browser test reads it)."""
    names = data.classes
    verdict = ("<b style='color:#d62728'>fooled</b>" if details["fooled"] else
               "already wrong when clean" if details["pred_clean"] != details["label"] else "not fooled")
    return (f"<span style='font-size:15px'>image {details['index']}: label <b>{names[details['label']]}</b>, "
            f"clean prediction <b>{names[details['pred_clean']]}</b> ({details['conf_clean']:.0%}), "
            f"adversarial prediction <b>{names[details['pred_adv']]}</b> ({details['conf_adv']:.0%}) "
            f"&rarr; {verdict}</span>")


def metrics_html(data: ExplorerData, model: str, attack: str, eps: float) -> str:
    m = data.entry(model, attack, eps)["metrics"]
    labels = {"clean_accuracy": "clean accuracy", "robust_accuracy": "accuracy under the attack",
              "pair_cosine": "mean cos(clean, adversarial)", "knn_accuracy": "5-NN accuracy of adversarial points",
              "own_neighbour_fraction": "nearest clean point is its own", "silhouette": "silhouette (by class)",
              "pair_distance_ratio": "shift / class-centroid distance"}
    cells = "".join(f"<tr><td>{labels.get(k, k)}</td><td style='text-align:right'><b>{v:.3f}</b></td></tr>"
                    for k, v in m.items())
    return (f"<div style='font-size:13px'><b>{model}, {attack}, eps = {eps:.3g}</b> "
            f"(N = {len(data.y)}, in the {data.space} space)<table>{cells}</table></div>")


# =============================================================================================== widget
def embedding_explorer(data: ExplorerData, model: str | None = None, attack: str | None = None,
                       eps: float | None = None, color: str = "class", index: int = 0) -> "EmbeddingExplorer":
    """The interactive explorer (an ipywidgets VBox) over precomputed `data` (`precompute_explorer_data`).

    Controls: model, attack, eps, colour (by true class, clean vs adversarial, or whether the attack fooled
    the model), the selected image (slider), "next fooled" (jumps to the next image the attack fools) and
    "nearest to (u, v)" (selects the point closest to typed map coordinates). Shows the map with the selected
    clean point (circle) and its adversarial version (triangle) joined by an arrow, the two images with the
    amplified perturbation and the predictions, and the separation metrics of the current map.
    """
    return EmbeddingExplorer(data, model=model, attack=attack, eps=eps, color=color, index=index)


def _widget_base():
    import ipywidgets as widgets
    return widgets.VBox


class EmbeddingExplorer(_widget_base()):  # type: ignore[misc]
    """See `embedding_explorer`. Parts: `.model_dropdown`, `.attack_dropdown`, `.eps_slider`, `.color_buttons`,
    `.point_slider`, `.next_fooled_button`, `.find_u`, `.find_v`, `.find_button`, `.plot` (Image),
    `.images` (Image), `.caption` (HTML), `.metrics` (HTML), `.status` (HTML). Methods: `details()`,
    `next_fooled()`, `select_nearest(u, v)`, `caption_text()`, `render()`; `render_count` counts redraws."""

    def __init__(self, data: ExplorerData, model=None, attack=None, eps=None, color="class", index=0):
        import ipywidgets as widgets
        if not isinstance(data, ExplorerData):
            raise TypeError(f"data must be an ExplorerData from precompute_explorer_data(...), got "
                            f"{type(data).__name__}")
        self.data = data
        model = data.models[0] if model is None else model
        attack = data.attacks[0] if attack is None else attack
        eps = data.eps_values[-1] if eps is None else float(eps)
        data.entry(model, attack, eps)                       # a clear error for a wrong name or eps
        if color not in COLOR_MODES:
            raise ValueError(f"unknown color {color!r}; allowed: {', '.join(map(repr, COLOR_MODES))}")
        n = len(data.y)
        if not 0 <= index < n:
            raise ValueError(f"index must be in [0, {n - 1}], got {index}")
        wide = widgets.Layout(width="320px")       # three in a row: 960 px of the 1,024 a projector shows
        self.model_dropdown = widgets.Dropdown(options=list(data.models), value=model, description="model",
                                               layout=wide)
        self.attack_dropdown = widgets.Dropdown(options=list(data.attacks), value=attack, description="attack",
                                                layout=wide)
        self.eps_slider = widgets.SelectionSlider(options=[(f"{e:.3g}", e) for e in data.eps_values], value=eps,
                                                  description="eps", continuous_update=False, layout=wide)
        self.color_buttons = widgets.ToggleButtons(options=list(COLOR_MODES), value=color, description="colour")
        self.point_slider = widgets.IntSlider(value=index, min=0, max=n - 1, description="image",
                                              continuous_update=False, layout=widgets.Layout(width="420px"))
        self.next_fooled_button = widgets.Button(description="next fooled image", icon="forward",
                                                 layout=widgets.Layout(width="auto"))
        self.find_u = widgets.FloatText(value=0.0, description="u", layout=widgets.Layout(width="150px"))
        self.find_v = widgets.FloatText(value=0.0, description="v", layout=widgets.Layout(width="150px"))
        self.find_button = widgets.Button(description="select nearest point", icon="crosshairs",
                                          layout=widgets.Layout(width="auto"))
        # map 528 px + images 460 px (in a 470 px column): 998 px, within a 1,024-pixel projector
        self.plot = widgets.Image(format="png", layout=widgets.Layout(width="528px"))
        self.images = widgets.Image(format="png", layout=widgets.Layout(width="460px"))
        self.caption = widgets.HTML()
        self.metrics = widgets.HTML()
        self.status = widgets.HTML()
        for w, css in ((self, "clead-embedding-explorer"), (self.model_dropdown, "clead-explorer-model"),
                       (self.attack_dropdown, "clead-explorer-attack"), (self.eps_slider, "clead-explorer-eps"),
                       (self.color_buttons, "clead-explorer-color"), (self.point_slider, "clead-explorer-point"),
                       (self.next_fooled_button, "clead-explorer-next-fooled"),
                       (self.find_u, "clead-explorer-find-x"), (self.find_v, "clead-explorer-find-y"),
                       (self.find_button, "clead-explorer-find"), (self.plot, "clead-explorer-plot"),
                       (self.images, "clead-explorer-images"), (self.caption, "clead-explorer-caption"),
                       (self.metrics, "clead-explorer-metrics"), (self.status, "clead-explorer-status")):
            w.add_class(css)
        self.render_count = 0
        # Fixed layouts (no tight_layout per redraw) and Agg canvases: the map's scatter is drawn once per
        # (model, attack, eps, colour) and kept as a background; selecting a point only blits the marker.
        self._map_fig = Figure(figsize=(6.6, 5.4), dpi=_DPI)
        self._map_fig.subplots_adjust(left=0.15, right=0.67, bottom=0.11, top=0.86)
        self._map_ax = self._map_fig.add_subplot(1, 1, 1)
        self._map_canvas = FigureCanvasAgg(self._map_fig)
        self._maps: dict = {}                                # (model, attack, eps, colour) -> cached map pixels
        self._marks: list = []
        self._img_fig = Figure(figsize=(5.75, 2.7), dpi=_DPI)
        self._img_fig.subplots_adjust(left=0.02, right=0.98, bottom=0.03, top=0.78, wspace=0.1)
        self._img_axes = self._img_fig.subplots(1, 3)
        self._img_canvas = FigureCanvasAgg(self._img_fig)
        self._img_artists = None
        controls = widgets.VBox([widgets.HBox([self.model_dropdown, self.attack_dropdown, self.eps_slider]),
                                 self.color_buttons,
                                 widgets.HBox([self.point_slider, self.next_fooled_button]),
                                 widgets.HBox([self.find_u, self.find_v, self.find_button, self.status])])
        right = widgets.VBox([self.images, self.caption, self.metrics], layout=widgets.Layout(width="470px"))
        body = widgets.HBox([self.plot, right], layout=widgets.Layout(flex_flow="row wrap"))  # wraps when narrow
        super().__init__([controls, body])
        for w in (self.model_dropdown, self.attack_dropdown, self.eps_slider, self.color_buttons, self.point_slider):
            w.observe(self._on_change, names="value")
        self.next_fooled_button.on_click(self._on_next_fooled)
        self.find_button.on_click(self._on_find)
        self.render()

    # ------------------------------------------------------------------------------------------- state
    @property
    def selection(self) -> tuple[str, str, float]:
        return self.model_dropdown.value, self.attack_dropdown.value, float(self.eps_slider.value)

    def details(self) -> dict:
        """`point_details` of the selected image under the selected model, attack and eps."""
        return point_details(self.data, *self.selection, int(self.point_slider.value))

    def caption_text(self) -> str:
        """The caption of the selected point as plain text."""
        return re.sub(r"<[^>]+>", "", self.caption.value).replace("&rarr;", "->")

    def next_fooled(self) -> int | None:
        """Select the next image (after the current one, wrapping around) that the model classifies correctly
        when clean and wrongly under the selected attack; returns its index, or None when there is none."""
        fooled = fooled_indices(self.data, *self.selection)
        if len(fooled) == 0:
            self.status.value = "the attack fools no correctly classified image here"
            return None
        later = fooled[fooled > self.point_slider.value]
        self.status.value = f"{len(fooled)} fooled images"
        self.point_slider.value = int(later[0] if len(later) else fooled[0])   # triggers render()
        return int(self.point_slider.value)

    def select_nearest(self, u: float, v: float) -> tuple[int, str]:
        """Select the image whose clean or adversarial point is nearest to map coordinates (u, v)."""
        i, which = nearest_point(self.data.entry(*self.selection)["coords"], float(u), float(v))
        self.status.value = f"nearest to ({u:.2f}, {v:.2f}): image {i} ({which})"
        if i == self.point_slider.value:
            self.render()
        else:
            self.point_slider.value = i
        return i, which

    # ------------------------------------------------------------------------------------------- events
    def _on_change(self, change) -> None:
        self.render()

    def _on_next_fooled(self, _button=None) -> None:
        self.next_fooled()

    def _on_find(self, _button=None) -> None:
        self.select_nearest(self.find_u.value, self.find_v.value)

    # ------------------------------------------------------------------------------------------- drawing
    def _update_images(self, details: dict) -> None:
        """Clean image, amplified perturbation, adversarial image: artists made once, then only their data
        and titles change (clearing axes is what makes matplotlib slow)."""
        names = self.data.classes
        clean, adv = to_numpy_image(details["x"]), to_numpy_image(details["x_adv"])
        delta = details["x_adv"] - details["x"]
        pert, amp = perturbation_image(delta)
        if self._img_artists is None:
            gray = clean.ndim == 2
            self._img_artists = [
                ax.imshow(img, cmap=cmap if gray else None, vmin=0, vmax=1, interpolation="nearest")
                for ax, img, cmap in zip(self._img_axes, (clean, pert, adv), ("gray", "RdBu_r", "gray"))]
            for ax in self._img_axes:
                ax.axis("off")
        for artist, img in zip(self._img_artists, (clean, pert, adv)):
            artist.set_data(img)
        wrong = details["pred_adv"] != details["label"]
        self._img_axes[0].set_title(f"clean: {names[details['pred_clean']]} ({details['conf_clean']:.0%})\n"
                                    f"label {names[details['label']]}", fontsize=12)
        self._img_axes[1].set_title(f"perturbation x{amp:.0f}\nmax |δ| = {float(delta.abs().max()):.3f}",
                                    fontsize=12)
        self._img_axes[2].set_title(f"adversarial: {names[details['pred_adv']]} ({details['conf_adv']:.0%})",
                                    fontsize=12, color=ADV_COLOR if wrong else "black")

    def render(self) -> None:
        """Redraw the map, the images, the caption and the metrics from the precomputed data (no model calls)."""
        model, attack, eps = self.selection
        details = self.details()
        key = (model, attack, eps, self.color_buttons.value)
        if key not in self._maps:                             # a new map: draw its scatter once, keep the pixels
            draw_map(self._map_ax, self.data, model, attack, eps, self.color_buttons.value, index=None)
            self._marks = _highlight_artists(self._map_ax)
            self._map_canvas.draw()
            self._maps[key] = (self._map_canvas.copy_from_bbox(self._map_fig.bbox), self._map_ax.get_xlim(),
                               self._map_ax.get_ylim())
        background, xlim, ylim = self._maps[key]
        self._map_ax.set_xlim(xlim)                           # the markers use this map's coordinates
        self._map_ax.set_ylim(ylim)
        self._map_canvas.restore_region(background)
        _move_highlight(self._marks, details["xy_clean"], details["xy_adv"])
        for artist in self._marks:
            self._map_ax.draw_artist(artist)
        self.plot.value = _canvas_png(self._map_canvas)
        self._update_images(details)
        self._img_canvas.draw()
        self.images.value = _canvas_png(self._img_canvas)
        self.caption.value = caption_html(self.data, details)
        self.metrics.value = metrics_html(self.data, model, attack, eps)
        self.render_count += 1



def _canvas_png(canvas: FigureCanvasAgg) -> bytes:
    """The canvas's current pixels as PNG bytes (fast compression: this runs on every interaction)."""
    from PIL import Image
    width, height = canvas.get_width_height()
    image = Image.frombuffer("RGBA", (width, height), canvas.buffer_rgba(), "raw", "RGBA", 0, 1)
    buf = io.BytesIO()
    image.save(buf, format="png", compress_level=1)
    return buf.getvalue()


def _highlight_artists(ax) -> list:
    """The selected point's markers (clean circle, adversarial triangle, arrow), drawn only by blitting."""
    arrow = ax.annotate("", xy=(0, 0), xytext=(0, 0), animated=True,
                        arrowprops=dict(arrowstyle="->", color="black", lw=2, shrinkA=4, shrinkB=4))
    clean = ax.scatter([0], [0], s=180, facecolors="none", edgecolors="black", linewidths=2.5, marker="o",
                       animated=True)
    adv = ax.scatter([0], [0], s=220, facecolors="none", edgecolors="black", linewidths=2.5, marker="^",
                     animated=True)
    return [arrow, clean, adv]


def _move_highlight(marks: list, xy_clean: tuple[float, float], xy_adv: tuple[float, float]) -> None:
    arrow, clean, adv = marks
    arrow.xy = xy_adv
    arrow.set_position(xy_clean)
    clean.set_offsets([xy_clean])
    adv.set_offsets([xy_adv])
