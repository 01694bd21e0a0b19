"""Readable on a projector: every figure of viz / explorer at most 10 inches wide with no text under 12 pt (with
the notebooks' style, notebook_setup.PROJECTOR_RC), the widgets within 1,024 pixels, and the notebooks' own
code cells free of wide figsizes, small fontsizes, wide pixel layouts and wide text tables."""
import json
import re
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import pandas as pd
import pytest
import torch
from matplotlib.text import Text

from clead_lite.widgets import viz
from clead_lite.widgets.explorer import draw_map, embedding_explorer, precompute_explorer_data
from clead_lite.models import SmallCNN
from clead_lite.course.notebook_setup import PROJECTOR_RC, set_plot_style

matplotlib.use("Agg")
NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9][0-9]_*.ipynb"))
MAX_IN, MIN_PT, MAX_PX = 10.0, 12, 1024
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


@pytest.fixture(autouse=True)
def projector_style():
    with matplotlib.rc_context():
        set_plot_style()
        yield
    plt.close("all")


def small_texts(fig) -> list[tuple[str, float]]:
    """(text, size) of every visible, non-empty text of the figure below MIN_PT points."""
    fig.canvas.draw()       # legends, tick labels and annotations exist once drawn
    return [(t.get_text(), t.get_fontsize()) for t in fig.findobj(Text)
            if t.get_visible() and t.get_text().strip() and t.get_fontsize() < MIN_PT]


def assert_readable(fig, what: str) -> None:
    assert fig.get_figwidth() <= MAX_IN + 1e-9, f"{what}: {fig.get_figwidth():.1f} inches wide (at most {MAX_IN})"
    small = small_texts(fig)
    assert not small, f"{what}: texts under {MIN_PT} pt: {small[:5]}"


def test_the_style_itself_is_large_enough():
    assert PROJECTOR_RC["figure.figsize"][0] <= MAX_IN
    for key, value in PROJECTOR_RC.items():
        if key.endswith("size") and key != "figure.figsize":
            assert value >= MIN_PT, (key, value)


def test_rules_catch_what_they_forbid():
    # the checks themselves fail on a wide figure and on a small legend
    wide, ax = plt.subplots(figsize=(18, 4))
    ax.plot([0, 1], label="a")
    ax.legend(fontsize=9)
    with pytest.raises(AssertionError, match="inches wide"):
        assert_readable(wide, "wide")
    wide.set_figwidth(8)
    with pytest.raises(AssertionError, match="under 12 pt"):
        assert_readable(wide, "small legend")


def images(n=16, c=1):
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, c, 28, 28, generator=g)


@pytest.mark.parametrize("n, ncols", [(16, 8), (20, 10), (3, 8)])
def test_show_images(n, ncols):
    x = images(n)
    y = torch.arange(n) % 10
    assert_readable(viz.show_images(x, y, preds=(y + 1) % 10, classes=CLASSES, ncols=ncols, title="grid"),
                    f"show_images({n}, ncols={ncols})")


def test_plot_perturbation_is_wrapped():
    x = images(1)[0]
    p = torch.softmax(torch.randn(10, generator=torch.Generator().manual_seed(1)), 0)
    fig = viz.plot_perturbation(x, (x + 0.1).clamp(0, 1), p, p.flip(0), CLASSES, label=3)
    assert_readable(fig, "plot_perturbation")
    rows = {round(ax.get_position().y0, 2) for ax in fig.axes}
    assert len(rows) == 2, f"4 panels on {len(rows)} row(s): expected 2 x 2"


def test_plot_accuracy_vs_eps():
    frame = pd.DataFrame({"eps": [0, 0.1, 0.2, 0.3], "accuracy": [0.99, 0.8, 0.5, 0.1]})
    fig = viz.plot_accuracy_vs_eps({"standard": frame, "PGD-AT": frame.assign(accuracy=0.9)}, eps_mark=0.3,
                                   title="accuracy vs eps")
    assert_readable(fig, "plot_accuracy_vs_eps")


