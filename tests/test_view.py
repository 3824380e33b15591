"""``fitface view``: the self-contained page (fitface.api.view), and a real client opening it.

The page is checked twice: as text (no network reference, the bundle and the GLB inlined, written
atomically) and in headless Chromium (the Debian package ``chromium``; skipped where absent), which
opens it from file:// with no network, renders it with SwiftShader's WebGL, and is read back: a
screenshot must show face pixels in the middle of the view, the page's status must give the GLB's
number of morph targets and the animation's length, and the page must have logged no error.

The GLB of most tests is built here with pygltflib (a small ellipsoid "face" with named morph
targets and a morph-weight animation), so the page is tested independently of the exporter.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from fitface.errors import InputError

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install chromium)")
#: Flags that give headless Chromium a software WebGL (SwiftShader through ANGLE) and no network.
CHROMIUM_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--use-angle=swiftshader",
                  "--enable-unsafe-swiftshader", "--no-first-run", "--no-default-browser-check",
                  "--disable-extensions", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--mute-audio", "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>"]
TARGETS = ["jawOpen", "mouthSmile_L", "browInnerUp_R"]


# ------------------------------------------------------------------------------ a GLB of our own
def face_mesh(n_lat: int = 24, n_lon: int = 32, radius: float = 0.08) -> tuple[np.ndarray, np.ndarray]:
    """A closed ellipsoid (metres, Y up, facing +Z): vertices (V, 3) float32, faces (F, 3) uint32."""
    lat = np.linspace(0, np.pi, n_lat)
    lon = np.linspace(0, 2 * np.pi, n_lon, endpoint=False)
    la, lo = np.meshgrid(lat, lon, indexing="ij")
    v = np.stack([0.8 * np.sin(la) * np.sin(lo), 1.15 * np.cos(la), 0.9 * np.sin(la) * np.cos(lo)], -1) * radius
    v = v.reshape(-1, 3).astype(np.float32)
    f = []
    for i in range(n_lat - 1):
        for j in range(n_lon):
            a, b = i * n_lon + j, i * n_lon + (j + 1) % n_lon
            c, d = a + n_lon, b + n_lon
            f += [(a, c, b), (b, c, d)]
    return v, np.asarray(f, dtype=np.uint32)


def make_glb(num_frames: int = 24, fps: float = 24.0, names: list[str] = TARGETS,
             with_weights: bool = False):
    """A GLB: one mesh with ``len(names)`` morph targets named in ``mesh.extras.targetNames`` and,
    for ``num_frames > 1``, a LINEAR morph-weight animation of ``num_frames`` keys at ``fps``.
    Returns the bytes and the (V, 3) float32 neutral vertices (and, ``with_weights``, the (T, K)
    float32 animated weights)."""
    import pygltflib as g

    v, f = face_mesh()
    k = len(names)
    y = v[:, 1] / np.abs(v[:, 1]).max()
    deltas = []
    for i in range(k):
        d = np.zeros_like(v)
        d[:, 1] = -0.02 * np.clip(-y, 0, None) * (i + 1)  # lower half moves down
        d[:, 0] = 0.01 * np.clip(y, 0, None) * (-1) ** i
        deltas.append(d.astype(np.float32))
    t = (np.arange(num_frames) / fps).astype(np.float32)
    w = (0.5 - 0.5 * np.cos(2 * np.pi * (np.arange(num_frames)[:, None] / max(num_frames - 1, 1) + np.arange(k) / k)))
    w = w.astype(np.float32)  # (T, k)

    blobs: list[bytes] = []
    views, accessors = [], []

    def add(arr: np.ndarray, type_: str, ctype: int, target: int | None, minmax: bool = False) -> int:
        data = arr.tobytes()
        offset = sum(len(b) for b in blobs)
        blobs.append(data + b"\0" * (-len(data) % 4))
        views.append(g.BufferView(buffer=0, byteOffset=offset, byteLength=len(data), target=target))
        count = arr.shape[0] if type_ != "SCALAR" else arr.size
        acc = g.Accessor(bufferView=len(views) - 1, componentType=ctype, count=count, type=type_)
        if minmax:
            a2 = arr.reshape(count, -1)
            acc.min, acc.max = a2.min(0).tolist(), a2.max(0).tolist()
        accessors.append(acc)
        return len(accessors) - 1

    pos = add(v, "VEC3", g.FLOAT, g.ARRAY_BUFFER, True)
    idx = add(f.reshape(-1), "SCALAR", g.UNSIGNED_INT, g.ELEMENT_ARRAY_BUFFER)
    tgts = [{"POSITION": add(d, "VEC3", g.FLOAT, g.ARRAY_BUFFER, True)} for d in deltas]
    prim = g.Primitive(attributes=g.Attributes(POSITION=pos), indices=idx, targets=tgts or None)
    mesh = g.Mesh(primitives=[prim], weights=[0.0] * k or None, extras={"targetNames": list(names)} if k else {})
    anims = []
    if num_frames > 1 and k:
        ti = add(t, "SCALAR", g.FLOAT, None, True)
        wo = add(w.reshape(-1), "SCALAR", g.FLOAT, None)
        anims = [g.Animation(name="weights", samplers=[g.AnimationSampler(input=ti, output=wo, interpolation="LINEAR")],
                             channels=[g.AnimationChannel(sampler=0, target=g.AnimationChannelTarget(node=0,
                                                                                                      path="weights"))])]
    blob = b"".join(blobs)
    gltf = g.GLTF2(asset=g.Asset(version="2.0", generator="fitface tests"), scene=0, scenes=[g.Scene(nodes=[0])],
                   nodes=[g.Node(mesh=0, name="face")], meshes=[mesh], accessors=accessors, bufferViews=views,
                   buffers=[g.Buffer(byteLength=len(blob))], animations=anims)
    gltf.set_binary_blob(blob)
    glb = b"".join(gltf.save_to_bytes())
    return (glb, v, w) if with_weights else (glb, v)


# ------------------------------------------------------------------------------ the page as text
def page_data(html: str) -> dict:
    m = re.search(r'<script type="application/json" id="fitface-data">(.*?)</script>', html, re.S)
    assert m, "no data script"
    return json.loads(m.group(1))


def test_page_is_self_contained(tmp_path):
    from fitface.api.view import bundle_text, write_page

    glb, _ = make_glb()
    res = write_page(glb, tmp_path / "view.html", {"name": "demo", "kind": "track"})
    html = (tmp_path / "view.html").read_text(encoding="utf-8")
    assert res.num_targets == 3 and res.num_frames == 24 and res.fps == pytest.approx(24.0)
    assert res.size_bytes == len(html.encode()) and res.path == tmp_path / "view.html"
    # nothing is fetched: no external script, style sheet, image, import or URL attribute
    assert not re.search(r"""<(script|link|img|iframe)\b[^>]*\b(src|href)\s*=""", html, re.I)
    assert not re.search(r"""\b(src|href)\s*=\s*["']?\s*(https?:)?//""", html, re.I)
    assert not re.search(r"""@import|\bimport\s*\(|from\s+["']https?:""", html)
    assert re.findall(r"https?://[^\s\"'<>]+", html) == ["http://www.w3.org/1999/xhtml"]  # a namespace name
    assert "default-src 'none'" in html  # and the page's policy forbids any fetch
    # the bundle and the GLB are inlined
    assert bundle_text()[:2000] in html and "FitfaceThree" in html
    assert base64.b64decode(page_data(html)["glb"]) == glb
    assert html.count("</script>") == html.count("<script")


