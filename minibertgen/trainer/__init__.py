"""transformers' fine-tuning surface on minibertgen's models: Seq2SeqTrainer and its pieces.

    arguments.py    Seq2SeqTrainingArguments (transformers' names and defaults; torch-only ones refused)
    collator.py     DataCollatorForSeq2Seq
    data.py         datasets -> seeded batches
    schedules.py    AdamW with decay groups, lr_scheduler_type schedules
    loop.py         Seq2SeqTrainer: train(), the step, logging / evaluating / saving
    evaluation.py   evaluate(), predict(), predict_with_generate
    checkpoints.py  checkpoint-N/ written atomically, resumed, pruned; rng_state.py its generators
    callbacks.py    TrainerCallback, EarlyStoppingCallback, progress bar, JSON-lines log; plot.py the curves
"""
from .arguments import Seq2SeqTrainingArguments
from .callbacks import EarlyStoppingCallback, TrainerCallback
from .collator import DataCollatorForSeq2Seq
from .evaluation import EvalPrediction, PredictionOutput, TrainOutput
from .loop import Seq2SeqTrainer
from .state import TrainerControl, TrainerState

__all__ = ["Seq2SeqTrainer", "Seq2SeqTrainingArguments", "DataCollatorForSeq2Seq", "EarlyStoppingCallback",
           "TrainerCallback", "TrainerState", "TrainerControl", "EvalPrediction", "PredictionOutput", "TrainOutput"]
