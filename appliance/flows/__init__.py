"""The flow path: decoded flows → rules (the pipeline's stages) → rollups → bounded raw rows."""

from appliance.flows.path import FlowPath

__all__ = ["FlowPath"]