def test_bundle_is_vendored_with_licence():
    from importlib import resources

    root = resources.files("fitface") / "viewer"
    bundle = (root / "three_bundle.min.js").read_text(encoding="utf-8")
    assert 400_000 < len(bundle) < 1_500_000 and bundle.startswith("var FitfaceThree=")
    assert "</script" not in bundle.lower()
    assert "MIT License" in (root / "THREE_LICENSE").read_text(encoding="utf-8")
    pkg = json.loads((Path(__file__).resolve().parents[1] / "fitface/viewer/js/package.json").read_text())
    assert all(re.fullmatch(r"\d+\.\d+\.\d+", v) for v in pkg["devDependencies"].values())  # pinned


def test_pyproject_ships_the_viewer():
    import tomllib

    repo = Path(__file__).resolve().parents[1]
    with open(repo / "pyproject.toml", "rb") as fh:
        globs = tomllib.load(fh)["tool"]["setuptools"]["package-data"]["fitface"]
    for f in ("three_bundle.min.js", "THREE_LICENSE", "template.html"):
        assert any(Path("viewer", f).match(gl) for gl in globs), (f, globs)


def test_read_glb_and_still():
    from fitface.api.view import read_glb

    glb, v = make_glb(num_frames=1)
    info = read_glb(glb)
    assert info.num_targets == 3 and info.target_names == TARGETS and info.num_keys == 0
    np.testing.assert_allclose(info.positions, v, atol=1e-7)
    with pytest.raises(InputError):
        read_glb(b"not a glb at all")


