"""Networks: layers as parts, activations, losses, initialisation, the network and its
one backprop (``Network.value_and_grad``), the task and target rules.

Examples
--------
>>> import xbp
>>> net = xbp.Network([xbp.nn.Dense(4, 8, "relu"), xbp.nn.LayerNorm(8), xbp.nn.Dense(8, 3,
...                    "softmax")], loss="cross_entropy")
>>> [d.kind for d in net.layers]
['dense', 'layer_norm', 'dense']
"""

from .activations import register_activation
from .layers import BatchNorm, Dropout, Layer, LayerNorm, Standardize, register_layer
from .losses import register_loss
from .network import Dense, Network, StepResult, mlp
from .targets import infer_targets

__all__ = [
    "BatchNorm",
    "Dense",
    "Dropout",
    "Layer",
    "LayerNorm",
    "Network",
    "Standardize",
    "StepResult",
    "infer_targets",
    "mlp",
    "register_activation",
    "register_layer",
    "register_loss",
]
