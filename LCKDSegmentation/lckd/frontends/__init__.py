"""What users and other processes run: the `lckd` command (`cli`), folder batches (`batch`, the
library; `batchcommand`, `lckd batch`), the background worker and its line `protocol`, terminal
progress, preview figures and the demo. Nothing else in `lckd` imports this package."""