def test_nice_ceil():
    from fitface.api.view import nice_ceil

    assert [nice_ceil(x) for x in (0.0, 0.7, 1.0, 1.3, 3.0, 7.0, 12.0)] == [1.0, 1.0, 1.0, 2.0, 5.0, 10.0, 20.0]


def test_no_half_written_page(tmp_path, monkeypatch):
    """A failure while writing leaves the previous page untouched and no temporary file."""
    import fitface.api.view as view_mod
    from fitface.api.view import write_page

    out = tmp_path / "view.html"
    out.write_text("old page")
    with pytest.raises(InputError):
        write_page(b"garbage", out)
    glb, _ = make_glb()

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(view_mod, "page_html", boom)
    with pytest.raises(RuntimeError):
        write_page(glb, out)
    assert out.read_text() == "old page" and sorted(p.name for p in tmp_path.iterdir()) == ["view.html"]


# ------------------------------------------------------------------------------ bad input (CLI)
@pytest.mark.parametrize("make", ["missing", "empty", "file", "bad codes", "bad track"])
def test_cli_bad_input_one_line_exit_2(tmp_path, make):
    from fitface.cli import main

    target = tmp_path / "res"
    if make == "file":
        target.write_text("x")
    elif make != "missing":
        target.mkdir()
    if make in ("bad codes", "bad track"):  # a result's marker file that the export refuses
        pytest.importorskip("fitface.api.export")
        (target / ("codes.json" if make == "bad codes" else "codes.npz")).write_text('{"codes": 1}')
    out = tmp_path / "v.html"
    proc = subprocess.run([os.environ.get("PYTHON", "python"), "-m", "fitface", "view", str(target), "-o", str(out)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and proc.stderr.startswith("error: "), proc.stderr
    assert not out.exists()
    assert main(["view", str(target), "-o", str(out)]) == 2  # the same in-process


def test_view_hint():
    from fitface.cli.view import view_hint

    assert view_hint("runs/a b") == "view: fitface view 'runs/a b' -o 'runs/a b/view.html'"


# ------------------------------------------------------------------------------ headless Chromium
def run_chromium(page: Path, tmp_path: Path, budget_ms: int = 2000, size=(900, 600),
                 fragment: str = "") -> tuple[dict, Path, str, float]:
    """Open ``page`` from file:// in headless Chromium (no network): the page's status JSON (from
    ``--dump-dom``), a screenshot, Chromium's stderr, and the wall time of the run (s)."""
    profile = tmp_path / f"profile{len(list(tmp_path.glob('profile*')))}"
    common = [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={size[0]},{size[1]}",
              f"--virtual-time-budget={budget_ms}", "--enable-logging=stderr", "--v=0"]
    url = page.resolve().as_uri() + fragment
    env = {**os.environ, "HOME": str(tmp_path)}
    shot = tmp_path / f"shot{len(list(tmp_path.glob('shot*.png')))}.png"
    t0 = time.perf_counter()  # one run: the DOM once the virtual time budget is spent, then the screenshot
    dom = subprocess.run([*common, "--dump-dom", f"--screenshot={shot}", url], capture_output=True, text=True,
                         timeout=120, env=env)
    wall = time.perf_counter() - t0
    m = re.search(r'<pre id="fitface-status">(.*?)</pre>', dom.stdout, re.S)
    assert m, f"no status in the DOM; chromium said:\n{dom.stderr[-3000:]}"
    import html as html_mod

    status = json.loads(html_mod.unescape(m.group(1)))
    status["_title"] = (re.search(r"<title>(.*?)</title>", dom.stdout, re.S) or [None, ""])[1]
    assert shot.is_file(), f"no screenshot; chromium said:\n{dom.stderr[-3000:]}"
    return status, shot, dom.stderr, wall


def console_errors(stderr: str) -> list[str]:
    """The page's console messages in Chromium's log (``--enable-logging=stderr``: errors, warnings,
    uncaught exceptions, all logged as ``CONSOLE``), but for SwiftShader's performance notes."""
    return [ln for ln in stderr.splitlines()
            if (":CONSOLE" in ln and "GL Driver Message (OpenGL, Performance" not in ln) or "Uncaught" in ln]


@needs_chromium
def test_console_check_sees_page_errors(tmp_path):
    """The console check is no placebo: it reports a page's console.error and an uncaught throw."""
    page = tmp_path / "bad.html"
    page.write_text('<html><body><pre id="fitface-status">{}</pre><script>console.error("boom-console");'
                    'setTimeout(function () { throw new Error("boom-throw"); }, 10);</script></body></html>')
    _, _, stderr, _ = run_chromium(page, tmp_path, budget_ms=300)
    found = "\n".join(console_errors(stderr))
    assert "boom-console" in found and "Uncaught Error: boom-throw" in found


def face_pixels(shot: Path, background=(0x1D, 0x20, 0x26), view_width: int | None = None) -> float:
    """Share of non-background pixels in the central third of the 3D view (left of the panel)."""
    from PIL import Image

    img = np.asarray(Image.open(shot).convert("RGB"), dtype=np.int16)
    h, w, _ = img.shape
    vw = view_width or (w - 320)
    centre = img[h // 3: 2 * h // 3, vw // 3: 2 * vw // 3]
    diff = np.abs(centre - np.asarray(background, dtype=np.int16)).sum(-1)
    return float((diff > 30).mean())


@needs_chromium
def test_chromium_opens_the_page(tmp_path):
    from fitface.api.view import write_page

    glb, _ = make_glb(num_frames=24, fps=24.0)
    page = tmp_path / "view.html"
    write_page(glb, page, {"name": "chromium test", "kind": "track", "autoplay": False})
    status, shot, stderr, wall = run_chromium(page, tmp_path)
    assert status["loaded"], status
    assert status["errors"] == [], status["errors"]
    assert not console_errors(stderr), console_errors(stderr)
    assert status["targets"] == 3 and status["target_names"] == TARGETS
    assert status["frames"] == 24 and status["duration"] == pytest.approx(23 / 24, abs=1e-4)
    assert "targets=3 frames=24" in status["_title"]
    share = face_pixels(shot)
    assert share > 0.3, f"only {share:.1%} face pixels in the centre"
    # the page plays the GLB's animation: at #frame=K its morph weights are the K-th keys'
    _, _, w = make_glb(num_frames=24, fps=24.0, with_weights=True)
    for k in (5, 23):
        at, shot_k, stderr_k, _ = run_chromium(page, tmp_path, fragment=f"#frame={k}")
        assert at["frame"] == k and not at["errors"] and not console_errors(stderr_k)
        np.testing.assert_allclose(at["weights"], w[k], atol=1e-4)
    print(f"chromium: {wall:.1f} s, face pixels {share:.1%} of the centre, page "
          f"{page.stat().st_size / 1e6:.2f} MB")


@needs_chromium
def test_chromium_still_without_targets(tmp_path):
    """A still with no targets and no animation (a model without expression targets) loads too."""
    from fitface.api.view import write_page

    glb, _ = make_glb(num_frames=1, names=[])
    page = tmp_path / "still.html"
    write_page(glb, page, {"name": "still", "kind": "fit"})
    status, shot, stderr, _ = run_chromium(page, tmp_path)
    assert status["loaded"] and status["errors"] == [] and not console_errors(stderr)
    assert status["targets"] == 0 and status["frames"] == 1 and status["duration"] == 0
    assert face_pixels(shot) > 0.3


# ------------------------------------------------------------------------------ a real fit, end to end
@pytest.fixture(scope="module")
def fitted(model_path, tmp_path_factory):
    """``fitface fit SCAN -l LM`` of a synthetic capture in cm (the session's small test model)."""
    pytest.importorskip("fitface.api.export")
    from model_builders import synthetic_capture

    from fitface.cli import main
    from fitface.io.landmarks import save_landmarks
    from fitface.io.mesh import save_mesh

    tmp_path = tmp_path_factory.mktemp("view_fit")
    _, _, lm, verts, faces = synthetic_capture(model_path, seed=11, scale=0.1)
    save_landmarks(tmp_path / "face.csv", lm, unit="cm")
    save_mesh(tmp_path / "face.ply", verts, faces)
    out = tmp_path / "fit"
    assert main(["fit", str(tmp_path / "face.ply"), "-l", str(tmp_path / "face.csv"), "-o", str(out),
                 "-m", str(model_path), "--no-preview", "--steps", "60"]) == 0
    return out, len(lm)


def test_view_of_a_fit(fitted, capsys):
    from fitface.cli import main

    out, n_lm = fitted
    assert main(["view", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    page = out / "view.html"
    assert summary["path"] == str(page) and page.is_file()  # default: RESULT/view.html
    assert summary["kind"] == "fit" and summary["scan"] and summary["landmarks"] and summary["errors"]
    assert summary["error_unit"] == "mm" and summary["num_frames"] == 1 and summary["num_targets"] > 0
    data = page_data(page.read_text(encoding="utf-8"))
    assert len(base64.b64decode(data["landmarks"]["targets"])) == n_lm * 3 * 4
    # the scan is the fit's exact source: every vertex error is small against the legend's top (mm)
    err = np.frombuffer(base64.b64decode(data["vertex_errors"]["values"]), np.float32)
    assert err.min() >= 0 and np.median(err) < data["vertex_errors"]["vmax"]
    assert set(data["view"]) == {"front", "up"}


@needs_chromium
def test_chromium_shows_a_fit_with_scan_and_landmarks(fitted, tmp_path):
    from fitface.api.view import view

    out, n_lm = fitted
    res = view(out, tmp_path / "fit.html")
    status, shot, stderr, _ = run_chromium(res.path, tmp_path)
    assert status["loaded"] and status["errors"] == [] and not console_errors(stderr), (status, stderr[-2000:])
    assert status["targets"] == res.num_targets and status["frames"] == 1
    assert status["scan"] and status["landmarks"] == n_lm and status["error_colours"]
    assert face_pixels(shot) > 0.3


# ------------------------------------------------------------------------------ a sequence, end to end
@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    """A track folder (codes.npz written directly, no video) of the procedural model: 6 frames at
    25 fps under a turning head; its export has PCA targets and a head-pose node animation."""
    pytest.importorskip("fitface.api.export")
    from scipy.spatial.transform import Rotation

    from fitface.api.inputs import load_fit_model
    from fitface.api.track import TrackCodes

    dec = load_fit_model("procedural")
    lay = dec.layout
    rng = np.random.default_rng(3)
    n = 6
    angles = np.c_[np.linspace(-0.3, 0.3, n), np.zeros(n), np.zeros(n)]
    codes = TrackCodes(
        identity=0.5 * rng.standard_normal(lay.size("identity")),
        expression=rng.standard_normal((n, lay.size("expression"))),
        noise=np.zeros((n, lay.size("noise") if "noise" in lay.names else 0)), scale=np.full(n, 2.0),
        rotation=Rotation.from_euler("YXZ", angles).as_matrix(), translation=np.tile([320.0, -240.0, 0.0], (n, 1)),
        landmark_rms=np.ones(n), frame_index=np.arange(n), time=np.arange(n) / 25.0, valid=np.ones(n, bool),
        model_id=dec.model_id, model="procedural", source=None)
    out = tmp_path_factory.mktemp("view_track") / "track"
    out.mkdir()
    codes.save(out / "codes.npz")
    (out / "track.json").write_text(json.dumps({"model": "procedural", "frames": n}))
    return out, n


@pytest.mark.filterwarnings("ignore::fitface.errors.FitfaceWarning")  # the export's note on its PCA targets
def test_view_of_a_track(tracked):
    from fitface.api.export import build_export
    from fitface.api.view import view

    out, n = tracked
    res = view(out, out / "v.html", autoplay=False)
    exp = build_export(out)
    assert res.kind == "track" and res.num_frames == n and res.fps == pytest.approx(25.0)
    assert res.num_targets == len(exp.target_names) and not (res.scan or res.landmarks or res.errors)
    data = page_data((out / "v.html").read_text(encoding="utf-8"))
    assert len(data["frame_rms"]) == n and data["view"] == {"front": [0.0, 0.0, 1.0], "up": [0.0, 1.0, 0.0]}
    assert data["weight_min"] < 0 < data["weight_max"]  # PCA weights are signed


@needs_chromium
@pytest.mark.filterwarnings("ignore::fitface.errors.FitfaceWarning")
def test_chromium_plays_a_track(tracked, tmp_path):
    from fitface.api.export import build_export

    out, n = tracked
    page = out / "v.html"
    if not page.is_file():
        from fitface.api.view import view

        view(out, page, autoplay=False)
    exp = build_export(out)
    status, shot, stderr, _ = run_chromium(page, tmp_path, fragment="#frame=3")
    assert status["loaded"] and status["errors"] == [] and not console_errors(stderr), (status, stderr[-2000:])
    assert status["frames"] == n and status["duration"] == pytest.approx((n - 1) / 25.0, abs=1e-4)
    assert status["tracks"] == 3  # morph weights, head rotation, head translation
    np.testing.assert_allclose(status["weights"], exp.weights[3], atol=1e-4)
    assert face_pixels(shot) > 0.3


def test_fit_prints_its_view_command(model_path, tmp_path, capsys):
    from model_builders import synthetic_capture

    from fitface.cli import main
    from fitface.io.landmarks import save_landmarks

    _, _, lm, _, _ = synthetic_capture(model_path, seed=2)
    save_landmarks(tmp_path / "lm.txt", lm, unit="mm")
    capsys.readouterr()
    assert main(["fit", "-l", str(tmp_path / "lm.txt"), "-o", str(tmp_path / "out"), "-m", str(model_path),
                 "--no-preview", "--steps", "20"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1] == f"view: fitface view {tmp_path / 'out'} -o {tmp_path / 'out' / 'view.html'}"
