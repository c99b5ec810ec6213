"""The two min-max losses of Minimax Diffusion (Gu et al., CVPR 2024), as in vimar-gu/MinimaxDiffusion
`train_dit.py` (REFERENCE.md §4), plus the diversity figure used in the studies.

For every class c in the batch, once the memories of c are non-empty, with S the cosine-similarity matrix
between the batch's embeddings of class c and a memory:

- representativeness  L_r = (1 - min S(emb, real_memory[c]))  * lambda_pos / num_classes_in_batch
- diversity           L_d =      max S(emb, pseudo_memory[c]) * lambda_neg / num_classes_in_batch

then the memories of c are updated (FIFO, `memory_size` entries each) with the batch's real embeddings
and its detached generated embeddings: after the loss, as the reference does.
"""
from __future__ import annotations

from collections import deque

import torch
import torch.nn.functional as F


def cosine_similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(n, d) x (m, d) -> (n, m) cosine similarities (reference `cosine_similarity`, with an epsilon)."""
    a = a.flatten(start_dim=1)
    b = b.flatten(start_dim=1)
    return F.normalize(a, dim=1, eps=1e-8) @ F.normalize(b, dim=1, eps=1e-8).T


class ClassMemory:
    """Per-class FIFO memory of detached embeddings (`real_memory` / `pseudo_memory` in train_dit.py)."""

    def __init__(self, size: int):
        if size < 1:
            raise ValueError("memory size must be >= 1")
        self.size = size
        self.items: dict[int, deque] = {}

    def push(self, c: int, embeddings: torch.Tensor) -> None:
        q = self.items.setdefault(int(c), deque(maxlen=self.size))
        for e in embeddings.detach().flatten(start_dim=1):
            q.append(e.clone())

    def get(self, c: int) -> torch.Tensor | None:
        q = self.items.get(int(c))
        if not q:
            return None
        return torch.stack(list(q))

    def __len__(self) -> int:
        return sum(len(q) for q in self.items.values())

    def state_dict(self) -> dict:
        return {"size": self.size, "items": {c: torch.stack(list(q)) for c, q in self.items.items() if q}}

    def load_state_dict(self, state: dict) -> None:
        self.size = int(state["size"])
        self.items = {int(c): deque(list(t), maxlen=self.size) for c, t in state["items"].items()}


def minmax_losses(
    emb: torch.Tensor,
    real_emb: torch.Tensor,
    labels: torch.Tensor,
    real_memory: ClassMemory,
    pseudo_memory: ClassMemory,
    lambda_pos: float,
    lambda_neg: float,
    update: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (pos_match_loss, neg_match_loss) for one batch; then update the memories.

    emb: the generated embeddings (carrying gradient), real_emb: the embeddings of the real batch, both
    (B, ...) and aligned with `labels`.
    """
    pos = emb.new_zeros(())
    neg = emb.new_zeros(())
    classes = [int(c) for c in torch.unique(labels).tolist()]
    n = len(classes)
    for c in classes:
        mask = labels == c
        fake_c = emb[mask].flatten(start_dim=1)
        real_mem = real_memory.get(c)
        pseudo_mem = pseudo_memory.get(c)
        # The reference tests `len(pseudo_memory[c])`; both memories fill together.
        if pseudo_mem is not None and real_mem is not None:
            if lambda_pos:
                pos = pos + (1 - cosine_similarity(fake_c, real_mem.to(fake_c)).min()) * lambda_pos / n
            if lambda_neg:
                neg = neg + cosine_similarity(fake_c, pseudo_mem.to(fake_c)).max() * lambda_neg / n
        if update:
            real_memory.push(c, real_emb[mask])
            pseudo_memory.push(c, emb[mask])
    return pos, neg


def nn_cosine_distance(images: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Diversity figure: per class, the mean over images of 1 - (cosine similarity to the nearest other
    image of the same class); averaged over classes. Higher = more diverse; 0 = duplicates."""
    out: dict[str, float] = {}
    vals = []
    for c in sorted(set(labels.tolist())):
        x = images[labels == c].flatten(start_dim=1).float()
        if len(x) < 2:
            continue
        x = x - x.mean()  # centre per class set so a shared background does not dominate the cosine
        s = cosine_similarity(x, x)
        s.fill_diagonal_(-2.0)
        d = (1 - s.max(dim=1).values).mean().item()
        out[str(c)] = d
        vals.append(d)
    out["mean"] = float(sum(vals) / len(vals)) if vals else float("nan")
    return out
