"""The avatar presets by name, with what each is for: the one list the CLI, the service and the
benchmarks check requests against. Torch-free, so ``headrig --help`` and the service's parameter
check stay light; each preset's settings are ``backend.avatar.train.PRESETS``."""

AVATAR_PRESETS = {
    "fast": "CPU, a quick look: 128² crops, 8k Gaussians, 300 steps (about 3 min for a 7-s clip on 2 cores)",
    "balanced": "CPU, fast with twice the steps: sharper (+0.3 to +0.8 dB held-out), about twice the time",
    "quality": "GPU: 512² crops, 100k Gaussians, 6000 steps",
}
