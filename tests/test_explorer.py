"""Tests for clead_lite.widgets.explorer: the precomputation on tiny data (untrained tiny SmallCNNs), the widget, and that
its controls change what it shows (observers triggered by setting the controls' values, as a browser would)."""
import numpy as np
import pytest
import torch

from clead_lite import attacks
from clead_lite.widgets.explorer import (COLOR_MODES, ExplorerData, embedding_explorer, fooled_indices, nearest_point,
                                 point_details, precompute_explorer_data)
from clead_lite.models import SmallCNN

N = 16


def pca2(z_clean, z_adv):
    """A deterministic 2-D projection for the tests that do not need UMAP itself."""
    z = torch.cat([z_clean, z_adv]).double()
    z = z - z.mean(0)
    _, _, v = torch.linalg.svd(z, full_matrices=False)
    return (z @ v[:2].T).float().numpy()


def tiny_models():
    out = {}
    for k, name in enumerate(("standard", "C-LEAD online")):
        torch.manual_seed(k)
        out[name] = SmallCNN(width=4, feature_dim=16, proj_dim=8)
    return out


@pytest.fixture(scope="module")
def setup():
    g = torch.Generator().manual_seed(0)
    x = torch.nn.functional.interpolate(torch.rand(N, 1, 7, 7, generator=g), size=28, mode="bilinear")
    y = torch.arange(N) % 4
    models = tiny_models()
    data = precompute_explorer_data(models, x, y, attacks=("fgsm", "noise"), eps_values=(0.1, 0.3),
                                    projector=pca2, progress=False)
    return models, x, y, data


def test_precompute_covers_every_combination_with_consistent_shapes(setup):
    models, x, y, data = setup
    assert isinstance(data, ExplorerData)
    assert data.models == ("standard", "C-LEAD online") and data.attacks == ("fgsm", "noise")
    assert set(data.entries) == {(m, a, e) for m in data.models for a in data.attacks for e in (0.1, 0.3)}
    for (m, a, eps), e in data.entries.items():
        assert e["coords"].shape == (2 * N, 2) and e["coords"].dtype == np.float32
        assert e["z_clean"].shape == e["z_adv"].shape == (N, 16)
        assert np.allclose(e["coords"], pca2(e["z_clean"], e["z_adv"]))
        assert e["x_adv"].shape == x.shape
        assert (e["x_adv"] - x).abs().max() <= eps + 1e-6
        assert e["x_adv"].min() >= 0 and e["x_adv"].max() <= 1
        assert e["probs_adv"].shape == (N, 10)
        assert torch.allclose(e["probs_adv"].sum(1), torch.ones(N), atol=1e-5)
        assert torch.equal(e["pred_adv"], e["probs_adv"].argmax(1))
        met = e["metrics"]
        assert met["robust_accuracy"] == pytest.approx(float((e["pred_adv"] == y).float().mean()))
        assert {"pair_cosine", "knn_accuracy", "silhouette"} <= set(met)
    table = data.metrics_table()
    assert len(table) == 8 and {"model", "attack", "eps", "pair_cosine"} <= set(table.columns)


def test_precompute_attacks_each_model_white_box(setup):
    """The FGSM images stored for a model are FGSM against that very model (not another one)."""
    models, x, y, data = setup
    for name, model in models.items():
        expected = attacks.fgsm(model, x, y, 0.3)
        assert torch.allclose(data.entry(name, "fgsm", 0.3)["x_adv"], expected, atol=1e-6)
    assert not torch.allclose(data.entry("standard", "fgsm", 0.3)["x_adv"],
                              data.entry("C-LEAD online", "fgsm", 0.3)["x_adv"])


def test_projection_is_fitted_on_clean_and_adversarial_together(setup):
    models, x, y, data = setup
    calls = []

    def recording(zc, za):
        calls.append((zc.shape, za.shape))
        return pca2(zc, za)
    precompute_explorer_data({"m": models["standard"]}, x, y, attacks=("fgsm",), eps_values=(0.3,),
                             projector=recording, progress=False)
    assert calls == [((N, 16), (N, 16))]


def test_point_details_are_the_selected_images(setup):
    models, x, y, data = setup
    i = 5
    d = point_details(data, "C-LEAD online", "fgsm", 0.1, i)
    assert torch.equal(d["x"], x[i])
    assert torch.allclose(d["x_adv"], attacks.fgsm(models["C-LEAD online"], x[i:i + 1], y[i:i + 1], 0.1)[0],
                          atol=1e-6)
    with torch.no_grad():
        logits = models["C-LEAD online"](torch.stack([d["x"], d["x_adv"]]))
    assert d["pred_clean"] == int(logits[0].argmax()) and d["pred_adv"] == int(logits[1].argmax())
    assert d["label"] == int(y[i])
    coords = data.entry("C-LEAD online", "fgsm", 0.1)["coords"]
    assert d["xy_clean"] == pytest.approx(tuple(coords[i])) and d["xy_adv"] == pytest.approx(tuple(coords[N + i]))
    with pytest.raises(IndexError, match=r"\[0, 15\]"):
        point_details(data, "standard", "fgsm", 0.1, N)
    with pytest.raises(KeyError, match="available"):
        point_details(data, "PGD-AT", "fgsm", 0.1, 0)


def test_nearest_point():
    coords = np.array([[0, 0], [5, 5], [1, 0], [9, 9]], dtype=np.float32)     # 2 images: clean 0,1; adv 0,1
    assert nearest_point(coords, 0.1, 0.1) == (0, "clean")
    assert nearest_point(coords, 8.0, 8.5) == (1, "adversarial")
    assert nearest_point(coords, 1.2, 0.0) == (0, "adversarial")


