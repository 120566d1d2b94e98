"""Explicit feature-crossing networks: DCNv2's CrossNet and GDCN's gated cross network."""
from __future__ import annotations

import tensorflow as tf

from tfmec.api_export import tfmec_export
from tfmec.backend import keras, register
from tfmec.layers._utils import as_shape, make_initializer, renamed_kwargs, serialize_initializer


class _CrossBase(keras.layers.Layer):
    """Shared argument handling of the cross networks (not registered, not public)."""

    def __init__(
        self,
        num_layers: int = 3,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        seed: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if int(num_layers) < 1:
            raise ValueError(f"{type(self).__name__}: num_layers must be >= 1, got {num_layers}")
        self.num_layers = int(num_layers)
        self.kernel_initializer = serialize_initializer(kernel_initializer)
        self.bias_initializer = serialize_initializer(bias_initializer)
        self.seed = seed

    def _input_dim(self, input_shape) -> int:
        shape = as_shape(input_shape)
        if len(shape) != 2 or shape[1] is None:
            raise ValueError(f"{type(self).__name__} expects [batch, D] with known D, got {shape}")
        return shape[1]

    def _kernel(self, name, shape, offset):
        return self.add_weight(
            name=name, shape=shape, initializer=make_initializer(self.kernel_initializer, self.seed, offset)
        )

    def _bias(self, name, dim):
        return self.add_weight(name=name, shape=(dim,), initializer=keras.initializers.get(self.bias_initializer))

    def compute_output_shape(self, input_shape):
        return as_shape(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            num_layers=self.num_layers,
            kernel_initializer=self.kernel_initializer,
            bias_initializer=self.bias_initializer,
            seed=self.seed,
        )
        return config


@tfmec_export("tfmec.layers.CrossNetV2")
@register
@renamed_kwargs({"low_rank": "rank"})
class CrossNetV2(_CrossBase):
    """DCN-V2 cross network: ``x_{l+1} = x_0 * (x_l W_l + b_l) + x_l`` for ``l = 0..L-1``.

    Example::

        layer = tfmec.layers.CrossNetV2(num_layers=2, rank=4)   # W_l factored at rank 4
        y = layer(tf.random.normal([2, 8]))                      # shape (2, 8)

    With ``rank=r`` each ``W_l`` (D x D) is factored as ``V_l U_l`` (V_l: D x r, U_l: r x D),
    i.e. ``x_l W_l = (x_l V_l) U_l`` (DCN-Mix without the mixture of experts). A list gives each
    layer its own rank, None for a full-rank layer (what :func:`tfmec.afm.compress` builds).

    Args:
        num_layers: number of cross layers L.
        rank: None for full-rank kernels, the rank r of every layer's factorisation, or a list of
            L entries (int rank or None). ``low_rank`` (keyword or attribute) is its deprecated name,
            accepted for one release with a ``DeprecationWarning``; old configs load silently.
        kernel_initializer, bias_initializer: initializers of W (or U, V) and b.
        seed: optional integer seed; kernel number k uses ``seed + k``.

    Shapes:
        ``[batch, D]`` -> ``[batch, D]``.
    """

    def __init__(self, num_layers: int = 3, rank: int | None = None, **kwargs):
        super().__init__(num_layers=num_layers, **kwargs)
        if isinstance(rank, (list, tuple)):
            if len(rank) != self.num_layers:
                raise ValueError(f"CrossNetV2: rank lists one rank per layer ({self.num_layers}), got {list(rank)}")
            ranks = [None if r is None else int(r) for r in rank]
        else:
            ranks = [None if rank is None else int(rank)] * self.num_layers
        if any(r is not None and r < 1 for r in ranks):
            raise ValueError(f"CrossNetV2: rank must be None or >= 1, got {rank}")
        self.rank = list(ranks) if isinstance(rank, (list, tuple)) else ranks[0]
        self.layer_ranks = ranks

    def build(self, input_shape):
        dim = self._input_dim(input_shape)
        # per layer: its full kernel or its (V, U) pair, then its bias (this creation order is the
        # order of the saved variables)
        self.kernels, self.u_kernels, self.v_kernels, self.biases = [], [], [], []
        for layer, rank in enumerate(self.layer_ranks):
            if rank is None:
                self.kernels.append(self._kernel(f"kernel_{layer}", (dim, dim), 2 * layer))
            else:
                self.v_kernels.append(self._kernel(f"v_kernel_{layer}", (dim, rank), 2 * layer))
                self.u_kernels.append(self._kernel(f"u_kernel_{layer}", (rank, dim), 2 * layer + 1))
            self.biases.append(self._bias(f"bias_{layer}", dim))
        self.built = True

    def layer_weights(self, layer: int) -> dict:
        """The variables of cross layer ``layer``: ``{"kernel", "bias"}`` (full rank) or
        ``{"v_kernel", "u_kernel", "bias"}`` (factored)."""
        rank = self.layer_ranks[layer]
        before = self.layer_ranks[:layer]
        if rank is None:
            out = {"kernel": self.kernels[sum(r is None for r in before)]}
        else:
            i = sum(r is not None for r in before)
            out = {"v_kernel": self.v_kernels[i], "u_kernel": self.u_kernels[i]}
        out["bias"] = self.biases[layer]
        return out

    def call(self, inputs):
        x0 = tf.cast(inputs, self.compute_dtype)
        x = x0
        for layer in range(self.num_layers):
            w = self.layer_weights(layer)
            if "kernel" in w:
                xw = tf.matmul(x, tf.cast(w["kernel"], x.dtype))
            else:
                xw = tf.matmul(tf.matmul(x, tf.cast(w["v_kernel"], x.dtype)), tf.cast(w["u_kernel"], x.dtype))
            x = x0 * (xw + tf.cast(w["bias"], x.dtype)) + x
        return x

    def get_config(self):
        config = super().get_config()
        config.update(rank=self.rank)
        return config


@tfmec_export("tfmec.layers.GatedCrossNet")
@register
class GatedCrossNet(_CrossBase):
    """GDCN gated cross network:
    ``x_{l+1} = x_0 * (x_l W_l^c + b_l) * sigmoid(x_l W_l^g) + x_l``.

    Example::

        layer = tfmec.layers.GatedCrossNet(num_layers=2)
        y = layer(tf.random.normal([2, 8]))   # shape (2, 8)

    Args:
        num_layers: number of gated cross layers L.
        kernel_initializer, bias_initializer: initializers of W^c, W^g and b.
        seed: optional integer seed; kernel number k uses ``seed + k``.

    Shapes:
        ``[batch, D]`` -> ``[batch, D]``.
    """

    def build(self, input_shape):
        dim = self._input_dim(input_shape)
        self.cross_kernels, self.gate_kernels, self.biases = [], [], []
        for layer in range(self.num_layers):
            self.cross_kernels.append(self._kernel(f"cross_kernel_{layer}", (dim, dim), 2 * layer))
            self.gate_kernels.append(self._kernel(f"gate_kernel_{layer}", (dim, dim), 2 * layer + 1))
            self.biases.append(self._bias(f"bias_{layer}", dim))
        self.built = True

    def call(self, inputs):
        x0 = tf.cast(inputs, self.compute_dtype)
        x = x0
        for layer in range(self.num_layers):
            cross = tf.matmul(x, tf.cast(self.cross_kernels[layer], x.dtype)) + tf.cast(self.biases[layer], x.dtype)
            gate = tf.sigmoid(tf.matmul(x, tf.cast(self.gate_kernels[layer], x.dtype)))
            x = x0 * cross * gate + x
        return x
