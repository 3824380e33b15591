"""Run inside Blender (``blender -b --factory-startup --python tests/blender_glb_check.py -- GLB FPS FRAMES OUT``):
import a GLB with Blender's own glTF importer and write what Blender made of it to OUT (JSON).

Written for tests/test_export.py; uses only Blender's Python (bpy, mathutils, json).

OUT holds: the mesh object's shape-key names (without "Basis"), the shape-key action's frame
range, the scene fps, and for each frame of FRAMES (comma-separated Blender frame numbers) the
evaluated mesh's world-space vertices converted back to glTF axes (glTF (x, y, z) = Blender
(x, z, -y): the importer turns glTF's +Y up into Blender's +Z up).
"""

import json
import sys

import bpy

argv = sys.argv[sys.argv.index("--") + 1:]
glb, fps, frames, out = argv[0], float(argv[1]), [int(f) for f in argv[2].split(",") if f], argv[3]

bpy.ops.wm.read_factory_settings(use_empty=True)
scene = bpy.context.scene
scene.render.fps = int(round(fps))
scene.render.fps_base = scene.render.fps / fps
bpy.ops.import_scene.gltf(filepath=glb)

objs = [o for o in scene.objects if o.type == "MESH"]
obj = objs[0]
keys = obj.data.shape_keys
names = [k.name for k in keys.key_blocks][1:] if keys is not None else []
ranges = {}
if keys is not None and keys.animation_data is not None and keys.animation_data.action is not None:
    ranges["shape_keys"] = list(keys.animation_data.action.frame_range)
if obj.animation_data is not None and obj.animation_data.action is not None:
    ranges["object"] = list(obj.animation_data.action.frame_range)
# the importer may parent the mesh under a node object that carries the animation
for o in scene.objects:
    if o is not obj and o.animation_data is not None and o.animation_data.action is not None:
        ranges.setdefault("other", list(o.animation_data.action.frame_range))

meshes = {}
for f in frames:
    scene.frame_set(f)
    dg = bpy.context.evaluated_depsgraph_get()
    eo = obj.evaluated_get(dg)
    me = eo.to_mesh()
    mw = eo.matrix_world
    pts = []
    for v in me.vertices:
        w = mw @ v.co
        pts.append([w.x, w.z, -w.y])
    meshes[str(f)] = pts
    eo.to_mesh_clear()

doc = {"objects": len(objs), "shape_keys": names, "ranges": ranges, "fps": scene.render.fps / scene.render.fps_base,
       "num_vertices": len(obj.data.vertices), "meshes": meshes,
       "frame_start": scene.frame_start, "frame_end": scene.frame_end,
       "slider_min": [k.slider_min for k in keys.key_blocks][1:] if keys is not None else []}
with open(out, "w") as fh:
    json.dump(doc, fh)
