#!/usr/bin/env bash
# Ray Serve for the GPU machine, as wheels in .whlray/ (its image has no Ray, and
# Ray's wheel alone is over what a call may carry). Run from the project root
# with the venv active, after ../shared/device/fetch-wheels.sh; then carry
# `.whl` and `.whlray` and begin the command with
#   source .whl/install.sh && python3 -m pip install -q --no-index --no-deps \
#     --no-compile --no-cache-dir --upgrade --target /tmp/site .whlray/*.whl
# Ray's wheel is cut down to what Serve runs on (no Java, no dashboard pages, no
# RLlib/Tune/Train/Data); its needs are the ones the image lacks, with
# grpcio-reflection at the image's grpcio version.
set -euo pipefail
RAY=${RAY_VERSION:-2.60.0}
GRPC=${IMAGE_GRPCIO:-1.84.0}
grep -q '^/.whlray/' .git/info/exclude || echo '/.whlray/' >> .git/info/exclude
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
           --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
           --platform manylinux_2_5_x86_64 --platform manylinux1_x86_64)
get() {
  python3 -m pip download -q --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]}" "$@"
}
get --no-deps -d "$work" "ray==$RAY"
get --no-deps -d "$work/deps" aiohttp-cors colorful fastapi starlette uvicorn httptools \
  jsonschema jsonschema-specifications referencing rpds-py opencensus opencensus-context \
  opentelemetry-api opentelemetry-sdk opentelemetry-exporter-prometheus opentelemetry-proto \
  opentelemetry-semantic-conventions smart-open watchfiles python-dotenv google-api-core \
  google-auth googleapis-common-protos proto-plus pyasn1 pyasn1-modules mmh3 \
  "grpcio-reflection==$GRPC"
rm -rf .whlray && mkdir .whlray
cp "$work"/deps/*.whl .whlray/
wheel=$(basename "$work"/ray-*.whl)
mkdir "$work/ray" && (cd "$work/ray" && python3 -m zipfile -e "../$wheel" .)
rm -rf "$work/ray/ray/jars" "$work/ray/ray/dashboard/client/build" "$work/ray/ray/rllib" \
  "$work/ray/ray/tune" "$work/ray/ray/train" "$work/ray/ray/data" "$work/ray/ray/llm" \
  "$work/ray/ray/_private/runtime_env/agent/thirdparty_files"
python3 - "$work/ray" ".whlray/$wheel" <<'PY'
import os, sys, zipfile
root, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            z.write(path, os.path.relpath(path, root))
PY
du -sh .whlray
