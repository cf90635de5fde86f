"""SequenceModel: it asks the backbone, never a mixer's name, which parameters decay and whether
state can be carried."""

from __future__ import annotations

import pytest
from embedhelpers import MIXERS, TOKENIZERS

from ttt_mm.module import SequenceModel


def model(mixer: str, **kw) -> SequenceModel:
    backbone = {"_target_": "ttt_mm.backbone.Backbone", "dim": 32, "depth": 2, "mixer": MIXERS[mixer]}
    return SequenceModel(TOKENIZERS["audio"], backbone, **kw)


def test_weight_decay_skips_small_tensors_norms_and_what_the_mixers_name():
    m = model("ttt_linear")
    skip = m._no_decay()
    decayed = sorted(n for n, p in m.named_parameters() if id(p) not in skip)
    assert all(m.get_parameter(n).dim() >= 2 for n in decayed)
    assert "backbone.blocks.0.mixer.wqkv.weight" in decayed and "head.weight" in decayed
    assert "backbone.blocks.0.mixer.W" not in decayed  # the inner model's initial weights (TTTLayer says so)
    assert not any("norm" in n for n in decayed)


def test_carrying_state_needs_a_bounded_mixer():
    assert model("ttt_linear", carry_state=True).hparams.carry_state
    assert model("lact", carry_state=True).hparams.carry_state
    with pytest.raises(ValueError, match="carry_state=true needs a mixer with a bounded state"):
        model("attention", carry_state=True)


def test_lact_initial_fast_weights_and_qk_affine_take_no_weight_decay():
    m = model("lact")
    skip = m._no_decay()
    mixer = "backbone.blocks.0.mixer"
    for name in ("w0", "w1", "w2", "qk_scale", "qk_offset"):
        assert id(m.get_parameter(f"{mixer}.{name}")) in skip, name
    assert id(m.get_parameter(f"{mixer}.wqkv.weight")) not in skip
