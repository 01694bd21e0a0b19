"""Pictures and widgets for the notebooks (matplotlib / seaborn / ipywidgets 8).

Every plotting function returns its matplotlib Figure (the notebook shows it; `course.py` saves it), sized and
lettered to be readable on a projector. Images are `x: (B, C, H, W) float in [0, 1]` tensors.
Widgets carry stable CSS classes (`clead-*`) so a browser test can find them.
"""
from __future__ import annotations

import io
from typing import Callable, Iterable, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
import torch
import torch.nn.functional as F

from .. import attacks as _attacks
from ..models import device_of
from ..validate import check_choice, check_eps, check_images, check_int

CLEAN_COLOR = "#1f77b4"
ADV_COLOR = "#d62728"
MAX_FIG_WIDTH = 10.0      # inches: wider figures are shrunk to the page and unreadable on a projector
MIN_FONT_SIZE = 12        # points: the smallest text any figure here uses (with notebook_setup.PROJECTOR_RC)
MAX_WIDGET_PX = 1024      # pixels: the widest a widget may be (a 1,024 x 768 projector)


# ----------------------------------------------------------------------------------------------- images
def to_numpy_image(img: torch.Tensor) -> np.ndarray:
    """img: (C, H, W) float in [0, 1] -> (H, W) for one channel, (H, W, C) for three; clipped to [0, 1]."""
    a = img.detach().float().cpu().clamp(0, 1).numpy()
    return a[0] if a.shape[0] == 1 else a.transpose(1, 2, 0)


