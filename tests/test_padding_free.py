"""Padding-free batches and the chunked LM-head loss on the PyTorch engine (tiny Llama, fp32):
the same per-token losses and gradients as padded rows and as each example alone."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from backends.data import make_batches
from backends.torch_backend import head_loss, padding_free
from tests.test_train_engine import engine_for, random_examples


def losses_of(engine, batch, *, flat: bool) -> torch.Tensor:
    engine._padding_free = flat
    return engine.labelled_losses(batch)[0]


def test_flatten_keeps_real_tokens_with_restarting_positions_and_spans():
    examples = random_examples(5, seed=1)
    batch = make_batches(examples, batch_size=5, pad_token_id=0, seed=0, epoch=0)[0]
    flat = padding_free.flatten(batch)
    lengths = batch.attention_mask.sum(axis=1)
    assert flat.input_ids.shape == (1, batch.num_tokens)
    assert [e - s for s, e in flat.segments] == lengths.tolist()
    for row, (s, e) in enumerate(flat.segments):
        assert flat.position_ids[0, s:e].tolist() == list(range(e - s))
        assert flat.input_ids[0, s:e].tolist() == batch.input_ids[row, : e - s].tolist()
        assert (flat.rows[s:e] == row).all()
        # the last token of an example predicts nothing; the others predict the next label
        assert flat.targets[0, e - 1] == -100
        assert flat.targets[0, s : e - 1].tolist() == batch.labels[row, 1 : e - s].tolist()
    assert int((flat.targets != -100).sum()) == batch.num_label_tokens


@pytest.mark.parametrize("checkpointing", [False, True])
def test_padding_free_gives_the_padded_per_token_losses_and_gradients(tiny_model_dir, checkpointing):
    """Done-when of issue 22: the same batch padded and padding-free gives the same per-token
    losses (so the same per-example losses) within 1e-5 in fp32, and the same LoRA gradients,
    with and without gradient checkpointing (the spans pass through the checkpointed layers)."""
    engine = engine_for(tiny_model_dir, padding_free=True, gradient_checkpointing=checkpointing)
    assert engine.model.get_base_model().config._attn_implementation == padding_free.VARLEN
    batch = make_batches(random_examples(6, seed=3), batch_size=6, pad_token_id=0, seed=0, epoch=0)[0]
    assert (batch.attention_mask == 0).any()  # rows of different lengths: there is padding
    losses, grads = [], []
    for flat in (False, True):
        engine.model.zero_grad(set_to_none=True)
        per_token = losses_of(engine, batch, flat=flat)
        per_token.sum().backward()
        losses.append(per_token.detach())
        grads.append([p.grad.clone() for p in engine._params])
    torch.testing.assert_close(losses[1], losses[0], rtol=0, atol=1e-5)
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    # per-example sums equal too (sequence_log_probs sums by row)
    engine._padding_free = True
    on = engine.sequence_log_probs(batch).detach()
    engine._padding_free = False
    off = engine.sequence_log_probs(batch).detach()
    torch.testing.assert_close(on, off, rtol=0, atol=1e-4)


def test_packed_padding_free_losses_equal_each_example_alone(tiny_model_dir):
    """Packed sequences (data.packing) run padding-free give, token by token, the losses of each
    example run alone and unpadded."""
    engine = engine_for(tiny_model_dir, padding_free=True)
    examples = random_examples(8, seed=7)
    by_row = {e.row: e for e in examples}
    packed = make_batches(
        examples, batch_size=2, pad_token_id=0, seed=0, epoch=0, packing=True, max_seq_length=96
    )
    assert any(b.segment_ids.max() > 1 for b in packed)
    with torch.no_grad():
        for batch in packed:
            alone = [
                losses_of(
                    engine,
                    make_batches([by_row[r]], batch_size=1, pad_token_id=0, seed=0, epoch=0)[0],
                    flat=False,
                )
                for r in batch.rows
            ]
            torch.testing.assert_close(
                losses_of(engine, batch, flat=True), torch.cat(alone), rtol=0, atol=1e-5
            )
            torch.testing.assert_close(
                losses_of(engine, batch, flat=False), torch.cat(alone), rtol=0, atol=1e-5
            )


def test_chunked_head_loss_equals_full_logits_cross_entropy():
    """``head_loss.token_losses`` (chunks of 7 positions) equals cross-entropy over the full
    logits in fp32, values and gradients, for a frozen head (fused gradient) and a trainable one
    (checkpointed chunks)."""
    torch.manual_seed(0)
    hidden = torch.randn(50, 16)
    targets = torch.randint(0, 300, (50,))
    weights = torch.rand(50)
    for trainable in (False, True):
        head = torch.nn.Linear(16, 300, bias=trainable)
        head.requires_grad_(trainable)
        h_ref, h_ours = hidden.clone().requires_grad_(), hidden.clone().requires_grad_()
        reference = F.cross_entropy(head(h_ref), targets, reduction="none")
        (reference * weights).sum().backward()
        head_grads = [p.grad.clone() for p in head.parameters() if p.grad is not None]
        head.zero_grad()
        ours = head_loss.token_losses(h_ours, head, targets, chunk=7)
        (ours * weights).sum().backward()
        torch.testing.assert_close(ours, reference, rtol=0, atol=1e-5)
        torch.testing.assert_close(h_ours.grad, h_ref.grad, rtol=1e-5, atol=1e-7)
        for a, p in zip(head_grads, [p for p in head.parameters() if p.grad is not None], strict=True):
            torch.testing.assert_close(p.grad, a, rtol=1e-5, atol=1e-6)
    with torch.no_grad():  # no gradient wanted: no gradient buffer either
        assert head_loss.token_losses(hidden, head, targets).shape == (50,)


def test_chunk_size_bounds_the_logits_memory():
    assert head_loss.chunk_size(49152) * 49152 * 4 <= head_loss.CHUNK_BYTES
    assert head_loss.chunk_size(10**9) == head_loss.MIN_CHUNK
    assert not head_loss.liger_available("cpu")
