"""Whole processes and artefacts: the CLI, crashes, deployment files, benchmarks, clients."""