def test_widget_builds_with_css_classes_and_renders(setup):
    *_, data = setup
    w = embedding_explorer(data)
    assert "clead-embedding-explorer" in w._dom_classes
    for part, css in ((w.model_dropdown, "clead-explorer-model"), (w.eps_slider, "clead-explorer-eps"),
                      (w.attack_dropdown, "clead-explorer-attack"), (w.point_slider, "clead-explorer-point"),
                      (w.color_buttons, "clead-explorer-color"), (w.plot, "clead-explorer-plot"),
                      (w.caption, "clead-explorer-caption")):
        assert css in part._dom_classes
    assert w.plot.value[:8] == b"\x89PNG\r\n\x1a\n" and w.images.value[:4] == b"\x89PNG"
    assert w.render_count == 1
    assert list(w.model_dropdown.options) == list(data.models)
    assert [v for _, v in w.eps_slider.options] == [0.1, 0.3]


def test_every_control_changes_the_rendered_output(setup):
    *_, data = setup
    w = embedding_explorer(data, model="standard", attack="fgsm", eps=0.3, index=0)
    seen = {(w.plot.value, w.images.value, w.caption.value, w.metrics.value)}

    def changed():
        now = (w.plot.value, w.images.value, w.caption.value, w.metrics.value)
        new = now not in seen
        seen.add(now)
        return new
    w.model_dropdown.value = "C-LEAD online"
    assert changed() and "C-LEAD online" in w.metrics.value
    w.attack_dropdown.value = "noise"
    assert changed() and "noise" in w.metrics.value
    w.eps_slider.value = 0.1
    assert changed() and "eps = 0.1" in w.metrics.value
    for mode in COLOR_MODES[1:]:
        before = w.plot.value
        w.color_buttons.value = mode
        assert w.plot.value != before
    before_caption = w.caption.value
    w.point_slider.value = 7
    assert "image 7:" in w.caption.value and w.caption.value != before_caption
    assert w.render_count == 1 + 3 + 2 + 1
    d = w.details()
    assert d["index"] == 7 and torch.equal(d["x"], data.x[7])
    assert torch.equal(d["x_adv"], data.entry("C-LEAD online", "noise", 0.1)["x_adv"][7])


def test_find_nearest_and_next_fooled_buttons(setup):
    *_, data = setup
    w = embedding_explorer(data, model="standard", attack="fgsm", eps=0.3, index=0)
    coords = data.entry("standard", "fgsm", 0.3)["coords"]
    w.find_u.value, w.find_v.value = float(coords[N + 9, 0]), float(coords[N + 9, 1])
    w._on_find()                                     # what the button does
    assert w.point_slider.value == nearest_point(coords, *coords[N + 9])[0]
    assert "nearest to" in w.status.value and f"image {w.point_slider.value}:" in w.caption_text()
    assert w.select_nearest(*coords[3]) == (3, "clean") and w.point_slider.value == 3
    fooled = fooled_indices(data, "standard", "fgsm", 0.3)
    w.point_slider.value = 0
    w._on_next_fooled()
    if len(fooled):
        assert w.point_slider.value == int(fooled[fooled > 0][0] if (fooled > 0).any() else fooled[0])
        assert point_details(data, "standard", "fgsm", 0.3, w.point_slider.value)["fooled"]
    else:
        assert "fools no" in w.status.value


def test_bad_arguments_give_clear_errors(setup):
    models, x, y, data = setup
    with pytest.raises(ValueError, match="unknown attack 'cw'"):
        precompute_explorer_data(models, x, y, attacks=("cw",), projector=pca2, progress=False)
    with pytest.raises(ValueError, match="eps_values must be > 0"):
        precompute_explorer_data(models, x, y, eps_values=(0.0, 0.3), projector=pca2, progress=False)
    with pytest.raises(ValueError, match=r"must be in \[0, 1\], got 8"):
        precompute_explorer_data(models, x, y, eps_values=(8,), projector=pca2, progress=False)
    with pytest.raises(ValueError, match="non-empty dict"):
        precompute_explorer_data({}, x, y, projector=pca2, progress=False)
    with pytest.raises(ValueError, match="lie in"):
        precompute_explorer_data(models, x * 255, y, projector=pca2, progress=False)
    with pytest.raises(ValueError, match="unknown color"):
        embedding_explorer(data, color="rainbow")
    with pytest.raises(KeyError, match="available"):
        embedding_explorer(data, eps=0.2)
    with pytest.raises(TypeError, match="ExplorerData"):
        embedding_explorer({"not": "data"})


def test_default_projection_is_a_cached_umap_of_both_sets(setup, tmp_path):
    """With the default projector, each map is one UMAP on clean + adversarial (course.umap_cache, on disk:
    cached_umap_projection): a second precomputation reads the cache and gives identical maps."""
    models, x, y, _ = setup
    kw = dict(attacks=("fgsm",), eps_values=(0.3,), n_neighbors=5, cache_dir=tmp_path, progress=False)
    first = precompute_explorer_data({"m": models["standard"]}, x, y, **kw)
    assert len(list(tmp_path.glob("*.npy"))) == 1
    second = precompute_explorer_data({"m": models["standard"]}, x, y, **kw)
    a, b = first.entry("m", "fgsm", 0.3)["coords"], second.entry("m", "fgsm", 0.3)["coords"]
    assert a.shape == (2 * N, 2) and np.array_equal(a, b)
    assert np.isfinite(a).all() and a.std(0).min() > 0
