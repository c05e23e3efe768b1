"""The cross-encoder student (``rag finetune reranker --student cross-encoder``): the store's embedder weights with
a new one-score head, trained on the teacher's scores. On 2 CPU cores it has not learned from the few hundred pairs a
budget allows (docs/finetuning.md); it is kept for a GPU and many more pairs."""

from __future__ import annotations

import contextlib
import shutil
import sys
from pathlib import Path

from indexes.errors import require


def train_cross_encoder(base: str, pairs: list[tuple[str, str, float]], out_dir: Path, epochs: int, batch_size: int,
                        learning_rate: float, max_length: int, seed: int, progress: bool,
                        device: str | None = None) -> None:
    """A cross-encoder from ``base`` (an embedder folder: its encoder, a new one-score head) trained on (question,
    passage, teacher score) with binary cross-entropy on the soft labels, saved to ``out_dir``."""
    st = require("sentence_transformers", None, "sentence-transformers")
    datasets = require("datasets", "finetune", "datasets")
    from sentence_transformers.cross_encoder import CrossEncoderTrainer, CrossEncoderTrainingArguments
    from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss

    model = st.CrossEncoder(base, num_labels=1, max_length=max_length, device=device)
    trainer_dir = out_dir.parent / f"{out_dir.name}-trainer"  # the trainer's scratch space, removed after
    data = datasets.Dataset.from_dict({"query": [p[0] for p in pairs], "passage": [p[1] for p in pairs],
                                       "label": [float(p[2]) for p in pairs]})
    args = CrossEncoderTrainingArguments(
        output_dir=str(trainer_dir), num_train_epochs=epochs, per_device_train_batch_size=batch_size,
        learning_rate=learning_rate, warmup_ratio=0.1, save_strategy="no", report_to="none", logging_steps=10,
        seed=seed, disable_tqdm=not progress, use_cpu=device == "cpu")
    trainer = CrossEncoderTrainer(model=model, args=args, train_dataset=data, loss=BinaryCrossEntropyLoss(model))
    try:
        with contextlib.redirect_stdout(sys.stderr):  # the trainer prints its logs: stdout is for the result (--json)
            trainer.train()
    finally:
        shutil.rmtree(trainer_dir, ignore_errors=True)
    model.save_pretrained(str(out_dir))
