"""The state a streamed training run carries between batches and through a checkpoint."""

from __future__ import annotations

import io
import logging
from types import SimpleNamespace

import pytest
import torch
from embedhelpers import MIXERS, TOKENIZERS
from lightning.fabric.utilities.apply_func import move_data_to_device
from lightning.pytorch.trainer.states import TrainerFn

from ttt_mm.backbone import BackboneState, Restart, state_tensors
from ttt_mm.data import ClipInfo, ReadSpec, SyntheticClip, collate
from ttt_mm.data.datasets import read_item
from ttt_mm.module import PLACE, SequenceModel
from ttt_mm.training.carried_state import CarriedState, place_of


def model(mixer: str = "ttt_linear", depth: int = 2, **settings) -> SequenceModel:
    factory = MIXERS[mixer] | settings
    backbone = {"_target_": "ttt_mm.backbone.Backbone", "dim": 32, "depth": depth, "mixer": factory}
    return SequenceModel(TOKENIZERS["audio"], backbone, carry_state=True)


def windows(start: float) -> dict:
    """A batch of two rows: windows of two synthetic clips from ``start``, neither a clip's first;
    0.64 s, 16 audio tokens: whole TTT mini-batches, where a row can restart alone."""
    spec = ReadSpec(sample_rate=16000, fps=8.0, size=32, min_seconds=0.1)
    batch = collate([read_item(ClipInfo(SyntheticClip(0, i)), start, 0.64, spec) for i in range(2)])
    return batch | {"reset": torch.tensor([False, False])}


def starting_state(carried: CarriedState, m: SequenceModel, batch: dict):
    """The state the batch runs from, as the training step's forward makes it (its restarted rows
    afresh); None: every row afresh."""
    state, restart = carried.before(place_of(batch))
    if state is None:
        return None
    rows = Restart(restart)
    return BackboneState([b.restarted(s, rows) for b, s in zip(m.backbone.blocks, state.blocks, strict=True)])


def rows_equal(a, b, row: int) -> bool:
    return all(torch.equal(x[row], y[row]) for x, y in zip(state_tensors(a), state_tensors(b), strict=True))


def carried_after_one_batch(m: SequenceModel, step: int = 4) -> tuple[CarriedState, object]:
    carried, batch = CarriedState(), windows(1.0) | {"stream_step": torch.tensor(step)}
    _, _, state = m(batch, *carried.before(place_of(batch)))  # the first batch: nothing carried yet
    carried.after(state, place_of(batch))
    return carried, state


def test_the_state_goes_on_only_into_the_batch_that_follows_it():
    """A stream started again at the next step (each epoch of trainer.limit_train_batches) goes on
    mid-clip, and so does the state; a batch from elsewhere in the stream starts every row afresh."""
    m = model()
    carried, state = carried_after_one_batch(m)
    following = starting_state(carried, m, windows(1.64) | {"stream_step": torch.tensor(5)})
    assert rows_equal(following, state, 0) and rows_equal(following, state, 1)
    carried, _ = carried_after_one_batch(m)
    assert starting_state(carried, m, windows(1.64) | {"stream_step": torch.tensor(9)}) is None


@pytest.mark.parametrize("elsewhere", ["another clip", "an earlier window", "the same window"])
def test_a_row_that_does_not_go_on_in_its_clip_starts_afresh_and_the_others_go_on(elsewhere, caplog):
    """Rows go on by (clip, window start): a resumed run whose files read differently this time can
    find a row in another clip than the checkpoint's, and says so."""
    m = model()
    carried, state = carried_after_one_batch(m)
    restored = CarriedState()
    restored.restore(carried.saved(), m.backbone)
    start = {"another clip": 1.64, "an earlier window": 0.0, "the same window": 1.0}[elsewhere]  # (it ended at 1.64)
    batch = windows(start) | {"stream_step": torch.tensor(5)}
    if elsewhere == "another clip":
        batch["path"] = ["synthetic/other", batch["path"][1]]
    with caplog.at_level(logging.INFO, logger="ttt_mm.training.carried_state"):
        got = starting_state(restored, m, batch)
    fresh = m.backbone.initial_state(2)
    assert rows_equal(got, fresh, 0)
    assert rows_equal(got, state if elsewhere == "another clip" else fresh, 1)
    moved = 1 if elsewhere == "another clip" else 2
    assert f"{moved} of 2 rows do not go on where the checkpoint left them (the data changed since" in caplog.text


