// Entry of fitface/viewer/three_bundle.min.js: three.js, its glTF loader and orbit controls,
// exposed as one global `FitfaceThree` for the self-contained page (fitface/viewer/template.html).
// Rebuild with ./build.sh (pinned versions in package.json).
import * as THREE from "three";
import { GLTFLoader } from "three/examples/jsm/loaders/GLTFLoader.js";
import { OrbitControls } from "three/examples/jsm/controls/OrbitControls.js";

export { THREE, GLTFLoader, OrbitControls };
export const REVISION = THREE.REVISION;
