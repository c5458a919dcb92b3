"""Evaluation: 3DPW-protocol metrics and the `mocap eval` command."""
