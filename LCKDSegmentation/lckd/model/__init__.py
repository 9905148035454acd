"""The network and what describes it: `network` (LCKDNet), `modelcard` (safetensors + JSON card,
`schema`), `registry` (bundled models, downloads, cache), `resources` (the bundled files root).
Imports `lckd.base` and `lckd.io`."""
