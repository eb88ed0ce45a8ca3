# Sourced by the GPU scripts: python3 (or $PYTHON) as PY, everything printed also kept in $OUT/$LOG_NAME
# when OUT is set, and this checkout's package importable without an install (copied to a temporary site
# folder with its configs, removed at exit). Prints the environment; returns 1 when an import fails.
PY="${PYTHON:-python3}"
if [ -n "${OUT:-}" ]; then
    mkdir -p "$OUT"
    exec > >(tee -a "$OUT/$LOG_NAME") 2>&1
fi
export PYTHONUNBUFFERED=1

SITE="$(mktemp -d /tmp/gan_cli_site.XXXXXX)"
trap 'rm -rf "$SITE"' EXIT
cp -r gan_cli "$SITE/gan_cli" && cp -r configs "$SITE/gan_cli/configs" || return 1
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"

echo "== environment ($(date -u '+%Y-%m-%d %H:%M UTC'))"
! command -v nvidia-smi >/dev/null || nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"$PY" -c "import torch, torchvision, hydra, omegaconf; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'hydra', hydra.__version__, 'cuda', torch.version.cuda, 'gpu', torch.cuda.get_device_name() if torch.cuda.is_available() else None)" || return 1