@pytest.mark.parametrize("mixer", ["ttt_linear", "lact"])
def test_a_saved_state_restores_through_a_checkpoint_file(mixer):
    m = model(mixer)
    carried, state = carried_after_one_batch(m)
    buffer = io.BytesIO()
    torch.save({"carried_state": [carried.saved()]}, buffer)
    buffer.seek(0)
    (saved,) = torch.load(buffer, weights_only=True)["carried_state"]  # plain tensors, numbers and strings
    restored = CarriedState()
    restored.restore(saved, m.backbone)
    following = starting_state(restored, m, windows(1.64) | {"stream_step": torch.tensor(5)})
    assert rows_equal(following, state, 0) and rows_equal(following, state, 1)


def test_a_checkpoint_whose_ttt_states_record_their_mini_batch_size_at_a_boundary_still_restarts_rows():
    """Earlier versions recorded a TTT state's mini-batch size at a boundary too, where a fresh state
    now records none: a checkpoint of theirs still merges with a fresh state when a row restarts."""
    m = model()
    carried, state = carried_after_one_batch(m)  # 16 tokens: whole mini-batches of 8
    saved = carried.saved()
    leaves = saved["leaves"]
    at_boundary = [
        i for i, leaf in enumerate(leaves[:-1]) if type(leaf) is int and leaf == 0 and leaves[i + 1] in (None, 8)
    ]
    assert len(at_boundary) == 2  # one TTT core per block
    for i in at_boundary:
        leaves[i + 1] = 8  # as those versions wrote it
    restored = CarriedState()
    restored.restore(saved, m.backbone)
    batch = windows(1.64) | {"stream_step": torch.tensor(5)}
    batch["path"] = ["synthetic/other", batch["path"][1]]
    got = starting_state(restored, m, batch)
    assert rows_equal(got, m.backbone.initial_state(2), 0) and rows_equal(got, state, 1)


def test_a_state_of_another_model_is_refused_and_one_of_another_batch_size_starts_afresh():
    m = model()
    carried, _ = carried_after_one_batch(m)
    for other in (model(depth=3), model("lact"), model(num_heads=4)):  # (heads: as many tensors, other shapes)
        with pytest.raises(ValueError, match="another model or batch size"):
            CarriedState().restore(carried.saved(), other.backbone)
    restored = CarriedState()
    restored.restore(carried.saved(), m.backbone)
    three = collate([read_item(ClipInfo(SyntheticClip(0, i)), 2.0, 1.0, ReadSpec(fps=8.0, size=32)) for i in range(3)])
    place = place_of(three | {"reset": torch.zeros(3, dtype=torch.bool), "stream_step": torch.tensor(5)})
    assert restored.before(place) == (None, None)


@pytest.mark.parametrize("mixer, setting", [("ttt_linear", "mini_batch_size"), ("lact", "chunk_size")])
def test_a_state_part_way_through_a_unit_of_another_size_is_refused(mixer, setting):
    """A run resumed with another LaCT chunk_size (or TTT mini_batch_size) took the checkpoint's
    state, then crashed at its first step: it is now refused where it is restored, which the module
    reports as a state that does not fit and starts afresh."""
    carried, _ = carried_after_one_batch(model(mixer, **{setting: 12}))  # 16 tokens: 4 into the second unit
    with pytest.raises(ValueError, match=f"{setting}=4"):
        CarriedState().restore(carried.saved(), model(mixer, **{setting: 4}).backbone)
    restored = CarriedState()
    restored.restore(carried.saved(), model(mixer, **{setting: 12}).backbone)  # its own settings: taken
    assert restored.state is not None


def test_batches_without_a_reset_flag_are_refused():
    with pytest.raises(ValueError, match="'reset' flag"):
        place_of(windows(1.0) | {"reset": None})


def test_a_resumed_batch_that_does_not_follow_says_where_each_stands(caplog):
    """A checkpoint saved inside a group of accumulate_grad_batches (a validation between optimizer
    steps) resumes at the group's start, before its last batch: the log gives both places."""
    m = model()
    carried, _ = carried_after_one_batch(m, step=5)
    restored = CarriedState()
    restored.restore(carried.saved(), m.backbone)
    with caplog.at_level(logging.INFO, logger="ttt_mm.training.carried_state"):
        assert starting_state(restored, m, windows(1.64) | {"stream_step": torch.tensor(4)}) is None
    assert "(stream batch 5 of 2 rows; this run goes on at 4 of 2: " in caplog.text
    assert "saved inside a group of accumulate_grad_batches" in caplog.text


