"""Model sources and output writing."""

from mergestudio.io.safetensors_file import TensorInfo
from mergestudio.io.sources import ModelSource, is_hub_reference, open_model

__all__ = ["ModelSource", "TensorInfo", "is_hub_reference", "open_model"]
