"""The faithful pipeline's defaults follow the authors' code: the CW view made on a SimCLR augmentation (crop,
flip, colour jitter, grayscale), each linear-head batch the surrogate's FGSM view with probability 0.5, 50
head epochs at lr 0.1 halved every 15, the head kept on clean held-out accuracy; 'course-v1' keeps the
previous choices."""
from __future__ import annotations

import pytest
import torch

from clead_lite import faithful as fa
from clead_lite import training as tr
from clead_lite.models import SmallCNN
from clead_lite.faithful import FaithfulConfig, head_uses_fgsm
from clead_lite.training import TrainConfig, TrainStep


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_model(seed: int = 0) -> SmallCNN:
    torch.manual_seed(seed)
    return SmallCNN(width=8, feature_dim=32, proj_dim=16)


def test_authors_recipe_is_the_default_and_course_v1_keeps_the_old_choices():
    cfg = FaithfulConfig().resolved()
    assert cfg.faithful_recipe == "authors"
    assert cfg.view_kinds == ("pgd_crop", "fgsm", "cw_aug") and cfg.encoder_views == ("pgd_crop", "cw_aug")
    assert cfg.head_fgsm_mode == "random" and cfg.head_fgsm_p == 0.5 and cfg.head_select == "clean"
    assert (cfg.recipe("head_epochs"), cfg.recipe("head_lr"), cfg.recipe("head_schedule")) == (50, 0.1, "step")
    assert cfg.aug_crop_scale == (0.2, 1.0)
    old = FaithfulConfig(faithful_recipe="course-v1").resolved()
    assert old.view_kinds == ("pgd_crop", "fgsm", "cw") and old.head_fgsm_mode == "alternate"
    assert old.head_select == "pgd" and old.recipe("head_epochs") is None and old.recipe("head_lr") is None
    # a field given explicitly wins over the recipe
    assert FaithfulConfig(head_select="pgd").resolved().head_select == "pgd"
    with pytest.raises(ValueError, match="faithful_recipe"):
        FaithfulConfig(faithful_recipe="paper")
    with pytest.raises(ValueError, match="encoder_views"):
        FaithfulConfig(view_kinds=("pgd", "fgsm"), encoder_views=("pgd", "cw"))
    # TrainConfig holds the loop's settings only: the pipeline's are not there to be set by mistake
    assert "view_kinds" not in TrainConfig().to_dict()
    with pytest.raises(TypeError, match="unknown TrainConfig field"):
        TrainConfig().replace(head_epochs=3)


def test_step_schedule_halves_every_15_epochs():
    steps_per_epoch, epochs = 4, 50
    total = steps_per_epoch * epochs
    factors = [tr.lr_factor(i, total, "step", epochs=epochs, step_every=15, gamma=0.5) for i in range(total)]
    per_epoch = factors[::steps_per_epoch]
    assert per_epoch[:15] == [1.0] * 15 and per_epoch[15:30] == [0.5] * 15
    assert per_epoch[30:45] == [0.25] * 15 and per_epoch[45:] == [0.125] * 5


def test_head_fgsm_batches_are_random_at_rate_one_half_and_deterministic_per_seed():
    cfg = FaithfulConfig()
    draws = [head_uses_fgsm(cfg, 0, i) for i in range(4000)]
    assert 0.46 < sum(draws) / len(draws) < 0.54
    assert draws == [head_uses_fgsm(cfg, 0, i) for i in range(4000)]                   # same seed, same batches
    assert draws != [head_uses_fgsm(cfg, 1, i) for i in range(4000)]                   # another seed, others
    runs = sum(a == b for a, b in zip(draws, draws[1:]))   # not alternation: about half the neighbours agree
    assert 0.4 * len(draws) < runs < 0.6 * len(draws)
    alternate = cfg.replace(faithful_recipe="course-v1")
    assert [head_uses_fgsm(alternate, 0, i) for i in range(6)] == [False, True] * 3
    assert sum(head_uses_fgsm(cfg.replace(head_fgsm_p=0.2), 0, i) for i in range(4000)) / 4000 == pytest.approx(0.2, abs=0.03)


def test_the_head_step_trains_on_the_fgsm_view_in_the_drawn_batches():
    model = tiny_model().eval()
    cfg = TrainConfig(method="faithful_head", eps=0.3, batch_size=8, lr=0.01).resolved()
    step = TrainStep(model, cfg, torch.device("cpu"), total_steps=200, loss=fa.head_loss(FaithfulConfig()))
    used = []
    real = step.ce
    step.ce = lambda xb, yb: (used.append(bool(xb.max() > 0.5)), real(xb, yb))[1]   # FGSM part: ones
    stack = torch.cat([torch.zeros(8, 1, 28, 28, dtype=torch.uint8), torch.full((8, 1, 28, 28), 255, dtype=torch.uint8)], 1)
    for _ in range(200):
        step.step(stack, torch.zeros(8, dtype=torch.int64))
    assert used == [head_uses_fgsm(FaithfulConfig(), cfg.seed, i) for i in range(200)]
    assert 0.35 < sum(used) / 200 < 0.65