@pytest.mark.parametrize("panels", [1, 2, 3, 4])
def test_plot_history_wraps(panels):
    records = [{"kind": "epoch", "epoch": e, "loss": 1 / e, "acc": 0.5 + e / 20, "val_clean_acc": 0.6,
                "val_pgd_acc": 0.3} for e in range(1, 5)]
    chosen = dict(list(viz.HISTORY_PANELS.items())[:panels])
    fig = viz.plot_history({"standard": records, "PGD-AT": records}, panels=chosen, title="training")
    assert_readable(fig, f"plot_history({panels} panels)")


@pytest.mark.parametrize("b", [3, 8, 30])
def test_plot_similarity_matrix(b):
    g = torch.Generator().manual_seed(0)
    views = [torch.randn(b, 8, generator=g) for _ in range(2)]
    fig = viz.plot_similarity_matrix(views, names=["clean", "adversarial"], labels=torch.arange(b) % 10)
    assert_readable(fig, f"plot_similarity_matrix({b})")


def test_live_curves_figure():
    curves = viz.LiveCurves(title="live")
    curves.rows = [{"kind": "epoch", "epoch": 1, "loss": 1.0, "acc": 0.5, "val_clean_acc": 0.6, "val_pgd_acc": 0.2},
                   {"kind": "epoch", "epoch": 2, "loss": 0.8, "acc": 0.6, "val_clean_acc": 0.7, "val_pgd_acc": 0.3}]
    assert_readable(viz.plot_history({"run": curves.frame()}, panels=curves.panels, title=curves.title), "LiveCurves")


# ------------------------------------------------------------------------------------------------ widgets
def _px(width) -> int | None:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)px\s*", str(width or ""))
    return int(float(m.group(1))) if m else None


def widget_width(w) -> int:
    """Estimated on-screen width in pixels: an explicit px width, else the sum of an HBox's children (even when
    it may wrap: it must fit unwrapped), the widest child of a VBox, or an estimate from the widget's text."""
    import ipywidgets as widgets
    explicit = _px(getattr(w.layout, "width", None))
    if explicit is not None:
        return explicit
    if isinstance(w, widgets.HBox):
        return sum(widget_width(c) for c in w.children) + 4 * len(w.children)
    if isinstance(w, widgets.Box):
        return max((widget_width(c) for c in w.children), default=0)
    if isinstance(w, widgets.ToggleButtons):
        return 90 + sum(20 + 9 * len(str(o)) for o in w.options)
    if isinstance(w, widgets.Button):
        return 40 + 9 * len(w.description)
    return 0       # HTML and other flexible text: wraps to what is left


def all_widgets(w):
    yield w
    for c in getattr(w, "children", ()):
        yield from all_widgets(c)


def assert_fits(root, what: str) -> None:
    total = widget_width(root)
    assert total <= MAX_PX, f"{what}: {total} px wide (at most {MAX_PX})"
    for w in all_widgets(root):
        px = _px(getattr(w.layout, "width", None))
        assert px is None or px <= MAX_PX, f"{what}: {type(w).__name__} {px} px"


def assert_picture_not_shrunk(image_widget, fig, what: str) -> None:
    # the picture is shown at its own pixel size or larger, so its fonts are at least their nominal size
    px = _px(image_widget.layout.width)
    assert px is not None and fig.get_figwidth() * fig.dpi <= px + 1, \
        f"{what}: a {fig.get_figwidth() * fig.dpi:.0f} px picture shrunk into {px} px"


def tiny_data(n=12):
    def pca2(zc, za):
        z = torch.cat([zc, za]).double()
        z = z - z.mean(0)
        _, _, v = torch.linalg.svd(z, full_matrices=False)
        return (z @ v[:2].T).float().numpy()
    models = {}
    for k, name in enumerate(("standard", "PGD-AT", "C-LEAD online", "C-LEAD faithful")):
        torch.manual_seed(k)
        models[name] = SmallCNN(width=4, feature_dim=16, proj_dim=8)
    x, y = images(n), torch.arange(n) % 10
    return models, x, y, precompute_explorer_data(models, x, y, attacks=("fgsm", "noise"), eps_values=(0.3,),
                                                  classes=CLASSES, projector=pca2, progress=False)


