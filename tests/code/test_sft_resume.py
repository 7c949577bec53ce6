"""Checkpoint and resume: training stopped after a checkpoint continues from it, not from step 0, and ends
where an uninterrupted run ends; a finished stage is reused, not retrained."""

from __future__ import annotations

import pytest
from safetensors import safe_open
from sft_fixtures import shared_sft_dir

from emotionthinker.config import load_config
from models.checkpoints import last_checkpoint, prune_checkpoints, read_done
from models.sft import read_samples, sample_file, train_stage


class Crash(RuntimeError):
    pass


def step_recorder(steps: list[int], crash_after: int | None = None):
    from transformers import TrainerCallback

    class Recorder(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            steps.append(state.global_step)
            if crash_after is not None and state.global_step == crash_after:
                raise Crash(f"killed after step {state.global_step}")

    return Recorder()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    cfg = load_config("test", environ={}, overrides={
        "paths": {"workspace": str(root / "ws")},
        "sft": {"stage1_max_steps": 4, "save_steps": 2, "save_total_limit": 3, "stage1_encoder_layers": 0},
    })  # fmt: skip
    samples = read_samples(sample_file(shared_sft_dir(cfg), "stage1", "train"))[:8]
    return cfg, samples, root


def test_killed_training_resumes_from_the_last_checkpoint(setup):
    cfg, samples, root = setup
    folder = root / "interrupted"
    seen: list[int] = []
    with pytest.raises(Crash):
        train_stage("stage1", cfg.models.policy_source, samples, cfg, folder, callbacks=[step_recorder(seen, crash_after=3)])
    assert seen == [1, 2, 3]
    assert last_checkpoint(folder).name == "checkpoint-2" and read_done(folder) is None
    assert (last_checkpoint(folder) / "model.safetensors").is_file()  # checkpoints hold safetensors weights

    resumed_steps: list[int] = []
    resumed = train_stage("stage1", cfg.models.policy_source, samples, cfg, folder, callbacks=[step_recorder(resumed_steps)])
    assert resumed.resumed_from.endswith("checkpoint-2")
    assert resumed_steps == [3, 4]  # continued from the checkpoint, not from 0
    assert resumed.global_step == 4 and read_done(folder)["global_step"] == 4
    # Done: a rerun reuses final/ and a longer run is another folder, so no checkpoint is kept.
    assert last_checkpoint(folder) is None and not list(folder.glob("checkpoint-*"))

    straight = train_stage("stage1", cfg.models.policy_source, samples, cfg, root / "straight")
    assert straight.resumed_from is None
    # Same data order, optimizer and scheduler state after resuming: the same losses and weights.
    assert [s for s, _ in resumed.losses] == [1, 2, 3, 4]
    assert [loss for _, loss in resumed.losses] == pytest.approx([loss for _, loss in straight.losses], rel=1e-5)
    with safe_open(folder / "final" / "model.safetensors", "pt") as a, safe_open(root / "straight" / "final" / "model.safetensors", "pt") as b:
        assert set(a.keys()) == set(b.keys())
        assert max((a.get_tensor(k) - b.get_tensor(k)).abs().max().item() for k in a.keys()) < 1e-5


def test_a_finished_stage_is_reused_without_training(setup):
    cfg, samples, root = setup
    folder = root / "straight"
    if read_done(folder) is None:
        train_stage("stage1", cfg.models.policy_source, samples, cfg, folder)
    steps: list[int] = []
    again = train_stage("stage1", cfg.models.policy_source, samples, cfg, folder, callbacks=[step_recorder(steps)])
    assert again.reused and steps == [] and again.global_step == 4
    assert not (folder / "final" / "training_args.bin").exists()  # no pickle in a published model folder


def test_a_resumed_stage_logs_the_steps_before_its_checkpoint_into_its_new_run(cfg, config_file):
    """The step logger, given the trainer state a resume restores (global step 2, two logged steps): the new
    MLflow run gets those steps too, once, so its loss curve starts at step 1; a fresh start logs nothing early."""
    from mlflow import MlflowClient
    from transformers import TrainerState

    from emotionthinker.tracking import start_stage_run
    from models.sft import mlflow_step_logger

    history = [{"loss": 2.0, "learning_rate": 1e-3, "epoch": 0.5, "step": 1}, {"loss": 1.5, "grad_norm": 0.7, "step": 2}]
    client = MlflowClient(cfg.tracking_uri)
    with start_stage_run(cfg, "sft") as run:
        logger = mlflow_step_logger(run, "stage1")
        logger.on_train_begin(None, TrainerState(global_step=0, log_history=[]), None)  # a fresh start
        assert client.get_metric_history(run.run_id, "stage1/loss") == []
        for _ in range(2):  # a second call (another resume into the same run) adds nothing
            logger.on_train_begin(None, TrainerState(global_step=2, log_history=history), None)
        logger.on_log(None, TrainerState(global_step=3), None, logs={"loss": 1.2})
    assert [(m.step, m.value) for m in client.get_metric_history(run.run_id, "stage1/loss")] == [(1, 2.0), (2, 1.5), (3, 1.2)]
    assert [m.step for m in client.get_metric_history(run.run_id, "stage1/grad_norm")] == [2]
    assert "stage1/step" not in client.get_run(run.run_id).data.metrics


def test_a_checkpoint_the_disk_cannot_hold_stops_training_before_the_save(setup, disk_full):
    """The same guard as GRPO-PTR's, as a Trainer callback (SFT stages and the reward model train here)."""
    from models import checkpoints as C

    cfg, samples, root = setup
    folder = root / "small-disk"
    first = folder / "checkpoint-2"
    disk_full(after=first)
    seen: list[int] = []
    with pytest.raises(C.CheckpointSpaceError, match="resumes from checkpoint-2"):
        train_stage("stage1", cfg.models.policy_source, samples, cfg, folder, callbacks=[step_recorder(seen)])
    # Step 4 trained; the guard, listed before the recorder, stopped its save before the recorder saw it.
    assert seen == [1, 2, 3] and sorted(p.name for p in folder.iterdir()) == ["checkpoint-2"]

    from models.backbone import AudioLM
    from models.sft import set_stage1_trainable

    lm = AudioLM.from_source(cfg.models.policy_source, cfg)
    set_stage1_trainable(lm.model, cfg.sft.stage1_encoder_layers)
    size, estimate = C.folder_bytes(first), C.state_bytes_estimate(lm.model)
    assert 0.8 * estimate <= size <= C.SPACE_MARGIN * estimate, (size, estimate)

    disk_full()
    with pytest.raises(C.CheckpointSpaceError, match="starts again from step 0"):
        train_stage("stage1", cfg.models.policy_source, samples, cfg, root / "no-disk", callbacks=[step_recorder(seen := [])])
    assert seen == []  # stopped before the first step


def test_a_lora_checkpoint_is_estimated_by_its_adapters(setup):
    from models.backbone import AudioLM
    from models.checkpoints import state_bytes_estimate
    from models.lora import apply_lora

    cfg, _, _ = setup
    lm = AudioLM.from_source(cfg.models.policy_source, cfg)
    full = state_bytes_estimate(lm.model)
    s = cfg.sft
    apply_lora(lm, s.lora_r, s.lora_alpha, s.lora_dropout, s.lora_target_modules)
    adapters = sum(p.numel() for p in lm.model.parameters() if p.requires_grad)
    assert adapters > 0 and state_bytes_estimate(lm.model) == 3 * 4 * adapters < full


def test_pruning_keeps_the_last_complete_checkpoints_and_drops_torn_ones(tmp_path):
    for step, complete in ((2, True), (4, True), (6, True), (8, False)):
        (tmp_path / f"checkpoint-{step}").mkdir()
        if complete:
            (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    (tmp_path / "final").mkdir()
    deleted = prune_checkpoints(tmp_path, keep=1)
    assert sorted(p.name for p in deleted) == ["checkpoint-2", "checkpoint-4", "checkpoint-8"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-6", "final"]
    assert [p.name for p in prune_checkpoints(tmp_path)] == ["checkpoint-6"] and last_checkpoint(tmp_path) is None
    assert prune_checkpoints(tmp_path / "missing") == []


def test_reusing_a_finished_stage_prunes_what_it_kept_from_before_pruning(tmp_path):
    from models.checkpoints import finished_stage, write_done

    (tmp_path / "checkpoint-2").mkdir()
    (tmp_path / "checkpoint-2" / "trainer_state.json").write_text("{}")
    assert finished_stage(tmp_path) is None and (tmp_path / "checkpoint-2").is_dir()  # not finished: kept to resume
    write_done(tmp_path, {"global_step": 2})
    assert finished_stage(tmp_path) == {"global_step": 2} and last_checkpoint(tmp_path) is None


def test_a_second_process_on_the_same_stage_folder_is_refused(setup):
    """Two trainings into one folder would interleave their checkpoints; the second is refused at once."""
    from emotionthinker.locks import file_lock
    from models.sft import SftTrainingError, run_stage

    cfg, samples, root = setup
    folder = root / "busy"
    with file_lock(root / "busy.lock", 0):  # as another process training into `folder` holds it
        with pytest.raises(SftTrainingError, match=r"another process is training into .*busy: pid \d+ on "):
            run_stage("stage1", cfg.models.policy_source, samples, cfg, folder)
    assert not folder.exists()  # nothing was written