def test_simclr_augment_crops_flips_jitters_and_is_seeded():
    torch.manual_seed(0)
    x = torch.rand(64, 3, 16, 16)
    g = lambda s=0: torch.Generator().manual_seed(s)
    # flip only (full-size crop of aspect 1, no jitter, no gray): each image is itself or its mirror, both occur
    flipped = fa.simclr_augment(x, scale=(1.0, 1.0), jitter_p=0.0, gray_p=0.0, generator=g())
    ratio_free = fa.random_resized_crop(x, (1.0, 1.0), ratio=(1.0, 1.0), flip=True, generator=g())
    same = [(ratio_free[i] - x[i]).abs().max() < 1e-5 for i in range(64)]
    mirror = [(ratio_free[i] - x[i].flip(-1)).abs().max() < 1e-5 for i in range(64)]
    assert all(s or m for s, m in zip(same, mirror)) and 10 < sum(mirror) < 54
    assert flipped.shape == x.shape
    # crop: a 20 % area box resized back is far from the image and its mirror
    cropped = fa.simclr_augment(x, scale=(0.2, 0.2), jitter_p=0.0, gray_p=0.0, generator=g())
    assert min(min((cropped[i] - x[i]).abs().mean(), (cropped[i] - x[i].flip(-1)).abs().mean()) for i in range(64)) > 0.05
    # jitter p = 1 changes colours; p = 0 leaves the image; grayscale p = 1 makes the channels equal
    jittered = fa.color_jitter(x, p=1.0, generator=g())
    assert (jittered - x).abs().mean() > 0.02 and torch.equal(fa.color_jitter(x, p=0.0, generator=g()), x)
    gray = fa.simclr_augment(x, jitter_p=0.0, gray_p=1.0, generator=g())
    assert torch.allclose(gray[:, 0], gray[:, 1]) and torch.allclose(gray[:, 1], gray[:, 2])
    full = fa.simclr_augment(x, generator=g())
    assert full.min() >= 0 and full.max() <= 1
    assert torch.equal(full, fa.simclr_augment(x, generator=g())) and not torch.equal(full, fa.simclr_augment(x, generator=g(1)))


def test_color_jitter_on_one_channel_is_brightness_and_contrast():
    torch.manual_seed(0)
    x = torch.rand(16, 1, 8, 8) * 0.5 + 0.25        # away from 0 and 1: no clamping
    out = fa.color_jitter(x, brightness=0.2, contrast=0.2, p=1.0, generator=torch.Generator().manual_seed(0))
    for i in range(16):   # an affine map of the pixel values with a positive slope, per image
        a, b = x[i].flatten(), out[i].flatten()
        slope = ((a - a.mean()) * (b - b.mean())).sum() / ((a - a.mean()) ** 2).sum()
        assert 0.6 < slope < 1.5 and torch.allclose(b, b.mean() + slope * (a - a.mean()), atol=1e-5)
    assert not torch.allclose(out, x, atol=1e-3)


def test_cw_aug_view_is_made_on_the_augmented_image(mnist5k_split):
    x, y = mnist5k_split.x_train[:16], mnist5k_split.y_train[:16]
    views = fa.precompute_adversarial_views(tiny_model().eval(), x, y, eps=0.3, kinds=("cw", "cw_aug"), cw_steps=2, progress=False)
    plain, aug = views["cw"].float() / 255, views["cw_aug"].float() / 255
    assert aug.dtype == torch.float32 and views["cw_aug"].dtype == torch.uint8
    # CW moves pixels a little; the augmentation moves them a lot
    assert (plain - x).abs().mean() < 0.05 and (aug - x).abs().mean() > 0.1


def test_head_selection_uses_clean_held_out_accuracy(mnist5k_split):
    x, y = mnist5k_split.x_train[:96], mnist5k_split.y_train[:96]
    xv, yv = mnist5k_split.x_train[96:160], mnist5k_split.y_train[96:160]
    cfg = TrainConfig(method="clead_faithful", eps=0.3, epochs=4, batch_size=32, lr=0.1, schedule="step", log_every=2)
    res = fa.train_linear_head(tiny_model(), x, y, cfg, x_val=xv, y_val=yv, progress=False)
    epochs = res.history.epochs()
    assert all("val_pgd_acc" not in e for e in epochs)          # the published pipeline never runs PGD here
    clean = [e["val_clean_acc"] for e in epochs]
    assert res.best_epoch == 1 + clean.index(max(clean)) and res.best_val_acc == max(clean)
    # course-v1 keeps the head epoch with the best held-out PGD accuracy
    old = fa.train_linear_head(tiny_model(), x, y, cfg, x_val=xv, y_val=yv, progress=False,
                               faithful=FaithfulConfig(faithful_recipe="course-v1"))
    pgd = [e["val_pgd_acc"] for e in old.history.epochs()]
    assert old.best_epoch == 1 + pgd.index(max(pgd)) and old.best_val_acc == max(pgd)


@pytest.mark.parametrize("field", ["attack_loss", "clean_ce", "supervised_contrastive", "split_views"])
def test_each_stage_accepts_a_clead_online_config(field):
    """The stages run their own method, so the fields only clead_online may set are turned off, not refused."""
    online = TrainConfig(method="clead_online", epochs=1, batch_size=8, eps=0.1, log_every=1,
                         **{field: "contrastive" if field == "attack_loss" else True})
    torch.manual_seed(0)
    x, y = torch.rand(16, 1, 28, 28), torch.arange(16) % 10
    views = {k: fa.to_uint8(x) for k in ("pgd_crop", "cw_aug")}
    model = SmallCNN()
    fa.train_surrogate(model, x, y, online, progress=False)
    fa.finetune_encoder(model, x, views, online, progress=False)
    fa.train_linear_head(model, x, y, online, progress=False)
