"""MoE kernels: route -> permute -> experts -> unpermute (docs/kernels.md).

Importing this package registers the ``moeplane`` experts implementation with
transformers (``register()``, idempotent); nothing else happens at import.
"""

from moeplane.kernels.api import experts
from moeplane.kernels.permute import PermutePlan, permute, unpermute
from moeplane.kernels.routing import route
from moeplane.kernels.transformers_integration import IMPLEMENTATION_NAME, register

__all__ = [
    "IMPLEMENTATION_NAME",
    "PermutePlan",
    "experts",
    "permute",
    "register",
    "route",
    "unpermute",
]

register()
