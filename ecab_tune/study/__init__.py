"""The study: every attention variant trained on one recipe, paired by seed, tested honestly.

`spec` reads the pre-registered study file, `runs` keeps each finished (arm, seed) as one line
of `runs.jsonl`, `runner` trains the missing ones (local processes or Ray tasks), `analysis`
turns the lines into the table and figures. `python -m ecab_tune.compare` is the command.
"""
