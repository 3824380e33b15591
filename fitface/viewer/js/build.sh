#!/bin/sh
# Rebuild fitface/viewer/three_bundle.min.js (and THREE_LICENSE) from the npm registry.
# Needs node >= 18 and npm. node_modules/ stays here, uncommitted (.gitignore).
#   cd fitface/viewer/js && ./build.sh
set -eu
cd "$(dirname "$0")"
npm install --no-audit --no-fund --save-exact
npx esbuild main.js --bundle --minify --format=iife --global-name=FitfaceThree \
  --target=es2020 --legal-comments=none --outfile=../three_bundle.min.js
cp node_modules/three/LICENSE ../THREE_LICENSE
ls -l ../three_bundle.min.js