def test_a_resume_that_does_not_follow_is_said_once_and_moved_rows_by_each_process(caplog, monkeypatch):
    """Every process of a DDP run said the same long paragraph (eight GPUs: eight times); the rows each
    process finds moved are its own, so each says them, naming itself."""
    from ttt_mm.training import carried_state

    m = model()
    carried, _ = carried_after_one_batch(m, step=5)
    monkeypatch.setattr(carried_state.rank_zero_only, "rank", 1)
    monkeypatch.setattr(carried_state, "_distributed", lambda: True)
    restored = CarriedState()
    restored.restore(carried.saved(), m.backbone)
    with caplog.at_level(logging.INFO, logger="ttt_mm.training.carried_state"):
        assert starting_state(restored, m, windows(1.64) | {"stream_step": torch.tensor(4)}) is None
    assert "does not go on" not in caplog.text
    restored = CarriedState()
    restored.restore(carried.saved(), m.backbone)
    with caplog.at_level(logging.INFO, logger="ttt_mm.training.carried_state"):
        starting_state(restored, m, windows(0.0) | {"stream_step": torch.tensor(6)})
    assert "2 of 2 rows of process 1 do not go on where the checkpoint left them" in caplog.text


def test_a_resume_that_goes_on_in_a_ddp_run_names_whose_rows_it_counts(caplog, monkeypatch):
    """Only the first process says it, of its own rows: "in 2 of 2 rows" read as the whole batch of a
    two-process run (4 rows)."""
    from ttt_mm.training import carried_state

    m = model()
    carried, _ = carried_after_one_batch(m, step=5)
    for distributed, said in ((False, "in 2 of 2 rows\n"), (True, "in 2 of 2 rows of process 0\n")):
        monkeypatch.setattr(carried_state, "_distributed", lambda d=distributed: d)
        restored = CarriedState()
        restored.restore(carried.saved(), m.backbone)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="ttt_mm.training.carried_state"):
            starting_state(restored, m, windows(1.64) | {"stream_step": torch.tensor(6)})
        assert caplog.text.endswith(f"goes on from the checkpoint's carried state {said}")


def test_a_training_batch_says_where_it_stands_before_it_goes_to_the_device():
    """Read from the batch on the device, its place (flags, step, window starts) would make every step
    wait for the device; the module reads it on the CPU, and the transfer leaves it as it is."""
    m = model()
    m._trainer = SimpleNamespace(training=True)
    batch = m.on_before_batch_transfer(windows(1.0) | {"stream_step": torch.tensor(4)}, 0)
    on_device = move_data_to_device(batch, torch.device("meta"))  # (no data: reading it raises)
    with pytest.raises(RuntimeError):
        place_of(on_device)
    assert on_device[PLACE] == place_of(windows(1.0) | {"stream_step": torch.tensor(4)})
    assert on_device[PLACE].step == 4 and on_device[PLACE].reset == (False, False)
    assert [row[1] for row in on_device[PLACE].rows] == pytest.approx([1.0, 1.0])


def test_a_carried_state_of_another_number_of_processes_is_not_taken(caplog):
    """Its parts are each process's rows: with fewer processes some rows would go on from another's."""
    m = model()
    carried, _ = carried_after_one_batch(m)
    for world, taken in ((2, False), (1, True)):
        m._carried = CarriedState()
        m._trainer = SimpleNamespace(
            world_size=1, is_global_zero=True, global_rank=0, strategy=SimpleNamespace(model=m), datamodule=None
        )
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="ttt_mm.module"):
            m._restore_carried_state((world, carried.saved()), 4)
        assert (m._carried.state is not None) == taken
        said = "the checkpoint's carried state is for 2 processes, this run has 1"
        assert (said in caplog.text) != taken


def test_only_a_fit_takes_its_part_of_a_checkpoints_carried_state():
    """A checkpoint loaded to test or validate never goes on from the state: its part stays in the file
    (held, it would stay in memory to the process's end: up to GiBs per process for a large LaCT)."""
    part = {"step": 7, "rows": [None], "leaves": [torch.zeros(4, 4)]}
    for fn, taken in ((TrainerFn.TESTING, False), (TrainerFn.FITTING, True)):
        m = model()
        m._trainer = SimpleNamespace(state=SimpleNamespace(fn=fn), global_rank=0)
        m.on_load_checkpoint({"global_step": 8, "carried_state": [part]})
        assert (m._resumed["carried_state"] is not None) == taken
