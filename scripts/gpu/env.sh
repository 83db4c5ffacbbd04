# Sourced by the GPU scripts: installs the wheels carried in .whl/ (if any) over the machine's own packages, so
# the Hugging Face libraries match requirements.txt whatever that machine's image holds, then checks that every
# entry point imports. A machine without them gets the wheels with, from the repository root:
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 -d .whl \
#     datasets evaluate dill multiprocess timm accelerate transformers tokenizers safetensors regex \
#     huggingface_hub httpx2 httpcore2 truststore fsspec   # each at its requirements.txt version
if [ -d .whl ]; then
  rm -rf /tmp/site && python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH} || exit 1
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
python3 -c "import torch, timm, datasets, evaluate, accelerate, transformers, huggingface_hub
import training.train, training.evaluate, training.crossval, benchmarks.train_throughput
print('torch', torch.__version__, 'timm', timm.__version__, 'datasets', datasets.__version__, 'accelerate',
      accelerate.__version__, 'hub', huggingface_hub.__version__, 'transformers', transformers.__version__,
      'cuda', torch.cuda.is_available() and torch.cuda.get_device_name())" || exit 1
nvidia-smi --query-gpu=name,memory.total --format=csv 2>/dev/null
