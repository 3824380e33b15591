"""Decoupling embedders: ResNet-18, triplet loss, threshold selection, render cache, files."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from fitface.errors import InputError
from fitface.evaluation.embedder import embedder_path, load_embedder, read_embedder, save_embedder
from fitface.evaluation.embedder_network import ResNet18Embedder, images_to_tensor
from fitface.evaluation.embedder_rendering import RenderCache, RenderSettings, dataset_camera, render_meshes
from fitface.evaluation.embedder_training import EmbedderConfig, train_embedders
from fitface.evaluation.embedder_verification import balanced_pairs, select_threshold, triplet_loss

#: Tiny settings: 32 px renders, 1/8 width, a few dozen steps (seconds on a CPU).
TINY = dict(input_size=32, width=0.125, steps=60, shift=1, max_pairs=5000)
#: Parameters of torchvision's ResNet-18 without its 1000-way classifier (11,689,512 - 513,000).
RESNET18_TRUNK_PARAMS = 11_176_512


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    from fitface.data.synthetic import build_synthetic

    return build_synthetic(tmp_path_factory.mktemp("emb") / "ds", identities=20, samples=800, seed=1)


@pytest.fixture(scope="module")
def trained(tiny_dataset):
    report = train_embedders(tiny_dataset, dict(TINY, factors=["identity"]))
    return tiny_dataset, report


# ------------------------------------------------------------------------------ network
def test_resnet18_has_the_standard_trunk_and_unit_embeddings():
    net = ResNet18Embedder(embedding_dim=128, width=1.0, input_size=224)
    trunk = sum(p.numel() for n, p in net.named_parameters() if not n.startswith("head."))
    assert trunk == RESNET18_TRUNK_PARAMS
    small = ResNet18Embedder(embedding_dim=16, width=0.25, input_size=48).eval()
    with torch.no_grad():
        e = small(torch.randn(3, 3, 48, 48))
    assert e.shape == (3, 16)
    torch.testing.assert_close(e.norm(dim=1), torch.ones(3))
    assert small.config() == {"arch": "resnet18", "embedding_dim": 16, "width": 0.25, "input_size": 48,
                              "in_channels": 3}
    with pytest.raises(ValueError, match="x"):
        small(torch.randn(1, 3, 64, 64))  # not the configured input size
    with pytest.raises(ValueError, match="input_size"):
        ResNet18Embedder(input_size=16)


def test_images_to_tensor_maps_uint8_to_unit_range():
    img = np.array([[[[0, 255, 128]]]], dtype=np.uint8)  # (1, 1, 1, 3)
    t = images_to_tensor(img)
    assert t.shape == (1, 3, 1, 1)
    torch.testing.assert_close(t.flatten(), torch.tensor([-1.0, 1.0, 128 / 127.5 - 1]))


# ------------------------------------------------------------------------------ loss
@pytest.mark.parametrize("mining", ["semi_hard", "batch_hard"])
def test_triplet_loss_zero_when_separated_margin_when_collapsed(mining):
    labels = torch.tensor([0, 0, 1, 1])
    sep = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])  # d_ap = 0, d_an = 2
    assert float(triplet_loss(sep, labels, 0.2, mining).loss) == 0.0
    same = torch.tensor([[1.0, 0.0]] * 4)  # every distance 0
    torch.testing.assert_close(triplet_loss(same, labels, 0.2, mining).loss, torch.tensor(0.2))


def test_semi_hard_picks_the_nearest_negative_beyond_the_positive():
    # anchor 0 at x = 0; positive at 1 (d = 1); negatives at 0.5 (d = 0.25) and 1.2 (d = 1.44)
    emb = torch.tensor([[0.0], [1.0], [0.5], [1.2]])
    labels = torch.tensor([0, 0, 1, 1])
    # pairs: (0,1): d_ap 1, semi-hard negative 1.44 -> 0.2 - 0.44 < 0 -> 0
    #        (1,0): d_ap 1, negatives of 1 at d 0.25, 0.04 -> none beyond -> farthest 0.25 -> 1 - 0.25 + 0.2
    #        (2,3): d_ap 0.49, negatives of 2: 0.25, 0.25 -> none beyond -> 0.49 - 0.25 + 0.2
    #        (3,2): d_ap 0.49, negatives of 3: 1.44, 0.04 -> 1.44 -> 0
    expected = (0.0 + 0.95 + 0.44 + 0.0) / 4
    torch.testing.assert_close(triplet_loss(emb, labels, 0.2, "semi_hard").loss, torch.tensor(expected))


# ------------------------------------------------------------------------------ threshold
def test_select_threshold_separable_sets():
    r = select_threshold([0.1, 0.2, 0.3], [0.5, 0.6, 0.7])
    assert r.threshold == pytest.approx(0.4)
    assert (r.accuracy, r.far, r.frr) == (1.0, 0.0, 0.0)


def test_select_threshold_honours_the_far_bound():
    pos = np.linspace(0.1, 1.0, 10)
    neg = np.array([0.35] + list(np.linspace(1.1, 2.0, 9)))
    # unconstrained optimum: accept every positive and the negative at 0.35 (FAR exactly 10%)
    loose = select_threshold(pos, neg, max_far=0.2)
    assert loose.threshold == pytest.approx(1.05)
    assert (loose.accuracy, loose.far) == (pytest.approx(0.95), pytest.approx(0.1))
    # FAR < 10% (strict) forbids it: the best threshold stops below 0.35, accepting 0.1, 0.2, 0.3
    tight = select_threshold(pos, neg, max_far=0.1)
    assert tight.threshold == pytest.approx(0.325)
    assert (tight.accuracy, tight.far, tight.frr) == (pytest.approx(0.65), 0.0, pytest.approx(0.7))


def test_select_threshold_matches_brute_force():
    rng = np.random.default_rng(3)
    pos, neg = rng.gamma(2.0, 0.1, 200), rng.gamma(5.0, 0.1, 200)
    r = select_threshold(pos, neg, 0.1)
    grid = np.sort(np.concatenate([pos, neg, pos + 1e-9, neg + 1e-9, [0.0, 10.0]]))
    far = (neg[None] < grid[:, None]).mean(1)
    acc = ((pos[None] < grid[:, None]).sum(1) + (neg[None] >= grid[:, None]).sum(1)) / 400
    assert r.far < 0.1
    assert r.accuracy == pytest.approx(acc[far < 0.1].max())
    assert r.accuracy == pytest.approx(((pos < r.threshold).sum() + (neg >= r.threshold).sum()) / 400)


def test_balanced_pairs_are_balanced_and_labeled():
    labels = np.array([0, 0, 0, 1, 1, -1, 2, 2])
    p = balanced_pairs(labels, np.random.default_rng(0), max_pairs=100)
    assert p.same.sum() == (~p.same).sum() == 5  # positives 3 + 1 + 1; negatives 21 - 5 = 16, 5 drawn
    assert np.all(labels[p.first] >= 0) and np.all(labels[p.second] >= 0)
    np.testing.assert_array_equal(labels[p.first] == labels[p.second], p.same)
    assert np.all(p.first < p.second)


# ------------------------------------------------------------------------------ renders
def test_render_cache_renders_once_and_matches_the_renderer(tiny_dataset):
    from fitface.data.format import load_dataset

    ds = load_dataset(tiny_dataset)
    settings = RenderSettings(dataset_camera(ds, 32), ds.unit)
    cache = RenderCache(ds, settings)
    idx = np.array([5, 1, 5])
    imgs = cache.get(idx)
    assert imgs.shape == (3, 32, 32, 3) and imgs.dtype == np.uint8
    np.testing.assert_array_equal(imgs[1], render_meshes(ds.read([1]), ds.faces, settings)[0])
    np.testing.assert_array_equal(imgs[0], imgs[2])
    assert (imgs[0, ..., 2] > 127).mean() > 0.3  # the face covers the frame (blue = facing us)
    again = RenderCache(ds, settings)  # reopened: rows 1 and 5 are already rendered
    assert again.done[[1, 5]].all() and again.done.sum() == 2
    np.testing.assert_array_equal(np.asarray(again.images[5]), imgs[0])


# ------------------------------------------------------------------------------ training
def test_identity_embedder_beats_chance(trained):
    from fitface.data.format import load_dataset

    path, report = trained
    rep = report["factors"]["identity"]
    assert rep["far"] < 0.1
    assert rep["accuracy"] > 0.65  # chance is 0.5 on balanced pairs
    ds = load_dataset(path)
    emb = load_embedder(path, "identity")
    # two very different held-out identities (farthest apart in generating coefficients)
    ho = np.concatenate([ds.indices("val"), ds.indices("test")])
    ids = np.unique(ds.label("identity")[ho])
    coef = {i: ds.coefficients["identity"][ds.label("identity") == i][0] for i in ids}
    a, b = max(((i, j) for i in ids for j in ids if i < j), key=lambda p: np.linalg.norm(coef[p[0]] - coef[p[1]]))
    sa = np.flatnonzero(ds.label("identity") == a)[:12]
    sb = np.flatnonzero(ds.label("identity") == b)[:12]
    e = emb.embed_meshes(ds.read(np.concatenate([sa, sb])), ds.faces)
    d = torch.cdist(e, e).pow(2).numpy()
    lab = np.r_[np.zeros(len(sa)), np.ones(len(sb))]
    iu = np.triu_indices(len(lab), 1)
    same = lab[iu[0]] == lab[iu[1]]
    dp, dn = d[iu][same], d[iu][~same]
    auc = (dp[:, None] < dn[None]).mean()  # P(a same-identity pair is closer than a different one)
    assert auc > 0.8


def test_saved_embedder_reloads_identically_in_a_fresh_process(trained, tmp_path):
    path, _ = trained
    emb = load_embedder(path, "identity")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    np.save(tmp_path / "images.npy", images)
    here = emb.embed_images(images).numpy()
    code = (
        "import numpy as np, sys\n"
        "from fitface.evaluation.embedder import load_embedder\n"
        f"e = load_embedder({str(path)!r}, 'identity')\n"
        f"x = np.load({str(tmp_path / 'images.npy')!r})\n"
        f"np.save({str(tmp_path / 'out.npy')!r}, e.embed_images(x).numpy())\n"
        "print(e.threshold)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), here)
    assert float(out.stdout.strip()) == emb.threshold
    # the file is plain safetensors: an 8-byte header length, then a JSON header (no pickle)
    raw = embedder_path(path, "identity").read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    doc = json.loads(header["__metadata__"]["fitface_embedder"])
    assert doc["factor"] == "identity" and doc["threshold"] == emb.threshold
    assert doc["network"]["input_size"] == 32 and doc["render"]["size"] == [32, 32]
    assert set(doc["validation"]) >= {"accuracy", "far", "positive_pairs"}
    assert (path / "embedders" / "embedders.json").is_file()


def test_load_embedder_rejects_other_data_and_non_embedders(trained, tmp_path):
    path, _ = trained
    emb = read_embedder(embedder_path(path, "identity"))
    emb.meta["dataset_fingerprint"] = "0" * 16
    other = tmp_path / "ds"
    (other / "embedders").mkdir(parents=True)
    import shutil

    for name in ("dataset.json", "template.npz", "vertices.npy", "labels.csv", "coefficients.npz",
                 "landmarks.json", "extras.npz"):
        if (path / name).exists():
            shutil.copy(path / name, other / name)
    save_embedder(embedder_path(other, "identity"), emb)
    with pytest.raises(InputError, match="fingerprint"):
        load_embedder(other, "identity")
    assert load_embedder(other, "identity", check_fingerprint=False).threshold == emb.threshold
    embedder_path(other, "expression").write_bytes(b"not a safetensors file at all")
    with pytest.raises(InputError, match="not a fitface embedder"):
        load_embedder(other, "expression")
    with pytest.raises(InputError, match="no embedder"):
        load_embedder(tmp_path, "identity")


def test_config_from_dict_rejects_unknown_keys():
    assert EmbedderConfig.from_dict({"steps": 5}).steps == 5
    assert EmbedderConfig.paper().input_size == 224 and EmbedderConfig.paper().width == 1.0
    with pytest.raises(ValueError, match="stpes"):
        EmbedderConfig.from_dict({"stpes": 5})


def test_embedder_training_pins_its_thread_count_and_restores_the_callers(tiny_dataset):
    from fitface.data.format import load_dataset
    from fitface.evaluation.embedder_training import train_embedder

    ds = load_dataset(tiny_dataset)
    seen = []
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        cfg = EmbedderConfig.from_dict(dict(TINY, steps=20))
        assert cfg.threads == 1  # the default: a seed gives the same embedders on any machine
        train_embedder(ds, "identity", cfg, log=lambda s: seen.append(torch.get_num_threads()))
        assert seen and set(seen) == {1}
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_embedder_weights_do_not_depend_on_the_callers_thread_count(tiny_dataset):
    from fitface.data.format import load_dataset
    from fitface.evaluation.embedder_training import train_embedder

    ds = load_dataset(tiny_dataset)
    cfg = EmbedderConfig.from_dict(dict(TINY, steps=20))
    before = torch.get_num_threads()
    weights = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            emb, rep = train_embedder(ds, "identity", cfg)
            weights.append((rep.threshold, [p.detach().clone() for p in emb.net.parameters()]))
    finally:
        torch.set_num_threads(before)
    assert weights[0][0] == weights[1][0]
    for a, b in zip(weights[0][1], weights[1][1]):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_config_rejects_negative_threads():
    with pytest.raises(ValueError, match="threads"):
        EmbedderConfig.from_dict({"threads": -1})
