"""ddbench: a dataset-distillation benchmark whose methods, datasets and protocols are plugins."""
import pluggy

__version__ = "0.2.0"

hookimpl = pluggy.HookimplMarker("ddbench")

__all__ = ["hookimpl", "__version__"]
