# Source on the GPU box before any benchmark: carried wheels (gsplat, nibabel) and a gsplat
# build folder inside the repo's ignored .dev/ (the first import builds gsplat, ~75 s).
#   . Testing/Benchmarks/device_env.sh
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || { echo "wheel install failed"; return 1; }
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 MAX_JOBS=16 TORCH_CUDA_ARCH_LIST=9.0
export TORCH_EXTENSIONS_DIR=$PWD/.dev/torch_ext
mkdir -p "$TORCH_EXTENSIONS_DIR"
t0=$(date +%s)
python3 -c "from gsplat.cuda._backend import _C; print('gsplat kernels ready:', _C is not None)" 2>&1 | tail -1
echo "gsplat build/load: $(( $(date +%s) - t0 )) s"
