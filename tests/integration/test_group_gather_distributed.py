"""Two processes (gloo, CPU) holding parts of the same groups give the same tau and advantages as one.

The batch is split unevenly (5 and 7 completions) so that every group of K = 4 straddles the ranks
or is not adjacent; rewards are computed from the completion strings after gathering, the way the
trainer does it. Results are compared bit for bit with the single-process computation.
"""

from __future__ import annotations

import socket
import traceback
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from models.distributed_groups import GroupSplitError, gather_groups
from models.grpo_math import group_advantages, ptr_rewards
from models.rewards import Alphas, format_reward, outcome_reward

K = 4
ALPHAS = Alphas(0.3, 1.0, 0.5)
COMPLETIONS = [
    "<think>high pitch, fast</think><answer>happy</answer>",
    "<think>low energy</think><answer>sad</answer>",
    "happy",
    "<think>bright tone</think><answer>joy</answer>",
    "<think>loud and tense</think><answer>angry</answer>",
    "<think>tense</think><answer>angry</answer>",
    "<think>flat</think><answer>neutral</answer>",
    "<think>x</think><answer>angry</answer> extra",
    "<think>soft</think><answer>whisper</answer>",
    "<think>quiet</think><answer>sad</answer>",
    "<think>breathy</think><answer>whisper</answer><answer>fear</answer>",
    "<think>low</think><answer>sad</answer>",
]
GOLD = ["happy"] * 4 + ["angry"] * 4 + ["sad"] * 4
# Groups 10, 20, 30 interleaved so that no rank holds a whole group.
GROUP_IDS = [10, 20, 10, 30, 20, 30, 10, 20, 30, 10, 30, 20]
ORDER = [0, 4, 1, 8, 5, 9, 2, 6, 10, 3, 11, 7]  # row i of the batch is COMPLETIONS[ORDER[i]]
RT = [0.8, 0.6, 0.9, 0.7, 0.55, 0.95, 0.4, 0.85, 0.6, 0.3, 0.75, 0.5]
SPLIT = 5  # rank 0 holds rows [0, 5), rank 1 rows [5, 12)


def batch() -> dict:
    return {
        "group_ids": torch.tensor([GROUP_IDS[i] for i in range(12)]),
        "completions": [COMPLETIONS[ORDER[i]] for i in range(12)],
        "gold": [GOLD[ORDER[i]] for i in range(12)],
        "rt": torch.tensor([RT[ORDER[i]] for i in range(12)]),
    }


def scores(data: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rewards, tau and advantages of a batch that holds whole groups."""
    rf = torch.tensor([format_reward(c) for c in data["completions"]])
    ro = torch.tensor([outcome_reward(c, g) for c, g in zip(data["completions"], data["gold"])])
    rewards, trust = ptr_rewards(rf, ro, data["rt"], data["group_ids"], ALPHAS)
    return rewards, trust.tau, group_advantages(rewards, data["group_ids"])


def _worker(rank: int, port: int, out_dir: str) -> None:
    try:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
        full = batch()
        rows = slice(0, SPLIT) if rank == 0 else slice(SPLIT, 12)
        local = {k: v[rows] for k, v in full.items()}
        gathered = gather_groups(local, num_generations=K)
        rewards, tau, advantages = scores(gathered.data)
        result = {k: gathered.local(v).contiguous() for k, v in
                  {"rewards": rewards, "tau": tau, "advantages": advantages}.items()}
        # A rank that lost a completion: both ranks must see the same error, none may hang.
        short = {k: v[:-1] for k, v in local.items()} if rank == 1 else local
        try:
            gather_groups(short, num_generations=K)
            result["incomplete_detected"] = torch.tensor([0])
        except GroupSplitError:
            result["incomplete_detected"] = torch.tensor([1])
        save_file(result, str(Path(out_dir) / f"rank{rank}.safetensors"))
        dist.destroy_process_group()
    except BaseException:
        (Path(out_dir) / f"rank{rank}.error").write_text(traceback.format_exc())
        raise


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(60)
def test_split_groups_give_the_same_tau_and_advantages_as_one_process(tmp_path: Path):
    expected_rewards, expected_tau, expected_adv = scores(batch())
    # The fixture is meaningful: trust varies across groups and advantages are not all zero.
    assert len(set(expected_tau.tolist())) > 1 and expected_adv.abs().sum() > 0

    mp.start_processes(_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True, start_method="spawn")

    errors = sorted(tmp_path.glob("*.error"))
    assert not errors, errors[0].read_text()
    parts = [load_file(str(tmp_path / f"rank{r}.safetensors")) for r in (0, 1)]
    for name, expected in [("rewards", expected_rewards), ("tau", expected_tau), ("advantages", expected_adv)]:
        got = torch.cat([p[name] for p in parts])
        assert torch.equal(got, expected), (name, got, expected)
    assert [p["incomplete_detected"].item() for p in parts] == [1, 1]


def test_gather_without_a_process_group_is_the_local_batch():
    local = batch()
    gathered = gather_groups(local, num_generations=K)
    assert gathered.offsets == (0, 12) and gathered.world_size == 1
    assert gathered["completions"] == local["completions"]
    with pytest.raises(GroupSplitError, match="not whole"):
        gather_groups({k: v[:-1] for k, v in local.items()}, num_generations=K)
    with pytest.raises(ValueError, match="differ in length"):
        gather_groups({**local, "gold": local["gold"][:3]})
