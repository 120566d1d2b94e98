"""Multi-layer perceptrons built from plain Keras layers in the functional graph.

The MLP is deliberately *not* a custom layer: every hidden layer is an ordinary, named
``keras.layers.Dense`` of the functional model, so a later stage (AFM) can find each one in
``model.layers`` and replace it by cloning the model.
"""
from __future__ import annotations

from typing import Sequence

from tfmec.api_export import tfmec_export
from tfmec.backend import keras
from tfmec.layers._utils import derive_seed


def _dense_initializer(seed: int | None):
    return "glorot_uniform" if seed is None else keras.initializers.GlorotUniform(seed=seed)


@tfmec_export("tfmec.layers.mlp_block")
def mlp_block(
    x,
    hidden_units: Sequence[int],
    activation: str = "relu",
    dropout: float = 0.0,
    batch_norm: bool = False,
    name: str = "dnn",
    seed: int | None = None,
    kernel_l2: float = 0.0,
):
    """Applies ``len(hidden_units)`` hidden layers to ``x`` and returns the last hidden output.

    Layer i (0-based) is ``Dense(units_i, activation)`` named ``{name}_dense_{i}``; with
    ``batch_norm`` it is ``Dense(units_i)`` -> ``BatchNormalization`` (``{name}_bn_{i}``) ->
    ``Activation`` (``{name}_act_{i}``) instead; a ``Dropout`` (``{name}_dropout_{i}``) follows when
    ``dropout > 0``.

    Args:
        x: input tensor ``[batch, n_in]``.
        hidden_units: sizes of the hidden layers (may be empty: ``x`` is returned unchanged).
        activation: Keras activation name of the hidden layers.
        dropout: dropout rate after every hidden layer.
        batch_norm: insert batch normalisation before each activation.
        name: prefix of the layer names (must be unique within the model).
        seed: optional integer seed for the kernels and dropout masks.
        kernel_l2: optional L2 weight regularisation of the kernels.

    Returns:
        ``[batch, hidden_units[-1]]`` (or ``x`` itself when ``hidden_units`` is empty).
    """
    if not 0.0 <= float(dropout) < 1.0:
        raise ValueError(f"mlp_block: dropout must be in [0, 1), got {dropout}")
    regularizer = keras.regularizers.L2(kernel_l2) if kernel_l2 else None
    for i, units in enumerate(hidden_units):
        if int(units) < 1:
            raise ValueError(f"mlp_block: hidden units must be >= 1, got {list(hidden_units)}")
        layer_seed = derive_seed(seed, 2 * i)
        x = keras.layers.Dense(
            int(units),
            activation=None if batch_norm else activation,
            kernel_initializer=_dense_initializer(layer_seed),
            kernel_regularizer=regularizer,
            name=f"{name}_dense_{i}",
        )(x)
        if batch_norm:
            x = keras.layers.BatchNormalization(name=f"{name}_bn_{i}")(x)
            x = keras.layers.Activation(activation, name=f"{name}_act_{i}")(x)
        if dropout > 0:
            x = keras.layers.Dropout(float(dropout), seed=derive_seed(seed, 2 * i + 1), name=f"{name}_dropout_{i}")(x)
    return x


@tfmec_export("tfmec.layers.logit_layer")
def logit_layer(x, name: str = "logit", seed: int | None = None):
    """The final ``Dense(1)`` (no activation), a plain Keras layer named ``name``.

    Shapes:
        ``[batch, n]`` -> ``[batch, 1]``.
    """
    return keras.layers.Dense(1, kernel_initializer=_dense_initializer(seed), name=name)(x)


@tfmec_export("tfmec.layers.MLP")
class MLP:
    """A reusable MLP *recipe* (not a Keras layer): calling it on a functional tensor applies
    :func:`mlp_block` with the stored settings, creating plain named ``Dense`` layers.

    Args:
        hidden_units: sizes of the hidden layers.
        activation, dropout, batch_norm, seed, kernel_l2: see :func:`mlp_block`.
        name: prefix of the layer names; each further call appends ``_1``, ``_2``, ... so names
            stay unique.

    Shapes:
        ``[batch, n_in]`` -> ``[batch, hidden_units[-1]]``.
    """

    def __init__(
        self,
        hidden_units: Sequence[int],
        activation: str = "relu",
        dropout: float = 0.0,
        batch_norm: bool = False,
        name: str = "dnn",
        seed: int | None = None,
        kernel_l2: float = 0.0,
    ):
        self.hidden_units = tuple(int(u) for u in hidden_units)
        self.activation = activation
        self.dropout = float(dropout)
        self.batch_norm = bool(batch_norm)
        self.name = name
        self.seed = seed
        self.kernel_l2 = float(kernel_l2)
        self._calls = 0

    def __call__(self, x):
        name = self.name if self._calls == 0 else f"{self.name}_{self._calls}"
        seed = derive_seed(self.seed, 1000 + self._calls) if self._calls and self.seed is not None else self.seed
        self._calls += 1
        return mlp_block(
            x,
            self.hidden_units,
            activation=self.activation,
            dropout=self.dropout,
            batch_norm=self.batch_norm,
            name=name,
            seed=seed,
            kernel_l2=self.kernel_l2,
        )

    def get_config(self) -> dict:
        """The constructor arguments."""
        return dict(
            hidden_units=list(self.hidden_units),
            activation=self.activation,
            dropout=self.dropout,
            batch_norm=self.batch_norm,
            name=self.name,
            seed=self.seed,
            kernel_l2=self.kernel_l2,
        )
