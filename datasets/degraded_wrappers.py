"""SR wrappers whose LR images are degraded like real photos (``datasets.degrade``):
``sr-implicit-degraded`` for training, ``sr-implicit-degraded-test`` for a reproducible
degraded benchmark. Items as every wrapper's (``datasets.wrappers``): ``inp`` the
degraded LR, ``coord`` / ``cell`` / ``gt`` queries of the clean HR crop.

    wrapper:
      name: sr-implicit-degraded
      args: {inp_size: 48, scale_max: 4, augment: true, sample_q: 2304}  # + degradation

``degradation``: omitted for Real-ESRGAN's published pipeline (``datasets.degrade.
DEFAULTS``), a preset name (``datasets.degrade.PRESETS``), or a mapping overriding
entries of the defaults, e.g. ``{second: {blur: {prob: 0.5}}, final: {sinc_prob: 0}}``.
"""
from pathlib import Path

from datasets.checks import check_number
from datasets.datasets import register
from datasets.degrade import BENCHMARK_PRESET, degradation_config, degrade
from datasets.sampling import image_rng
from datasets.wrappers import SRImplicitDownsampled, item_file


@register('sr-implicit-degraded')
class SRImplicitDegraded(SRImplicitDownsampled):
    """``sr-implicit-downsampled`` (the same scale, crop, augmentation and queries, drawn
    from the same generator in the same order) with the LR made by ``datasets.degrade.
    degrade`` of the HR crop instead of its bicubic resize: blur, resize, noise and JPEG
    twice, then the resize to ``inp_size`` (or, without ``inp_size``, to the whole-image
    LR size of ``datasets.resize.downsampled_size``) and rounding to 8 bits. The scale
    stays arbitrary: the HR crop is ``round(inp_size * s)`` for ``s`` uniform in
    ``[scale_min, scale_max)``. Deterministic for ``(seed, epoch, index)``.
    """
    name = 'sr-implicit-degraded'

    def __init__(self, dataset, inp_size=None, scale_min=1, scale_max=None, augment=False,
                 sample_q=None, degradation=None):
        super().__init__(dataset, inp_size, scale_min, scale_max, augment, sample_q)
        self.degradation = degradation_config(degradation, f'{self.name}: degradation')

    def make_lr(self, hr, lr_size, rng):
        return degrade(hr, lr_size, rng, self.degradation)


@register('sr-implicit-degraded-test')
class SRImplicitDegradedTest(SRImplicitDegraded):
    """Whole images degraded at a fixed ``scale``, each image with its own fixed draw:
    the generator of an image is ``datasets.sampling.image_rng(seed, file name)``, so
    its LR is the same in every epoch, at every index and for any folder it sits in --
    and equal to what ``scripts/degrade.py --seed <seed>`` writes for it (tested).

    Args:
        scale: the downsampling scale (``floor(H / s + 1e-9)`` LR rows, HR the top-left
            ``round(h * s)`` rows; the same for columns).
        degradation: as for ``sr-implicit-degraded``; default the preset
            ``blur-noise-jpeg`` (a fixed benchmark recipe, also ``scripts/degrade.py``'s
            default), not the training pipeline.
        seed: the benchmark's seed (default 0). Datasets that do not list files seed
            each item by its index instead of a name. A training run's seed does not
            replace it (``seeded_by_run``): as ``val_dataset`` the benchmark stays the
            files ``scripts/degrade.py --seed <seed>`` writes.
    """
    name = 'sr-implicit-degraded-test'
    seeded_by_run = False

    def __init__(self, dataset, scale, degradation=BENCHMARK_PRESET, seed=0):
        super().__init__(dataset, scale_min=check_number(scale, 'scale', self.name, 0),
                         degradation=degradation)
        self.seed = seed

    def draw_scale(self, rng):
        return self.scale_min  # fixed: nothing drawn, so the degradation's draws come first

    def rng_of(self, idx):
        path = item_file(self, idx)
        return image_rng(self.seed, Path(path).name if path is not None else str(idx))
