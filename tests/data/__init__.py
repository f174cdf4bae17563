"""Tests of `ecab_tune.data`, one file per module."""
