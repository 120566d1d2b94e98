"""Multi-head self-attention over fields (the interacting layer of AutoInt)."""
from __future__ import annotations

import math

import tensorflow as tf

from tfmec.api_export import tfmec_export
from tfmec.backend import keras, register
from tfmec.layers._utils import as_shape, make_initializer, serialize_initializer


@tfmec_export("tfmec.layers.SelfAttentionInteraction")
@register
class SelfAttentionInteraction(keras.layers.Layer):
    """AutoInt interacting layer: multi-head self-attention across the F fields.

    Example::

        layer = tfmec.layers.SelfAttentionInteraction(heads=2, head_dim=8)
        y = layer(tf.random.normal([2, 3, 16]))   # shape (2, 3, 16): 2 heads * 8

    For head h: ``Q = E W_q^h, K = E W_k^h, V = E W_v^h`` (each ``[batch, F, head_dim]``),
    ``A = softmax(Q K^T [/ sqrt(head_dim)]) V``; the heads are concatenated, a residual projection
    ``E W_res`` is added when ``use_residual``, and a ReLU is applied:
    ``out = relu(concat_h(A_h) + E W_res)``.

    Args:
        heads: number of attention heads H.
        head_dim: size of each head.
        use_residual: add the projected input (as in the AutoInt paper).
        use_scale: divide the attention logits by ``sqrt(head_dim)`` (the paper does not).
        kernel_initializer: initializer of the projection matrices.
        seed: optional integer seed; projection number k uses ``seed + k``.

    Shapes:
        ``[batch, F, d]`` -> ``[batch, F, heads * head_dim]``.
    """

    def __init__(
        self,
        heads: int = 2,
        head_dim: int = 16,
        use_residual: bool = True,
        use_scale: bool = False,
        kernel_initializer="glorot_uniform",
        seed: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if int(heads) < 1 or int(head_dim) < 1:
            raise ValueError(f"SelfAttentionInteraction: heads and head_dim must be >= 1, got {heads}, {head_dim}")
        self.heads = int(heads)
        self.head_dim = int(head_dim)
        self.use_residual = bool(use_residual)
        self.use_scale = bool(use_scale)
        self.kernel_initializer = serialize_initializer(kernel_initializer)
        self.seed = seed

    def build(self, input_shape):
        shape = as_shape(input_shape)
        if len(shape) != 3 or shape[2] is None:
            raise ValueError(f"SelfAttentionInteraction expects [batch, F, d] with known d, got {shape}")
        dim, out = shape[2], self.heads * self.head_dim

        def kernel(name, offset):
            return self.add_weight(
                name=name, shape=(dim, out), initializer=make_initializer(self.kernel_initializer, self.seed, offset)
            )

        self.query_kernel = kernel("query_kernel", 0)
        self.key_kernel = kernel("key_kernel", 1)
        self.value_kernel = kernel("value_kernel", 2)
        self.residual_kernel = kernel("residual_kernel", 3) if self.use_residual else None
        self.built = True

    def _split_heads(self, x):
        # [batch, F, H * h] -> [batch, H, F, h]
        num_fields = tf.shape(x)[1]
        x = tf.reshape(x, [-1, num_fields, self.heads, self.head_dim])
        return tf.transpose(x, [0, 2, 1, 3])

    def call(self, inputs):
        e = tf.cast(inputs, self.compute_dtype)

        def project(kernel):
            return tf.einsum("bfd,dk->bfk", e, tf.cast(kernel, e.dtype))

        q = self._split_heads(project(self.query_kernel))
        k = self._split_heads(project(self.key_kernel))
        v = self._split_heads(project(self.value_kernel))
        logits = tf.matmul(q, k, transpose_b=True)  # [batch, H, F, F]
        if self.use_scale:
            logits = logits / math.sqrt(self.head_dim)
        attended = tf.matmul(tf.nn.softmax(logits, axis=-1), v)  # [batch, H, F, h]
        attended = tf.transpose(attended, [0, 2, 1, 3])
        out = tf.reshape(attended, [-1, tf.shape(e)[1], self.heads * self.head_dim])
        if self.use_residual:
            out = out + project(self.residual_kernel)
        return tf.nn.relu(out)

    def compute_output_shape(self, input_shape):
        shape = as_shape(input_shape)
        return (shape[0], shape[1], self.heads * self.head_dim)

    def get_config(self):
        config = super().get_config()
        config.update(
            heads=self.heads,
            head_dim=self.head_dim,
            use_residual=self.use_residual,
            use_scale=self.use_scale,
            kernel_initializer=self.kernel_initializer,
            seed=self.seed,
        )
        return config