def _imshow(ax, img: torch.Tensor, **kwargs) -> None:
    a = to_numpy_image(img)
    ax.imshow(a, cmap="gray" if a.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest", **kwargs)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)


def _name(classes: Sequence[str] | None, k: int) -> str:
    return str(classes[k]) if classes is not None else str(k)


def show_images(x: torch.Tensor, labels: torch.Tensor | None = None, preds: torch.Tensor | None = None,
                classes: Sequence[str] | None = None, ncols: int = 8, title: str | None = None,
                size: float = 1.6) -> plt.Figure:
    """A grid of images with their labels (and predictions: green when right, red when wrong).

    x: (B, C, H, W) float in [0, 1]; labels, preds: (B,) int64 or None; classes: names indexed by label.
    """
    check_images(x)
    check_int(ncols, "ncols")
    n = x.shape[0]
    ncols = min(ncols, n)
    nrows = -(-n // ncols)
    size = min(size, MAX_FIG_WIDTH / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, 1.25 * size * nrows + (0.6 if title else 0.2)),
                             squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i >= n:
            ax.axis("off")
            continue
        _imshow(ax, x[i])
        if preds is not None:
            p = int(preds[i])
            right = labels is None or p == int(labels[i])
            text = _name(classes, p) if labels is None else f"{_name(classes, p)} ({_name(classes, int(labels[i]))})"
            ax.set_title(text, color="tab:green" if right else "tab:red", fontsize=12)
        elif labels is not None:
            ax.set_title(_name(classes, int(labels[i])), fontsize=12)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def perturbation_image(delta: torch.Tensor) -> tuple[np.ndarray, float]:
    """delta: (C, H, W) -> (an image in [0, 1] with 0.5 = unchanged, the amplification factor used)."""
    m = float(delta.abs().max())
    amp = 0.5 / m if m > 0 else 1.0
    return to_numpy_image(0.5 + amp * delta), 2 * amp


def _perturbation_titles(x, x_adv, probs_clean, probs_adv, classes, label):
    """(clean title, perturbation title, adversarial title, adversarial title colour, perturbation image)."""
    k_clean, k_adv = int(probs_clean.argmax()), int(probs_adv.argmax())
    truth = f"\nlabel {_name(classes, int(label))}" if label is not None else ""
    delta = (x_adv - x).detach().cpu()
    img, _ = perturbation_image(delta)
    linf = float(delta.abs().max())
    return (f"clean: {_name(classes, k_clean)} ({float(probs_clean[k_clean]):.0%}){truth}",
            (f"perturbation ({'red +, blue −' if img.ndim == 2 else 'amplified, grey = 0'})\nmax |δ| = {linf:.3f}"
             if linf > 0 else "perturbation\n(none)"),
            f"adversarial: {_name(classes, k_adv)} ({float(probs_adv[k_adv]):.0%})",
            ADV_COLOR if k_adv != k_clean else "black", img)


def _perturbation_axes(fig) -> list:
    """Four axes on a 2 x 2 grid: [clean (top left), perturbation (bottom left), adversarial (top right),
    probability bars (bottom right)] (wrapped rather than one 15-inch row: readable on a projector)."""
    grid = fig.subplots(2, 2, gridspec_kw={"width_ratios": [1, 1.25]})
    return [grid[0, 0], grid[1, 0], grid[0, 1], grid[1, 1]]


def _draw_perturbation(axes, x, x_adv, probs_clean, probs_adv, classes, label=None) -> None:
    """Draw image / perturbation / adversarial image / probability bars into 4 axes."""
    for ax in axes:
        ax.clear()
    t_clean, t_delta, t_adv, color, img = _perturbation_titles(x, x_adv, probs_clean, probs_adv, classes, label)
    _imshow(axes[0], x)
    axes[0].set_title(t_clean)
    axes[1].imshow(img, cmap="RdBu_r" if img.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
    axes[1].set_xticks([])
    axes[1].set_yticks([])
    axes[1].grid(False)
    axes[1].set_title(t_delta)
    _imshow(axes[2], x_adv)
    axes[2].set_title(t_adv, color=color)
    n = len(probs_clean)
    pos = np.arange(n)
    names = [_name(classes, k) for k in range(n)]
    axes[3].barh(pos + 0.2, probs_clean.detach().cpu().numpy(), height=0.4, color=CLEAN_COLOR, label="clean")
    axes[3].barh(pos - 0.2, probs_adv.detach().cpu().numpy(), height=0.4, color=ADV_COLOR, label="adversarial")
    axes[3].set_yticks(pos)
    axes[3].set_yticklabels(names)
    axes[3].invert_yaxis()
    axes[3].set_xlim(0, 1)
    axes[3].set_xlabel("predicted probability")
    axes[3].legend(loc="lower right", fontsize=MIN_FONT_SIZE)


def _refresh_perturbation(axes, x, x_adv, probs_clean, probs_adv, classes, label=None) -> None:
    """Update the artists drawn by `_draw_perturbation` in place (much faster than redrawing)."""
    t_clean, t_delta, t_adv, color, img = _perturbation_titles(x, x_adv, probs_clean, probs_adv, classes, label)
    axes[0].images[0].set_data(to_numpy_image(x))
    axes[0].set_title(t_clean)
    axes[1].images[0].set_data(img)
    axes[1].set_title(t_delta)
    axes[2].images[0].set_data(to_numpy_image(x_adv))
    axes[2].set_title(t_adv, color=color)
    for container, probs in zip(axes[3].containers, (probs_clean, probs_adv)):
        for bar, p in zip(container, probs.detach().cpu().tolist()):
            bar.set_width(p)


def plot_perturbation(x: torch.Tensor, x_adv: torch.Tensor, probs_clean: torch.Tensor, probs_adv: torch.Tensor,
                      classes: Sequence[str] | None = None, label: int | None = None) -> plt.Figure:
    """Clean image, the perturbation (amplified, red = brighter, blue = darker), the adversarial image, and the
    predicted class probabilities before and after.

    x, x_adv: (C, H, W) or (1, C, H, W) float in [0, 1]; probs_clean, probs_adv: (num_classes,) summing to 1.
    """
    x, x_adv = _single(x, "x"), _single(x_adv, "x_adv")
    probs_clean, probs_adv = probs_clean.reshape(-1), probs_adv.reshape(-1)
    fig = plt.figure(figsize=(9, 7.5))
    axes = _perturbation_axes(fig)
    _draw_perturbation(axes, x, x_adv, probs_clean, probs_adv, classes, label)
    fig.tight_layout()
    return fig


def _single(x: torch.Tensor, name: str) -> torch.Tensor:
    if x.dim() == 4:
        if x.shape[0] != 1:
            raise ValueError(f"{name} must be one image, (C, H, W) or (1, C, H, W), got {tuple(x.shape)}")
        x = x[0]
    check_images(x[None], name)
    return x


# ----------------------------------------------------------------------------------------------- curves
def _as_runs(frames, default: str = "model") -> dict:
    """A DataFrame, a list of them, or a {name: DataFrame} dict -> {name: DataFrame}."""
    import pandas as pd
    if isinstance(frames, pd.DataFrame):
        if "run" in frames.columns:
            return {name: g for name, g in frames.groupby("run", sort=False)}
        return {default: frames}
    if isinstance(frames, Mapping):
        return dict(frames)
    return {f"{default} {i}": f for i, f in enumerate(frames)}


def plot_accuracy_vs_eps(frames, title: str | None = "Accuracy vs perturbation budget",
                         eps_mark: float | None = None, ax=None) -> plt.Figure:
    """Accuracy (y, %) against eps (x) for one or several models / attacks.

    frames: a DataFrame with columns `eps`, `accuracy` (from `evaluation.eps_sweep`), a list of them, or a
    {label: DataFrame} dict. eps_mark: draw a vertical line at the standard budget.
    """
    runs = _as_runs(frames)
    if ax is None:
        fig, ax = plt.subplots(figsize=(8, 5))
    else:
        fig = ax.figure
    for name, df in runs.items():
        missing = {"eps", "accuracy"} - set(df.columns)
        if missing:
            raise ValueError(f"frame {name!r} lacks column(s) {sorted(missing)}; expected eps_sweep's (eps, accuracy)")
        ax.plot(df["eps"], 100 * df["accuracy"], marker="o", label=str(name))
    if eps_mark is not None:
        ax.axvline(eps_mark, color="gray", linestyle="--", linewidth=1.5, label=f"eps = {eps_mark:.3g}")
    ax.set_xlabel("eps (L-inf budget, pixel units)")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(-2, 102)
    if title:
        ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    return fig


HISTORY_PANELS = {
    "training loss": "loss",
    "accuracy on training batches": "acc",
    "held-out clean accuracy": "val_clean_acc",
    "held-out PGD accuracy": "val_pgd_acc",
}
"""Panels of `plot_history`: {title: column of `training.train`'s epoch records}. For PGD-AT the training
batches are adversarial, so `acc` is the training robust accuracy."""


def _history_frame(history):
    """A TrainResult, History, DataFrame or list of records -> DataFrame of the epoch records."""
    import pandas as pd
    if hasattr(history, "history") and not isinstance(history, pd.DataFrame):  # a TrainResult
        history = history.history
    if isinstance(history, pd.DataFrame):
        df = history
    else:
        df = pd.DataFrame([dict(r) for r in history])
    if "kind" in df.columns:
        df = df[df["kind"] == "epoch"]
    return df.reset_index(drop=True)


def plot_history(histories, panels: Mapping[str, str] | None = None, title: str | None = None) -> plt.Figure:
    """Training curves per epoch, one panel per metric, one line per run.

    histories: a history (`TrainResult`, `History`, DataFrame or list of records from `training.train`; only
    kind='epoch' records are used), a list of them, or a {run name: history} dict. panels: {panel title:
    column}; default `HISTORY_PANELS` (loss, accuracy on training batches, held-out clean and PGD accuracy);
    panels whose column no run has are left out. Accuracies are drawn in %.
    """
    import pandas as pd
    if isinstance(histories, Mapping) or (isinstance(histories, (list, tuple)) and histories
                                          and not isinstance(histories[0], Mapping)):
        runs = {name: _history_frame(h) for name, h in _as_runs(histories, default="run").items()}
    else:
        runs = {"run": _history_frame(histories)}
    panels = dict(panels or HISTORY_PANELS)
    shown = [(t, c) for t, c in panels.items() if any(c in df.columns and df[c].notna().any() for df in runs.values())]
    if not shown:
        cols = sorted({c for df in runs.values() for c in df.columns})
        raise ValueError(f"no panel column {sorted(panels.values())} in the history; its columns: {cols}")
    ncols = min(2, len(shown))              # wrapped: 4 panels as 2 x 2, not one 18-inch row
    nrows = -(-len(shown) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5 * ncols, 3.8 * nrows + (0.5 if title else 0)),
                             squeeze=False)
    for ax in axes.flat[len(shown):]:
        ax.axis("off")
    for ax, (panel, col) in zip(axes.flat, shown):
        for name, df in runs.items():
            if col not in df.columns:
                continue
            x = df["epoch"] if "epoch" in df.columns else pd.Series(range(1, len(df) + 1))
            scale = 100 if "acc" in col else 1
            ax.plot(x, df[col] * scale, marker="o", label=str(name))
        ax.set_title(panel)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("%" if "acc" in col else "")
        if len(runs) > 1:
            ax.legend(fontsize=MIN_FONT_SIZE)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_similarity_matrix(views: Sequence[torch.Tensor], names: Sequence[str] | None = None,
                           labels: torch.Tensor | None = None, title: str | None = "Cosine similarity",
                           annotate: bool | None = None) -> plt.Figure:
    """Heat map of the cosine similarities between all embeddings of all views (seaborn).

    views: k tensors (B, D) (e.g. clean, adversarial); stacked view after view, so the positive pairs of an
    InfoNCE loss sit on the off-diagonal blocks' diagonals. names: one per view; labels: (B,) to tick classes.
    """
    import seaborn as sns
    if isinstance(views, torch.Tensor):
        views = [views]
    if not views:
        raise ValueError("views must hold at least one (B, D) tensor")
    b = views[0].shape[0]
    for i, v in enumerate(views):
        if v.dim() != 2 or v.shape[0] != b:
            raise ValueError(f"views[{i}] must have shape ({b}, D) like views[0], got {tuple(v.shape)}")
    names = list(names) if names is not None else [f"view {i}" for i in range(len(views))]
    if len(names) != len(views):
        raise ValueError(f"names has {len(names)} entries for {len(views)} views")
    z = F.normalize(torch.cat([v.detach().float().cpu() for v in views]), dim=1)
    sim = (z @ z.T).numpy()
    n = sim.shape[0]
    ticks = [f"{nm[:5]}{'' if labels is None else ':' + str(int(labels[j]))}" for nm in names for j in range(b)]
    annotate = n <= 12 if annotate is None else annotate
    side = min(MAX_FIG_WIDTH - 1.5, 3.0 + 0.35 * n)
    fig, ax = plt.subplots(figsize=(side + 1.5, side))
    sns.heatmap(sim, ax=ax, vmin=-1, vmax=1, cmap="RdBu_r", square=True, annot=annotate, fmt=".2f",
                xticklabels=ticks if n <= 40 else False, yticklabels=ticks if n <= 40 else False,
                cbar_kws={"label": "cosine similarity"})
    for k in range(1, len(views)):
        ax.axhline(k * b, color="black", linewidth=2)
        ax.axvline(k * b, color="black", linewidth=2)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------------------- live curves
class LiveCurves:
    """Live training curves in a notebook: `train(..., callback=LiveCurves())`.

    `training.train` calls `callback(record, model)` for every history record; on each epoch record the
    figure (`plot_history` panels) is redrawn in place through an IPython display handle, so the notebook
    shows one figure that grows epoch by epoch. Step records are ignored. Outside IPython it prints the epoch
    record instead. `curves.frame()` is the epoch history seen so far. Never stops training (returns None).
    """

    def __init__(self, panels: Mapping[str, str] | None = None, title: str | None = None, name: str = "run"):
        self.panels, self.title, self.name = panels, title, name
        self.rows: list[dict] = []
        self._handle = None

    def frame(self):
        import pandas as pd
        return pd.DataFrame(self.rows)

    def __call__(self, record: Mapping, model=None) -> None:
        if record.get("kind", "epoch") != "epoch":
            return None
        self.rows.append(dict(record))
        self.redraw()
        return None

    def redraw(self) -> None:
        try:
            from IPython import get_ipython
            from IPython.display import display
            shell = get_ipython()
        except ImportError:  # pragma: no cover - IPython ships with the course extras
            shell = None
        if shell is None:
            last = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in self.rows[-1].items()}
            print(last)
            return
        fig = plot_history({self.name: self.frame()}, panels=self.panels, title=self.title)
        plt.close(fig)  # shown through the display handle only, not again by the inline backend
        if self._handle is None:
            self._handle = display(fig, display_id=True)
        else:
            self._handle.update(fig)


# ----------------------------------------------------------------------------------------------- attack explorer
EXPLORER_ATTACKS = ("fgsm", "pgd", "noise")


def _fig_png(fig) -> bytes:
    """The figure as PNG bytes: one Agg draw, then a fast PNG encoding (the explorer's refresh path)."""
    from PIL import Image
    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    buf = io.BytesIO()
    Image.fromarray(np.asarray(canvas.buffer_rgba())).save(buf, format="png", compress_level=1)
    return buf.getvalue()


def make_explorer_attack(name: str, steps: int = 10, seed: int = 0) -> Callable:
    """attack(model, x, y, eps) -> x_adv for the explorer: 'fgsm', 'pgd' (L-inf, `steps` steps of eps/4,
    fixed random start) or 'noise' (random signs of size eps, the sanity baseline)."""
    check_choice(name, "attack", EXPLORER_ATTACKS)

    def attack(model, x, y, eps):
        if eps == 0:
            return x.clone()
        if name == "fgsm":
            return _attacks.fgsm(model, x, y, eps)
        g = torch.Generator(device=x.device).manual_seed(seed)
        if name == "pgd":
            return _attacks.pgd(model, x, y, eps, alpha=eps / 4, steps=steps, generator=g)
        return _attacks.random_noise(model, x, y, eps, generator=g)
    return attack


def attack_explorer(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, classes: Sequence[str] | None = None,
                    eps_max: float = 0.3, attacks: Iterable[str] = ("fgsm", "pgd"), eps: float | None = None,
                    steps: int = 10):
    """An ipywidgets explorer: pick an image, an attack and eps; the image, the amplified perturbation and the
    predicted probabilities update live (on every slider change, no button).

    x: (N, C, H, W) float in [0, 1], y: (N,) int64 (N images to choose from). Returns an `AttackExplorer`
    (an ipywidgets VBox; its `.eps_slider`, `.attack_dropdown`, `.index_slider`, `.image`, `.text` are the parts;
    CSS classes `clead-attack-explorer`, `clead-eps-slider`, `clead-attack-dropdown`, `clead-index-slider`,
    `clead-explorer-image`, `clead-explorer-text`).
    """
    return AttackExplorer(model, x, y, classes, eps_max, attacks, eps, steps)


def _explorer_base():
    import ipywidgets as widgets
    return widgets.VBox


class AttackExplorer(_explorer_base()):  # type: ignore[misc]
    """See `attack_explorer`."""

    def __init__(self, model, x, y, classes=None, eps_max=0.3, attacks=("fgsm", "pgd"), eps=None, steps=10):
        import ipywidgets as widgets
        check_images(x)
        check_eps(eps_max, "eps_max")
        attacks = tuple(attacks)
        if not attacks:
            raise ValueError(f"attacks must name at least one of {EXPLORER_ATTACKS}")
        for a in attacks:
            check_choice(a, "attack", EXPLORER_ATTACKS)
        if len(y) != len(x):
            raise ValueError(f"x and y disagree on the number of images: {len(x)} vs {len(y)}")
        self.model, self.x, self.y, self.classes = model, x, y, classes
        self.device = device_of(model)
        self._attacks = {a: make_explorer_attack(a, steps=steps) for a in attacks}
        eps = eps_max / 2 if eps is None else check_eps(eps)
        step = max(eps_max / 100, 1e-4)
        self.eps_slider = widgets.FloatSlider(value=eps, min=0.0, max=eps_max, step=step, description="eps",
                                              readout_format=".3f", continuous_update=False,
                                              layout=widgets.Layout(width="380px"))
        self.attack_dropdown = widgets.Dropdown(options=list(attacks), value=attacks[0], description="attack",
                                                layout=widgets.Layout(width="200px"))
        self.index_slider = widgets.IntSlider(value=0, min=0, max=len(x) - 1, description="image",
                                              continuous_update=False, layout=widgets.Layout(width="380px"))
        # 9 x 6.6 inches at 80 dpi: a 720 x 528 pixel picture (controls: 960 px; all within 1,024 px)
        self.image = widgets.Image(format="png", layout=widgets.Layout(width="720px"))
        self.text = widgets.HTML()
        for w, css in ((self, "clead-attack-explorer"), (self.eps_slider, "clead-eps-slider"),
                       (self.attack_dropdown, "clead-attack-dropdown"), (self.index_slider, "clead-index-slider"),
                       (self.image, "clead-explorer-image"), (self.text, "clead-explorer-text")):
            w.add_class(css)
        self._fig = Figure(figsize=(9, 6.6), dpi=80)
        FigureCanvasAgg(self._fig)  # attaches itself as fig.canvas: tight_layout and drawing use Agg
        self._axes = _perturbation_axes(self._fig)
        self._drawn = False
        self.render_count = 0
        controls = widgets.HBox([self.attack_dropdown, self.eps_slider, self.index_slider])
        super().__init__([controls, self.text, self.image])
        for w in (self.eps_slider, self.attack_dropdown, self.index_slider):
            w.observe(self._on_change, names="value")
        self.update()

    def _on_change(self, change) -> None:
        self.update()

    def compute(self) -> dict:
        """Attack the selected image; returns x, x_adv (C, H, W), probs_clean, probs_adv, label."""
        i = self.index_slider.value
        x = self.x[i:i + 1].to(self.device)
        y = self.y[i:i + 1].to(self.device)
        eps = float(self.eps_slider.value)
        x_adv = self._attacks[self.attack_dropdown.value](self.model, x, y, eps)
        was_training = self.model.training
        self.model.eval()
        with torch.no_grad():
            p = F.softmax(self.model(torch.cat([x, x_adv])), dim=1).cpu()
        self.model.train(was_training)
        return {"x": x[0].cpu(), "x_adv": x_adv[0].cpu(), "probs_clean": p[0], "probs_adv": p[1],
                "label": int(y[0]), "eps": eps}

    def update(self) -> None:
        r = self.compute()
        if self._drawn:
            _refresh_perturbation(self._axes, r["x"], r["x_adv"], r["probs_clean"], r["probs_adv"], self.classes,
                                  r["label"])
        else:
            _draw_perturbation(self._axes, r["x"], r["x_adv"], r["probs_clean"], r["probs_adv"], self.classes,
                               r["label"])
            self._fig.tight_layout()   # once: later refreshes keep this layout (titles keep their length)
            self._drawn = True
        self.image.value = _fig_png(self._fig)
        self.render_count += 1
        k_clean, k_adv = int(r["probs_clean"].argmax()), int(r["probs_adv"].argmax())
        verdict = ("<b style='color:#d62728'>fooled</b>" if k_adv != k_clean else "<b>not fooled</b>")
        self.text.value = (f"<span style='font-size:16px'>{self.attack_dropdown.value.upper()} at eps = "
                           f"{r['eps']:.3f}: label {_name(self.classes, r['label'])}, clean prediction "
                           f"{_name(self.classes, k_clean)} ({float(r['probs_clean'][k_clean]):.0%}), "
                           f"adversarial prediction {_name(self.classes, k_adv)} "
                           f"({float(r['probs_adv'][k_adv]):.0%}) &rarr; {verdict}</span>")
