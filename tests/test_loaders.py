"""Each loader against fixtures in its real on-disk format, and the split builder on top of them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from swarm.config import data_options, scenario_of
from swarm.nodes.errors import DataNotFoundError
from swarm.server.data.build import build, rank_within_groups
from swarm.server.data.sources import fashion_mnist, folder
from swarm.server.data.sources.cifar import CIFAR10_CLASSES, CIFAR100_CLASSES
from tests.conftest import write_fmnist, write_image


def _labels_of(dataset) -> list[int]:
    return [int(dataset[i][1]) for i in range(len(dataset))]


def _first_pixel(dataset, i) -> int:
    """Undo the [-1, 1] normalisation of the first pixel (tests encode the label there)."""
    return int(round((float(dataset[i][0][0, 0, 0]) * 0.5 + 0.5) * 255))


def test_cifar10_new_classes_counts_and_targets(make_cfg, cifar10_root):
    cfg = make_cfg("scenario=cifar10_new_classes", f"data.root={cifar10_root}", "data.verify_checksums=false")
    data = build(scenario_of(cfg), data_options(cfg))
    # 50 train images per class, 10% of each class to validation; 20 test images per class.
    assert data.counts() == {"T": {"train": 270, "val": 30, "test": 120},
                             "P": {"train": 135, "val": 15, "test": 60},
                             "F": {"train": 45, "val": 5, "test": 20}}
    assert data.num_outputs == 10 and data.label_names == CIFAR10_CLASSES
    assert set(_labels_of(data.datasets["F"]["test"])) == {CIFAR10_CLASSES.index("ship")}
    p_train = data.datasets["P"]["train"]
    for i in range(0, len(p_train), 17):
        x, y = p_train[i]
        assert x.shape == (3, 32, 32) and x.dtype == torch.float32
        assert _first_pixel(p_train, i) == int(y)  # the pixels belong to the sample's own label


def test_cifar10_superclass_targets(make_cfg, cifar10_root):
    cfg = make_cfg("scenario=cifar10_new_subclasses", f"data.root={cifar10_root}", "data.verify_checksums=false")
    data = build(scenario_of(cfg), data_options(cfg))
    f_test = data.datasets["F"]["test"]
    for i in range(len(f_test)):
        fine = CIFAR10_CLASSES[_first_pixel(f_test, i)]
        assert int(f_test[i][1]) == (0 if fine == "truck" else 1)
    assert data.counts()["P"]["test"] == 80


class _Exploit:
    """What a hostile data folder could hold: unpickling it would run a command."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_a_cifar_batch_cannot_run_code_nor_pass_as_the_original(make_cfg, cifar10_root, tmp_path):
    import pickle

    from swarm.nodes.errors import CorruptDataError

    folder = cifar10_root / "cifar-10-batches-py"
    marker = tmp_path / "pwned"
    (folder / "data_batch_3").write_bytes(pickle.dumps({b"data": _Exploit(marker)}, protocol=2))
    cfg = make_cfg("scenario=cifar10_new_classes", f"data.root={cifar10_root}", "data.verify_checksums=false")
    with pytest.raises(CorruptDataError, match="data_batch_3 is not a CIFAR python batch: refusing to load "
                                                "(posix|os).system"):
        build(scenario_of(cfg), data_options(cfg))
    assert not marker.exists()
    # With checksums on (the default), a file that is not the published one is refused before reading.
    cfg = make_cfg("scenario=cifar10_new_classes", f"data.root={cifar10_root}")
    with pytest.raises(CorruptDataError, match="does not match its published MD5 sum .* data.verify_checksums=false"):
        build(scenario_of(cfg), data_options(cfg))


def test_a_cifar_batch_of_the_wrong_shape_is_one_clear_error(make_cfg, cifar10_root):
    import pickle

    from swarm.nodes.errors import CorruptDataError

    folder = cifar10_root / "cifar-10-batches-py"
    labels = list(range(10))
    (folder / "data_batch_2").write_bytes(pickle.dumps(
        {b"data": np.zeros((10, 100), np.uint8), b"labels": labels}, protocol=2))
    cfg = make_cfg("scenario=cifar10_new_classes", f"data.root={cifar10_root}", "data.verify_checksums=false")
    with pytest.raises(CorruptDataError, match=r"data_batch_2: b'data' must be a uint8 array of shape \(n, 3072\)"):
        build(scenario_of(cfg), data_options(cfg))
    (folder / "data_batch_2").write_bytes(pickle.dumps(
        {b"data": np.zeros((10, 3072), np.uint8), b"labels": [0] * 9 + [10]}, protocol=2))
    with pytest.raises(CorruptDataError, match=r"labels must hold one label in 0..9 per image"):
        build(scenario_of(cfg), data_options(cfg))


