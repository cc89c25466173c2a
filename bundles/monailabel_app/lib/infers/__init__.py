from .bundle import BundleInferTask, local_bundles

__all__ = ["BundleInferTask", "local_bundles"]
