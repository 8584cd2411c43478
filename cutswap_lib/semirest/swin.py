"""The token Swin transformer of SemiREST: residual windows in, per-token anomaly logits out.

SemiREST Sec. 3.1.2, Eq. (7) and (9). The input is one window of residual tokens
``(N, mu, mu, d_t)`` (patch size rho = 1, so a token *is* a residual vector and
``d_t = d_f``); the output is a 2-class logit per token ``(N, mu, mu, 2)``, of which the
anomaly-class confidence (softmax, class 1) forms the window's prediction map
``Theta_w`` (Eq. 9). The paper: 4 blocks, window 8, 32 heads, one stage (no patch
merging, so the output keeps the token grid); the public reference code embeds to 1024
channels. Blocks alternate plain and shifted windows (shift = window / 2), as in Swin.

Built from torchvision's :class:`~torchvision.models.swin_transformer.SwinTransformerBlock`
(channels-last input ``(N, H, W, C)``, window attention with relative position bias,
padding of sizes that are not multiples of the window); only the token embedding and
the per-token head are written here. The embedding is a plain linear map (the patch
embedding of a Swin with rho = 1) with no LayerNorm after it, so that the size of a
residual reaches the blocks.

``checkpoint_blocks`` (the course's choice, not the paper's; it changes memory and time,
not numbers): in training, each block's activations are dropped after its forward and
recomputed in the backward (:func:`torch.utils.checkpoint.checkpoint`, the random
stochastic-depth draws replayed), so a step holds the block inputs and one block's
activations instead of all four. At the paper's sizes this is what brings a training step
under a Colab T4's 16 GB; it costs about one more forward per step.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint
from torchvision.models.swin_transformer import SwinTransformerBlock

Tensor = torch.Tensor


class TokenSwin(nn.Module):
    """Residual windows ``(N, mu, mu, d_t)`` -> per-token 2-class logits ``(N, mu, mu, 2)``.

    ``embed_dim`` (1024 in the reference code), ``depth`` blocks (4), ``num_heads`` (32),
    ``window`` (8): the paper's Swin. ``embed_dim`` must be a multiple of ``num_heads``.
    ``checkpoint_blocks``: recompute each block's activations in the backward (module docstring).
    """

    def __init__(self, in_dim: int, embed_dim: int = 1024, depth: int = 4, num_heads: int = 32,
                 window: int = 8, mlp_ratio: float = 4.0, dropout: float = 0.0,
                 stochastic_depth: float = 0.1, checkpoint_blocks: bool = False):
        super().__init__()
        self.checkpoint_blocks = checkpoint_blocks
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim={embed_dim} must be a multiple of num_heads={num_heads}")
        self.in_dim, self.embed_dim, self.window = in_dim, embed_dim, window
        # no normalisation of the embedded token: a residual's magnitude is the anomaly signal,
        # and a LayerNorm here would divide it out (the blocks normalise only their branch inputs)
        self.embed = nn.Linear(in_dim, embed_dim)
        self.blocks = nn.Sequential(*[
            SwinTransformerBlock(embed_dim, num_heads, window_size=[window, window],
                                 shift_size=[0, 0] if i % 2 == 0 else [window // 2, window // 2],
                                 mlp_ratio=mlp_ratio, dropout=dropout,
                                 stochastic_depth_prob=stochastic_depth * i / max(1, depth - 1))
            for i in range(depth)])
        self.norm = nn.LayerNorm(embed_dim)
        self.head = nn.Linear(embed_dim, 2)  # normal / anomalous logits per token

    def forward(self, windows: Tensor) -> Tensor:
        """Windows ``(N, mu, mu, d_t)`` -> logits ``(N, mu, mu, 2)``."""
        if windows.ndim != 4 or windows.shape[-1] != self.in_dim:
            raise ValueError(f"expected windows (N, mu, mu, {self.in_dim}), got {tuple(windows.shape)}")
        x = self.embed(windows)  # (N, mu, mu, E)
        recompute = self.checkpoint_blocks and torch.is_grad_enabled() and x.requires_grad
        for block in self.blocks:
            if recompute:  # keep only the block's input; RNG replayed except on the planner's meta tensors
                x = checkpoint(block, x, use_reentrant=False, preserve_rng_state=x.device.type != "meta")
            else:
                x = block(x)  # (N, mu, mu, E)
        return self.head(self.norm(x))  # (N, mu, mu, 2)

    def anomaly_probability(self, windows: Tensor) -> Tensor:
        """SemiREST Eq. (9): windows ``(N, mu, mu, d_t)`` -> ``Theta_w`` ``(N, mu, mu)``, P(anomalous)."""
        return self(windows).softmax(-1)[..., 1]
