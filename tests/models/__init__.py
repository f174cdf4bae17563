"""Tests of `ecab_tune.models`, one file per module."""
