"""Executors: where long work runs (a detached process per job on this machine)."""

from mida.compute.jobs import settings_env, spawn_job

__all__ = ["settings_env", "spawn_job"]