def test_attack_explorer_fits_1024_pixels():
    torch.manual_seed(0)
    model = SmallCNN(width=4, feature_dim=16, proj_dim=8)
    x, y = images(4), torch.arange(4)
    w = viz.attack_explorer(model, x, y, classes=CLASSES, eps_max=0.3)
    assert_fits(w, "attack_explorer")
    assert_readable(w._fig, "attack_explorer picture")
    assert_picture_not_shrunk(w.image, w._fig, "attack_explorer picture")
    w.eps_slider.value = 0.1                          # a refresh keeps the layout
    assert_readable(w._fig, "attack_explorer picture after a change")


def test_embedding_explorer_and_map_fit():
    models, x, y, data = tiny_data()
    w = embedding_explorer(data, model="standard", attack="fgsm", eps=0.3)
    assert_fits(w, "embedding_explorer")
    assert_readable(w._map_fig, "explorer map")
    assert_readable(w._img_fig, "explorer images")
    assert_picture_not_shrunk(w.plot, w._map_fig, "explorer map")
    assert_picture_not_shrunk(w.images, w._img_fig, "explorer images")
    # notebook 07's 2 x 2 figure of maps
    fig, axes = plt.subplots(2, 2, figsize=(10, 9))
    for k, (ax, name) in enumerate(zip(axes.flat, models)):
        draw_map(ax, data, name, "fgsm", 0.3, legend=k % 2 == 1)
    fig.tight_layout()
    assert_readable(fig, "four maps")


# ------------------------------------------------------------------------------------------------ notebooks
def code_cells():
    for path in NOTEBOOKS:
        for k, cell in enumerate(json.loads(path.read_text())["cells"]):
            if cell["cell_type"] == "code":
                yield f"{path.stem}[{k}]", "".join(cell["source"])


def notebook_problems(source: str) -> list[str]:
    out = []
    for m in re.finditer(r"figsize\s*=\s*\(\s*([\d.]+)", source):
        if float(m.group(1)) > MAX_IN:
            out.append(f"figsize width {m.group(1)}")
    for m in re.finditer(r"fontsize\s*=\s*([\d.]+)", source):
        if float(m.group(1)) < MIN_PT:
            out.append(f"fontsize {m.group(1)}")
    for m in re.finditer(r"width\s*=\s*[\"'](\d+)px", source):
        if int(m.group(1)) > MAX_PX:
            out.append(f"width {m.group(1)}px")
    if re.search(r"print\(\s*format_table\(", source):
        out.append("a plain-text table (display a DataFrame instead)")
    return out


def test_the_notebook_scan_catches_what_it_forbids():
    bad = 'fig, ax = plt.subplots(figsize=(18, 4))\nax.legend(fontsize=9)\nLayout(width="1090px")\nprint(format_table(rows))'
    assert len(notebook_problems(bad)) == 4
    assert notebook_problems('plt.subplots(figsize=(10, 4.5))\nax.legend(fontsize=12)') == []


def test_notebook_code_cells_are_projector_sized():
    assert NOTEBOOKS
    problems = [f"{where}: {p}" for where, src in code_cells() for p in notebook_problems(src)]
    assert not problems, problems


def test_budget_curve_and_gap_plots(tmp_path):
    import json as _json
    from clead_lite.course.budget import load_points, plot_budget_curve, plot_gaps, point_name
    for method, lam in (("pgd_at", None), ("trades", None), ("clead_online", 0.5)):
        for epochs in (4, 8, 16):
            for seed in (0, 1, 2):
                correct = [int((i + seed + epochs) % 3 > 0) for i in range(60)]
                key = {"dataset": "mnist5k", "method": method, "epochs": epochs, "seed": seed, "lam": lam}
                (tmp_path / point_name(**key)).write_text(_json.dumps({"key": key, "result": {
                    "clean": 0.95, "apgd": sum(correct) / 60, "apgd_correct": correct, "n_scored": 60}}))
    points = load_points(tmp_path)
    for name, plot in (("plot_budget_curve", plot_budget_curve), ("plot_gaps", plot_gaps)):
        fig, ax = plt.subplots(figsize=(9, 4.8))
        plot(points, ax=ax)
        assert_readable(fig, name)