def test_cifar100_subclasses(make_cfg, cifar100_root):
    cfg = make_cfg("scenario=cifar100_new_subclasses", f"data.root={cifar100_root}", "data.verify_checksums=false")
    data = build(scenario_of(cfg), data_options(cfg))
    assert data.num_outputs == 20
    assert data.counts()["F"]["test"] == 80 and data.counts()["T"]["test"] == 40
    p_test = data.datasets["P"]["test"]
    scenario = data.scenario
    targets = scenario.class_targets(CIFAR100_CLASSES)
    for i in range(0, len(p_test), 7):
        assert int(p_test[i][1]) == targets[_first_pixel(p_test, i)]


def test_cifar_missing_names_the_path_and_the_fix(make_cfg, tmp_path):
    cfg = make_cfg("scenario=cifar100_new_classes", f"data.root={tmp_path}")
    with pytest.raises(DataNotFoundError, match=r"cifar-100-python/train.*data.download=true"):
        build(scenario_of(cfg), data_options(cfg))


@pytest.mark.parametrize("compress", [True, False])
def test_fashion_mnist_idx(make_cfg, tmp_path, monkeypatch, compress):
    monkeypatch.setattr(fashion_mnist, "SYSTEM_COPY", tmp_path / "no-system-copy")
    write_fmnist(tmp_path / "FashionMNIST" / "raw", compress=compress)
    cfg = make_cfg("scenario=fmnist_new_subclasses", f"data.root={tmp_path}")
    data = build(scenario_of(cfg), data_options(cfg))
    assert data.channels == 1 and data.image_size == 28
    assert data.counts()["P"] == {"train": 44, "val": 4, "test": 16}
    x, y = data.datasets["F"]["train"][0]
    assert x.shape == (1, 28, 28)
    labels = {int(data.datasets["F"]["test"][i][1]) for i in range(12)}
    assert labels == {0, 1}  # Coat and Shirt are garments (0), Ankle boot footwear (1)


def test_fashion_mnist_in_six_styles(make_cfg, tmp_path, monkeypatch):
    """Every image in exactly one style; each style a sixth of every class; T, P, F by style."""
    from swarm.server.data.sources import fashion_styles

    monkeypatch.setattr(fashion_mnist, "SYSTEM_COPY", tmp_path / "no-system-copy")
    write_fmnist(tmp_path / "FashionMNIST" / "raw", per_class_train=12, per_class_test=6)
    cfg = make_cfg("scenario=fmnist_new_domains", f"data.root={tmp_path}")
    data = build(scenario_of(cfg), data_options(cfg))
    assert data.num_outputs == 10 and data.catalog.domains == fashion_styles.STYLES
    train = data.catalog.train
    for label in range(10):
        assert np.bincount(train.domain_idx[train.class_idx == label], minlength=6).tolist() == [2] * 6
    styles = {role: {int(d) for d in train.domain_idx[data.datasets[role]["train"].indices]} for role in "TPF"}
    index = {name: k for k, name in enumerate(fashion_styles.STYLES)}
    assert styles == {"T": {index["original"], index["outline"]},
                      "P": {index["inverted"], index["noisy"], index["striped"]}, "F": {index["blurred"]}}
    # Styles are pure functions of the pixels: the plain image 0 with pixel (0, 0) = its label.
    plain = torch.zeros(1, 1, 28, 28, dtype=torch.uint8)
    plain[0, 0, 10:18, 10:18] = 200
    assert torch.equal(fashion_styles.render(plain, "inverted", np.array([0])), 255 - plain)
    assert fashion_styles.render(plain, "outline", np.array([0]))[0, 0, 14, 14] == 0  # flat inside: no edge
    assert fashion_styles.render(plain, "outline", np.array([0]))[0, 0, 10, 14] > 0  # the border is drawn
    noisy = fashion_styles.render(plain, "noisy", np.array([7]))
    assert torch.equal(noisy, fashion_styles.render(plain, "noisy", np.array([7])))
    assert not torch.equal(noisy, fashion_styles.render(plain, "noisy", np.array([8])))
    assert fashion_styles.render(plain, "blurred", np.array([0])).max() < 200  # softer, lower contrast
    with pytest.raises(ValueError, match="unknown style"):
        fashion_styles.render(plain, "sepia", np.array([0]))


def test_fashion_mnist_missing(make_cfg, tmp_path, monkeypatch):
    monkeypatch.setattr(fashion_mnist, "SYSTEM_COPY", tmp_path / "none")
    cfg = make_cfg("scenario=fmnist_new_classes", f"data.root={tmp_path}")
    with pytest.raises(DataNotFoundError, match="apt-get install dataset-fashion-mnist"):
        build(scenario_of(cfg), data_options(cfg))


def test_domainnet_official_layout_lazy(make_cfg, domainnet_root):
    cfg = make_cfg("scenario=domainnet", f"data.root={domainnet_root}", "data.image_size=16")
    data = build(scenario_of(cfg), data_options(cfg))
    counts = data.counts()
    # 3 classes x 4 train images per domain: 10% (rounded) of each (class, domain) to validation.
    assert counts["F"] == {"train": 12, "val": 0, "test": 6}
    assert counts["T"]["test"] == 12 and counts["P"]["test"] == 18
    x, y = data.datasets["P"]["test"][0]
    assert x.shape == (3, 16, 16)
    assert data.num_outputs == 345
    names = {data.label_names[int(data.datasets["P"]["train"][i][1])] for i in range(counts["P"]["train"])}
    assert names == {"aircraft_carrier", "The_Eiffel_Tower", "zigzag"}


