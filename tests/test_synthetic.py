"""The embedded synthetic dataset: deterministic, fast enough, and with a real domain shift."""

from __future__ import annotations

import torch
from torch.utils.data import TensorDataset

from swarm.nodes.models import build_model
from swarm.nodes.training import TrainSettings, evaluate, fit, make_loader
from swarm.server.data.options import DataOptions
from swarm.server.data.sources import synthetic


def test_render_is_deterministic_per_seed():
    a = synthetic.render("star", "painting", 8, 32, seed=3)
    b = synthetic.render("star", "painting", 8, 32, seed=3)
    c = synthetic.render("star", "painting", 8, 32, seed=4)
    assert a.dtype == torch.uint8 and a.shape == (8, 3, 32, 32)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_train_and_test_images_differ():
    train = synthetic.render("ring", "real", 4, 32, seed=0, split="train")
    test = synthetic.render("ring", "real", 4, 32, seed=0, split="test")
    assert not torch.equal(train, test)


def test_every_class_and_style_renders_distinct_images():
    means = {}
    for style in synthetic.DOMAINS:
        for name in synthetic.CLASSES:
            images = synthetic.render(name, style, 3, 24)
            assert images.float().std() > 5, (name, style)  # not a blank canvas
            means[style] = means.get(style, 0) + images.float().mean(dim=(0, 2, 3)) / len(synthetic.CLASSES)
    # Styles differ in colour statistics: white clipart/quickdraw, grey sketch, coloured others.
    assert means["quickdraw"].min() > 200 and means["clipart"].min() > 150
    assert (means["sketch"].max() - means["sketch"].min()) < 15
    assert means["real"].max() < 200 and means["painting"].max() < 200


def test_catalog_counts_and_domain_filter():
    cfg = {"name": "synthetic", "image_size": 16, "train_per_group": 3, "test_per_group": 2}
    catalog = synthetic.load(cfg, DataOptions(), wanted_domains=["painting", "real"])
    assert len(catalog.train) == 2 * 12 * 3 and len(catalog.test) == 2 * 12 * 2
    assert set(catalog.train.domain_idx) == {synthetic.DOMAINS.index("painting"), synthetic.DOMAINS.index("real")}
    assert catalog.train.images[0].shape == (3, 16, 16)


def _styles(styles, per_group, split):
    images, labels = [], []
    for style in styles:
        for label, name in enumerate(synthetic.CLASSES):
            images.append(synthetic.render(name, style, per_group, 32, 0, split))
            labels.append(torch.full((per_group,), label))
    return TensorDataset(torch.cat(images).float() / 127.5 - 1, torch.cat(labels))


def test_a_model_that_never_saw_painting_does_worse_on_it():
    torch.manual_seed(0)
    seen = ["clipart", "quickdraw"]
    model = build_model({"name": "resnet_small", "widths": [16, 32, 64], "blocks": [1, 1, 1]}, 12, 3, 32)
    fit(model, _styles(seen, 100, "train"), _styles(seen, 8, "val"),
        TrainSettings(max_epochs=5, patience=5), desc="styles")
    seen_acc = evaluate(model, make_loader(_styles(seen, 20, "test"), 256, shuffle=False))
    painting_acc = evaluate(model, make_loader(_styles(["painting"], 40, "test"), 256, shuffle=False))
    assert seen_acc > 0.6
    assert seen_acc - painting_acc > 0.35, (seen_acc, painting_acc)
