"""Training machinery for the KL-VAEs and the diffusion backbone (pure torch, no data IO).

One module per concept, composed by the two trainers:

- :mod:`~copgen_core.training.losses`: the VAE loss (L1+L2 pixel term, learned-logvar NLL, KL) and
  the multimodal ε-prediction loss.
- :mod:`~copgen_core.training.ema`: exponential moving average of a model's weights.
- :mod:`~copgen_core.training.optim`: AdamW and the learning-rate schedule (a pure function of the step).
- :mod:`~copgen_core.training.precision`: autocast and gradient scaling (CUDA only; no-ops on the CPU).
- :mod:`~copgen_core.training.step`: one optimiser step over accumulated micro-batches.
- :mod:`~copgen_core.training.distributed`: rank and world size, only if ``torch.distributed`` is up.
- :mod:`~copgen_core.training.state`: atomic training-state files and RNG capture for exact resume.
- :mod:`~copgen_core.training.vae_trainer` and :mod:`~copgen_core.training.backbone_trainer`.
- :mod:`~copgen_core.training.loop`: the step loop with periodic checkpoints.

Nothing here knows about cubes, files of tiles or the CLI: trainers take batches of tensors.
"""
