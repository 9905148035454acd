"""The vocabulary every layer shares (standard library, numpy at most): errors, modality and region
names, label conventions and clean-up, Dice/HD95, thread and option checks, hashing, terminal text.

Imports nothing else of `lckd`; every other subpackage may import it.
"""
