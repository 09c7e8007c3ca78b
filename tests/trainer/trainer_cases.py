"""Shared set-up for the Trainer tests: a tiny WordPiece vocabulary, a tiny bert2bert saved by
transformers (dropout 0), and a copy/reverse data set tokenized with ``text_target``."""
import random

WORDS = "apple bird cat dog egg fish goat hat milk kite lamp moon".split()
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "copy", "reverse", *WORDS]
TINY = dict(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=48,
            max_position_embeddings=32, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
            pad_token_id=0, bos_token_id=2, eos_token_id=3)


def write_vocab(directory):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    return directory


def save_tiny_bert2bert(T, torch, directory, seed=0):
    """A BertGeneration bert2bert built and saved by transformers."""
    torch.manual_seed(seed)
    encoder = T.BertGenerationConfig(**TINY)
    decoder = T.BertGenerationConfig(**TINY, is_decoder=True, add_cross_attention=True)
    config = T.EncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder)
    config.decoder_start_token_id, config.pad_token_id, config.eos_token_id = 2, 0, 3
    T.EncoderDecoderModel(config).eval().save_pretrained(directory)
    return directory


def pairs(count, seed):
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        task = rng.choice(["copy", "reverse"])
        words = [rng.choice(WORDS) for _ in range(rng.randint(2, 4))]
        out.append((f"{task} {' '.join(words)}", " ".join(words if task == "copy" else words[::-1])))
    return out


def tokenized(tokenizer, examples):
    """A list of dicts, as ``dataset.map(lambda b: tokenizer(b["source"], text_target=b["target"]))``."""
    return [dict(tokenizer(source, text_target=target)) for source, target in examples]


def tiny_ours(directory):
    """(model, tokenizer) built by minibertgen alone: the core tests need no torch."""
    import minibertgen as mb

    write_vocab(directory)
    mb.set_seed(0)  # the same new weights every time
    encoder = mb.BertGenerationConfig(**TINY)
    decoder = mb.BertGenerationConfig(**TINY, is_decoder=True, add_cross_attention=True)
    config = mb.EncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder)
    config.decoder_start_token_id, config.pad_token_id, config.eos_token_id = 2, 0, 3
    return mb.EncoderDecoderModel(config=config), mb.BertTokenizer(str(directory / "vocab.txt"))