def test_domainnet_reads_only_needed_domains(make_cfg, domainnet_root):
    (domainnet_root / "domainnet" / "real_train.txt").unlink()
    cfg = make_cfg("scenario=domainnet", "pretrain=task_only", f"data.root={domainnet_root}")
    data = build(scenario_of(cfg), data_options(cfg))
    assert data.counts()["T"]["train"] == 0
    cfg = make_cfg("scenario=domainnet", f"data.root={domainnet_root}")
    with pytest.raises(DataNotFoundError, match="real_train.txt.*M3SDA"):
        build(scenario_of(cfg), data_options(cfg))


def test_max_per_class_subsamples(make_cfg, domainnet_root):
    cfg = make_cfg("scenario=domainnet", f"data.root={domainnet_root}", "data.max_per_class=2",
                   "data.image_size=8")
    counts = build(scenario_of(cfg), data_options(cfg)).counts()
    assert counts["F"]["train"] + counts["F"]["val"] == 6 and counts["F"]["test"] == 6


def _folder_tree(root, with_domains: bool):
    for d in (["real", "clipart", "painting"] if with_domains else [None]):
        for c, value in (("cat", 10), ("dog", 200)):
            for i in range(5):
                parts = [d, c] if d else [c]
                write_image(root.joinpath(*parts, f"{i}.png"), value)
    return root


def test_folder_with_domains(make_cfg, tmp_path):
    root = _folder_tree(tmp_path / "imgs", with_domains=True)
    cfg = make_cfg("scenario=folder_example", f"scenario.dataset.root={root}", "scenario.T=[real]",
                   "scenario.P=[clipart]", "scenario.F=[painting]", "data.image_size=8")
    data = build(scenario_of(cfg), data_options(cfg))
    assert data.label_names == ["cat", "dog"]
    assert data.counts()["F"] == {"train": 8, "val": 0, "test": 2}
    assert {int(data.datasets["P"]["test"][i][1]) for i in range(2)} == {0, 1}


def test_folder_with_classes_only(make_cfg, tmp_path):
    root = _folder_tree(tmp_path / "imgs", with_domains=False)
    assert folder.scan(root)[:2] == (["cat", "dog"], ["default"])
    cfg = make_cfg("scenario=folder_example", f"scenario.dataset.root={root}", "scenario.split_by=class",
                   "scenario.T=[]", "scenario.P=[cat]", "scenario.F=[dog]", "data.image_size=8")
    data = build(scenario_of(cfg), data_options(cfg))
    assert data.counts()["P"]["test"] == 1 and data.counts()["F"]["train"] == 4


def test_folder_missing(make_cfg, tmp_path):
    cfg = make_cfg("scenario=folder_example", f"scenario.dataset.root={tmp_path / 'nothing'}")
    with pytest.raises(DataNotFoundError, match="image folder not found"):
        build(scenario_of(cfg), data_options(cfg))


def test_validation_split_is_seeded_stratified_and_independent_of_pretrain(make_cfg, cifar10_root):
    def p_val_indices(*overrides):
        cfg = make_cfg("scenario=cifar10_new_classes", f"data.root={cifar10_root}", "data.verify_checksums=false", *overrides)
        data = build(scenario_of(cfg), data_options(cfg))
        return data.datasets["P"]["val"].indices, data.datasets["P"]["train"].indices

    val, train = p_val_indices()
    assert not set(val) & set(train)
    assert np.array_equal(val, p_val_indices("pretrain=task_only")[0])
    assert np.array_equal(val, p_val_indices("seed=0")[0])
    assert not np.array_equal(val, p_val_indices("seed=1")[0])


def test_rank_within_groups():
    groups = np.array([3, 1, 3, 3, 1, 7])
    rank, size = rank_within_groups(groups, np.random.default_rng(0))
    for g in np.unique(groups):
        members = groups == g
        assert sorted(rank[members]) == list(range(members.sum()))
        assert (size[members] == members.sum()).all()


@pytest.mark.skipif(not fashion_mnist.SYSTEM_COPY.exists(), reason="apt-get install dataset-fashion-mnist")
def test_real_fashion_mnist_from_the_debian_copy(make_cfg, tmp_path):
    cfg = make_cfg("scenario=fmnist_new_classes", f"data.root={tmp_path}")
    data = build(scenario_of(cfg), data_options(cfg))
    # Official splits: 6,000 training and 1,000 test images per class; 10% of training to validation.
    assert data.counts() == {"T": {"train": 32400, "val": 3600, "test": 6000},
                             "P": {"train": 16200, "val": 1800, "test": 3000},
                             "F": {"train": 5400, "val": 600, "test": 1000}}
    x, y = data.datasets["F"]["test"][0]
    assert x.shape == (1, 28, 28) and int(y) == 9  # Ankle boot
    assert -1.0 <= float(x.min()) < float(x.max()) <= 1.0
