"""Files: image reading and verified atomic writing, file types, path checks, header side files,
4D stacks, and the BraTS case and dataset layouts. Imports only `lckd.base`."""
