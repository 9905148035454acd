"""LCKD training: loss, teacher election, schedule, checkpoints, distributed.

Modules: `presets` (TrainConfig, `paper` / `cpu`), `data` (case cache, patch sampler),
`losses` (Dice + BCE + distillation), `election` (single-modality table, teachers),
`checkpoint` (safetensors + JSON), `trainer` (the loop, DDP), `command` (`lckd train`).
"""
