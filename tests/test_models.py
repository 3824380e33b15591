"""Networks: latent layout, generator, discriminator, FaceModel (supplement Fig. 12)."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from model_builders import grid_mesh

from fitface.landmarks.sets import LandmarkSet
from fitface.models.discriminator import Discriminator, DiscriminatorOutput
from fitface.models.face_model import FaceModel
from fitface.models.generator import Generator
from fitface.models.latent import PAPER_LAYOUT, LatentLayout
from fitface.tolerances import dtype_rtol

#: Number of template vertices in the paper (§5.1).
PAPER_V = 22129

LAYOUTS = {
    "paper": (("identity", 65), ("expression", 15), ("noise", 5)),
    "viseme": (("identity", 50), ("expression", 50), ("viseme", 50), ("noise", 5)),
    "no_noise": (("identity", 8), ("expression", 4)),
}


def make_model(layout=LAYOUTS["paper"], n=12, seed=0, dtype=torch.float32, **kw) -> FaceModel:
    torch.manual_seed(seed)
    layout = LatentLayout(layout)
    v, f, uv = grid_mesh(n)
    g = Generator(layout.dim, len(v)).to(dtype)
    sets = {"corners": LandmarkSet.from_vertex_indices("corners", [0, n - 1, n * n - 1], f),
            "inner": LandmarkSet("inner", np.array([3, 40, 41]),
                                 np.array([[0.2, 0.3, 0.5], [1 / 3] * 3, [0.9, 0.05, 0.05]]))}
    classes = {f_: [f"{f_}{i}" for i in range(3)] for f_ in layout.factors}
    return FaceModel(v, f, uv, layout, g, unit="mm", landmark_sets=sets, classes=classes, **kw)


# ------------------------------------------------------------------------------- layout
def test_layout_paper():
    lay = PAPER_LAYOUT
    assert lay.dim == 85
    assert lay.slice("identity") == slice(0, 65)
    assert lay.slice("expression") == slice(65, 80)
    assert lay.slice("noise") == slice(80, 85)
    assert lay.factors == ("identity", "expression")
    assert lay.size("expression") == 15
    assert LatentLayout.from_json(lay.to_json()) == lay
    assert LatentLayout.from_sizes(identity=65, expression=15, noise=5) == lay


def test_layout_split_join_roundtrip():
    lay = LatentLayout(LAYOUTS["viseme"])
    z = torch.randn(4, lay.dim)
    parts = lay.split(z)
    assert list(parts) == ["identity", "expression", "viseme", "noise"]
    assert parts["viseme"].shape == (4, 50)
    assert torch.equal(parts["viseme"], z[:, 100:150])
    assert torch.equal(lay.join(parts), z)
    zn = z.numpy()
    assert np.array_equal(lay.join(lay.split(zn)), zn)
    # filling a missing block
    filled = lay.join({k: v for k, v in parts.items() if k != "noise"}, fill=0.0)
    assert torch.equal(filled[:, :150], z[:, :150]) and not filled[:, 150:].any()
    with pytest.raises(ValueError, match="noise"):
        lay.join({k: v for k, v in parts.items() if k != "noise"})
    with pytest.raises(ValueError, match="last dimension 155"):
        lay.split(torch.zeros(2, 85))


@pytest.mark.parametrize(
    "blocks, msg",
    [((("noise", 5), ("identity", 3)), "must be last"), ((("a", 2), ("a", 3)), "duplicate"),
     ((("a", 0),), "positive"), ((("a.b", 2),), "identifier"), ((), "empty")],
)
def test_layout_rejects(blocks, msg):
    with pytest.raises(ValueError, match=msg):
        LatentLayout(blocks)


# ---------------------------------------------------------------------------- generator
@pytest.mark.parametrize("name", list(LAYOUTS))
def test_generator_shapes(name):
    lay = LatentLayout(LAYOUTS[name])
    g = Generator(lay.dim, 37)
    z = torch.randn(5, lay.dim)
    assert g(z).shape == (5, 37, 3)
    assert g.hidden(z).shape == (5, 512)
    assert g.out.weight.shape == (3 * 37, 512)
    with pytest.raises(ValueError, match="z"):
        g(torch.randn(5, lay.dim + 1))


@pytest.mark.parametrize("slope", [0.2, 0.0])
def test_generator_activation(slope):
    g = Generator(10, 4, hidden=64, negative_slope=slope)
    z = torch.randn(32, 10)
    pre = g.fc(z)
    assert (pre < 0).any()
    torch.testing.assert_close(g.hidden(z), torch.where(pre >= 0, pre, slope * pre), rtol=0, atol=0)


def test_generator_row_layout_vertex_major():
    """Row 3v + c of `out` drives coordinate c of vertex v, and nothing else."""
    g = Generator(6, 9, hidden=16)
    z = torch.randn(2, 6)
    base = g(z).detach()
    v, c = 7, 1
    with torch.no_grad():
        g.out.bias[3 * v + c] += 1.0
    diff = g(z).detach() - base
    expected = torch.zeros_like(diff)
    expected[:, v, c] = 1.0
    torch.testing.assert_close(diff, expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_decode_vertices_matches_full_decode(dtype):
    g = Generator(85, 500).to(dtype)
    with torch.no_grad():  # make the output non-trivial (not just near zero)
        g.out.weight.normal_()
        g.out.bias.normal_()
    z = torch.randn(7, 85, dtype=dtype)
    ids = torch.tensor([499, 3, 17, 3, 0, 250])  # unsorted, with a repeat
    part = g.decode_vertices(g.hidden(z), ids)
    assert part.shape == (7, 6, 3) and part.dtype == dtype
    torch.testing.assert_close(part, g(z)[:, ids], rtol=dtype_rtol(dtype), atol=dtype_rtol(dtype))
    assert torch.equal(g.rows(torch.tensor([2, 0])), torch.tensor([6, 7, 8, 0, 1, 2]))
    with pytest.raises(ValueError, match="out of range"):
        g.decode_vertices(g.hidden(z), torch.tensor([500]))


def test_generator_init_starts_near_template():
    """Kaiming hidden layer gives E[h^2] ~ 1; the last layer is default-init scaled by 0.01 with zero
    bias, so each output coordinate has std 0.01 * sqrt(E[h^2] * fan_in * (1/(3 fan_in))) = 0.01/sqrt(3)."""
    torch.manual_seed(0)
    g = Generator(85, 2000)
    assert not g.out.bias.any() and not g.fc.bias.any()
    with torch.no_grad():
        d = g(torch.randn(256, 85))
    expected = 0.01 / math.sqrt(3)
    assert abs(d.std().item() / expected - 1) < 0.15
    assert d.abs().max().item() < 0.1


def test_generator_parameter_count_paper_size():
    """Fig. 12a at V = 22,129: Linear(85, 512) + Linear(512, 66,387)."""
    with torch.device("meta"):
        g = Generator(85, PAPER_V)
    assert g.out.out_features == 66387
    counts = {name: p.numel() for name, p in g.named_parameters()}
    assert counts["out.weight"] == 512 * 66387 and counts["out.bias"] == 66387
    assert sum(counts.values()) == 85 * 512 + 512 + 512 * 66387 + 66387  # 34,100,563


# ------------------------------------------------------------------------ discriminator
def _fig12_disc_params(class_counts, size=64):
    trunk = (3 * 16 * 9 + 16) + (16 * 32 * 9 + 32)
    feat = 128 * (size // 16) ** 2
    conv_branch = (32 * 64 * 9 + 64) + (64 * 128 * 9 + 128)
    return trunk + sum(conv_branch + feat * n + n for n in [1, *class_counts])


@pytest.mark.parametrize("size, feat", [(32, 512), (64, 2048), (128, 8192)])
def test_discriminator_shapes(size, feat):
    d = Discriminator({"identity": 11, "expression": 7}, image_size=size)
    out = d(torch.randn(3, 3, size, size))
    assert isinstance(out, DiscriminatorOutput)
    assert out.critic.shape == (3,)
    assert {k: v.shape for k, v in out.logits.items()} == {"identity": (3, 11), "expression": (3, 7)}
    assert {k: v.shape for k, v in out.features.items()} == {"identity": (3, feat), "expression": (3, feat)}
    assert d.feature_dim == feat


@pytest.mark.parametrize("counts", [{}, {"identity": 5}, {"identity": 50, "expression": 7, "viseme": 14}])
def test_discriminator_any_number_of_factors(counts):
    d = Discriminator(counts)
    out = d(torch.randn(2, 3, 64, 64))
    assert list(out.logits) == list(counts) == list(d.factors)
    assert sum(p.numel() for p in d.parameters()) == _fig12_disc_params(list(counts.values()))


def test_discriminator_parameter_count_paper():
    d = Discriminator({"identity": 100, "expression": 7})
    assert d.feature_dim == 2048
    assert sum(p.numel() for p in d.parameters()) == _fig12_disc_params([100, 7])


def test_discriminator_branches_are_distinct():
    """Fig. 12b: the critic and each classifier own their convolutions; the trunk is shared."""
    torch.manual_seed(0)
    d = Discriminator({"identity": 4, "expression": 3})
    x = torch.randn(2, 3, 64, 64)
    before = d(x)
    with torch.no_grad():
        for p in d.classifiers["identity"].convs.parameters():
            p.add_(0.5)
    after = d(x)
    assert torch.equal(before.critic, after.critic)
    assert torch.equal(before.logits["expression"], after.logits["expression"])
    assert not torch.equal(before.features["identity"], after.features["identity"])
    # gradients reach the input image (the mapping layer backpropagates into vertices)
    x.requires_grad_(True)
    d(x).critic.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_discriminator_kaiming_init():
    torch.manual_seed(0)
    d = Discriminator({"identity": 4}, image_size=64)
    w = d.classifiers["identity"].convs[2].weight  # 64 -> 128 conv, fan_in 576
    expected = math.sqrt(2.0 / (1 + 0.2**2) / (64 * 9))
    assert abs(w.std().item() / expected - 1) < 0.05
    assert not any(m.bias.any() for m in d.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)))


def test_discriminator_rejects():
    with pytest.raises(ValueError, match="multiple of 16"):
        Discriminator({"a": 2}, image_size=40)
    with pytest.raises(ValueError, match="at least 1 class"):
        Discriminator({"a": 0})
    with pytest.raises(ValueError, match="image"):
        Discriminator({"a": 2})(torch.randn(1, 3, 32, 32))


# ----------------------------------------------------------------------------- FaceModel
@pytest.mark.parametrize("name", ["paper", "viseme"])
def test_face_model_decode(name):
    m = make_model(LAYOUTS[name])
    z = m.sample_latent(4)
    assert z.shape == (4, m.layout.dim) and z.dtype == torch.float32
    verts = m.decode(z)
    assert verts.shape == (4, 144, 3)
    torch.testing.assert_close(verts, m.template + m.generator(z), rtol=0, atol=0)
    assert m.factors == tuple(b for b, _ in LAYOUTS[name] if b != "noise")
    assert set(m.classes) == set(m.factors)


def test_face_model_sample_latent_reproducible():
    m = make_model()
    a = m.sample_latent(3, generator=torch.Generator().manual_seed(5))
    b = m.sample_latent(3, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


def test_face_model_buffers_follow_to():
    m = make_model().to(torch.float64)
    assert m.template.dtype == m.uv.dtype == torch.float64
    assert m.faces.dtype == torch.int64
    assert m.landmark_buffers["inner"].bary.dtype == torch.float64
    assert m.sample_latent(2).dtype == torch.float64
    assert m.decode(m.sample_latent(2)).dtype == torch.float64
    names = dict(m.named_buffers())
    assert {"template", "faces", "uv", "landmark_buffers.inner.face_index", "landmark_buffers.inner.bary",
            "landmark_buffers.inner.vertex_ids"} <= set(names)


def test_face_model_landmarks_match_numpy_reference():
    m = make_model(dtype=torch.float64)  # buffers built in float64 from the float64 LandmarkSets
    with torch.no_grad():
        m.generator.out.weight.normal_()
        verts = m.decode(m.sample_latent(3))
    faces = m.faces.numpy()
    for name, lset in m.landmark_sets.items():
        buf = m.landmark_buffers[name]
        assert np.array_equal(buf.vertex_ids.numpy(), faces[lset.face_index])
        ref = lset.points(verts.numpy(), faces)
        np.testing.assert_allclose(m.landmark_points(verts, name).numpy(), ref, rtol=1e-12, atol=1e-12)
    with pytest.raises(KeyError, match="no landmark set"):
        m.landmark_points(verts, "nope")


def test_face_model_id():
    m = make_model()
    mid = m.model_id
    assert re.fullmatch(r"[0-9a-f]{16}", mid) and mid == m.model_id
    with torch.no_grad():
        m.generator.out.bias[0] += 1
    assert m.model_id != mid


def test_face_model_rejects_inconsistent_inputs():
    v, f, uv = grid_mesh(5)
    lay = PAPER_LAYOUT
    with pytest.raises(ValueError, match="vertices"):
        FaceModel(v, f, uv, lay, Generator(85, 24))
    with pytest.raises(ValueError, match="latent_dim"):
        FaceModel(v, f, uv, lay, Generator(80, 25))
    with pytest.raises(ValueError, match="uv"):
        FaceModel(v, f, uv[:-1], lay, Generator(85, 25))
    with pytest.raises(ValueError, match="not factors"):
        FaceModel(v, f, uv, lay, Generator(85, 25), classes={"viseme": ["a"]})
    with pytest.raises(ValueError, match="unknown unit"):
        FaceModel(v, f, uv, lay, Generator(85, 25), unit="furlong")
    with pytest.raises(ValueError, match="out of range"):
        far = LandmarkSet("x", np.array([99]), np.ones((1, 3)) / 3)
        FaceModel(v, f, uv, lay, Generator(85, 25), landmark_sets={"x": far})
    with pytest.raises(ValueError, match="z"):
        FaceModel(v, f, uv, lay, Generator(85, 25)).decode(torch.zeros(2, 80))


def test_face_model_mapping():
    """Needs fitface.geometry.mapping (another module); built lazily on first access."""
    pytest.importorskip("fitface.geometry.mapping")
    m = make_model(image_size=32)
    assert "geometry_mapping" not in dict(m.named_modules())
    mapping = m.mapping
    assert m.mapping is mapping
    image = mapping(m.decode(m.sample_latent(2)))
    assert image.shape == (2, 3, 32, 32)
    m = m.double()
    assert m.mapping(m.decode(m.sample_latent(1))).dtype == torch.float64


def test_face_model_mapping_of_template_is_analytic():
    """The grid's UV is its (x, y) / L, so the geometry image of the flat template is the linear
    function x = u L, y = v L, z = 0 at every pixel centre (exact for linear interpolation)."""
    pytest.importorskip("fitface.geometry.mapping")
    n, spacing, size = 12, 10.0, 32
    m = make_model(n=n, image_size=size, dtype=torch.float64)
    image = m.mapping(m.template[None])[0]  # (3, S, S)
    length = spacing * (n - 1)
    centres = (torch.arange(size, dtype=torch.float64) + 0.5) / size
    torch.testing.assert_close(image[0], (centres * length)[None, :].expand(size, size))
    torch.testing.assert_close(image[1], ((1 - centres) * length)[:, None].expand(size, size))
    assert not image[2].any()


def test_face_model_on_ict_template(ict_path):
    """The real ICT template (cm) with its iBUG-68 vertex landmarks."""
    with np.load(ict_path) as z:
        verts, faces, uv, ibug = z["neutral"], z["faces"], z["uv"], z["landmarks_ibug68"]
    lset = LandmarkSet.from_vertex_indices("ibug68", ibug, faces)
    g = Generator(85, len(verts))
    m = FaceModel(verts, faces, uv, PAPER_LAYOUT, g, unit="cm", landmark_sets={"ibug68": lset})
    with torch.no_grad():
        z = m.sample_latent(2, generator=torch.Generator().manual_seed(0))
        out = m.landmark_points(m.decode(z), "ibug68")
        direct = m.template[torch.as_tensor(ibug).long()] + m.generator.decode_vertices(m.generator.hidden(z), ibug)
    assert out.shape == (2, 68, 3)
    torch.testing.assert_close(out, direct, rtol=dtype_rtol(torch.float32), atol=1e-5)
