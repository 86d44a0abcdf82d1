"""Run by test_two_process_gloo_keeps_pools_identical under torchrun (2 CPU processes, gloo)."""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from test_train import RandomSamples, lora_model  # noqa: E402

from memoryllm_repro.train import TrainConfig, Trainer  # noqa: E402


def main(out_dir):
    cfg = TrainConfig(out_dir=out_dir, steps=3, model=dict(num_blocks=4, num_tokens=8), eval_every=0, save_every=100,
                      lr=1e-2, curriculum_steps=[1], curriculum_values=[1, 2], threads=1)
    tr = Trainer(cfg, model=lora_model(0), tokenizer=object(), samples=RandomSamples())
    assert tr.acc.num_processes == 2, tr.acc.num_processes
    tr.train()
    rank = tr.acc.process_index
    torch.save(tr.model.memory.clone(), os.path.join(out_dir, f"pool-{rank}.pt"))
    torch.save({n: p.detach().clone() for n, p in tr.model.named_parameters() if p.requires_grad},
               os.path.join(out_dir, f"lora-{rank}.pt"))


if __name__ == "__main__":
    main(sys.argv[1])
