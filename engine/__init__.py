"""The moving parts of training and inference, built on ``datasets`` and ``models``:

- ``train``: the training step, one epoch, the data order of a run;
- ``evaluate``: the one evaluation loop (validation, ``test.py``, ``eval_all.py``);
- ``render``: chunked, tiled prediction and whole-image rendering (``demo.py``);
- ``checkpoint``: checkpoints in the published format, loading models, resuming;
- ``metrics``: PSNR/SSIM and the evaluation protocols;
- ``data_norm``: input/target normalisation;
- ``ema``: the moving average of the weights (``ema`` in training configs);
- ``throughput``: channels-last / ``torch.compile`` and the inference speed flags.
"""
