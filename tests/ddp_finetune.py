"""Fine-tune a tiny random-init classifier and save its weights and losses: run alone,
or under ``accelerate launch`` with several processes (tests/test_distributed.py)."""

import json
import sys

import torch
from accelerate import PartialState
from safetensors.torch import save_file
from transformers import GPTNeoXConfig, GPTNeoXForSequenceClassification

from robustlib import models, tasks
from robustlib.finetune import FinetuneConfig, finetune

out = sys.argv[1]
state = PartialState(cpu=not torch.cuda.is_available())
tok = models.load_tokenizer("zoo-0.3m")
task = tasks.get_task("password_match")
train = tasks.load_examples(task, "train", n=24, seed=0)
val = tasks.load_examples(task, "validation", n=8, seed=0)
torch.manual_seed(0)
config = GPTNeoXConfig(vocab_size=len(tok), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=32, num_labels=2, pad_token_id=tok.pad_token_id)
model = GPTNeoXForSequenceClassification(config)
result = finetune(model, tok, train, val, FinetuneConfig(epochs=2, batch_size=8, lr=3e-3, device="cpu",
                                                         progress=False))
if state.is_main_process:
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, f"{out}/weights.safetensors")
    with open(f"{out}/result.json", "w") as f:
        json.dump({"losses": result.train_losses, "example_losses": result.example_losses,
                   "examples_seen": result.examples_seen, "processes": state.num_processes}, f)
