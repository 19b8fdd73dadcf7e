"""Training and evaluation: the paper's recipe as a library.

``train`` (the loop, run folders, exact resume), ``schedule`` (AdamW groups and the warm-up +
poly rate), ``losses``, ``distributed`` (torchrun set-up, samplers), ``state`` (atomic,
resumable checkpoints), ``evaluate`` / ``metrics`` / ``inference`` (scores and predictions).
Import the module you need; nothing heavy is imported here.
"""
