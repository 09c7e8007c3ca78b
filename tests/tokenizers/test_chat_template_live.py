"""apply_chat_template and the tokenizer details transformers' own tests reach for (issue 33):
chat templates rendered, encoded, saved and loaded as transformers 4.57 does (compared
live with its slow tokenizers, and with its fast ones for the assistant-token masks), the
over-length warning tied to ``deprecation_warnings``, ``init_kwargs`` holding every
defaulted argument, ``BatchEncoding.to``."""
import inspect
import json
import logging

import numpy as np
import pytest

from conftest import require_module
from tok_helpers import BPE_DIR, FIXTURES

import minibertgen as mb

T = require_module("transformers")
require_module("jinja2")

VOCAB = str(FIXTURES / "minilm_vocab.txt")
SETUPS = {
    "bert": (lambda: mb.BertTokenizer(VOCAB), lambda: T.BertTokenizer(VOCAB)),
    "roberta": (lambda: mb.RobertaTokenizer(str(BPE_DIR / "vocab.json"), str(BPE_DIR / "merges.txt")),
                lambda: T.RobertaTokenizer(str(BPE_DIR / "vocab.json"), str(BPE_DIR / "merges.txt"))),
    "bert-generation": (lambda: mb.BertGenerationTokenizer(str(FIXTURES / "botchan_en_unigram_1000.model")),
                        lambda: T.BertGenerationTokenizer(str(FIXTURES / "botchan_en_unigram_1000.model"))),
}
CHAT = [{"role": "system", "content": "system message"}, {"role": "user", "content": "user message"},
        {"role": "assistant", "content": "assistant message"}]
PLAIN = "{% for message in messages %}{{message['role'] + message['content']}}{% endfor %}"
TEMPLATES = {
    "plain": PLAIN,
    "chatml": ("{% for m in messages %}{{ bos_token if loop.first else '' }}<|{{ m.role }}|>\n{{ m.content }}"
               "{{ eos_token }}\n{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"),
    "loopcontrols": ("{%- for m in messages %}{{- m.role + ' ' + m.content }}{%- if loop.first %}{%- break %}"
                     "{%- endif %}{%- endfor %}"),
    "tojson": "{{ messages | tojson }}|{{ tools | tojson(indent=2) }}|{{ documents | tojson }}|{{ flavour }}",
    "trimmed": "{% for m in messages %}[{{ m.role }}] {{ m.content | trim }}\n{% endfor %}",
    "blocks": "{% for m in messages %}{% for b in m.content %}{{ b.text }};{% endfor %}{% endfor %}",
}
TOOLS = [{"type": "function", "function": {"name": "météo", "parameters": {"type": "object"}}}]
DOCS = [{"title": "Doc", "text": "Ünïcode <b>"}]


@pytest.fixture(params=list(SETUPS))
def pair(request):
    ours, theirs = SETUPS[request.param]
    return ours(), theirs()


def both(pair, conversation, **kwargs):
    ours, theirs = pair
    return ours.apply_chat_template(conversation, **kwargs), theirs.apply_chat_template(conversation, **kwargs)


@pytest.mark.parametrize("name", ["plain", "chatml", "loopcontrols", "tojson", "trimmed"])
@pytest.mark.parametrize("generation_prompt", [False, True])
def test_rendering_and_ids_as_transformers(pair, name, generation_prompt):
    kwargs = dict(chat_template=TEMPLATES[name], add_generation_prompt=generation_prompt, tools=TOOLS,
                  documents=DOCS, flavour="vanilla")
    text, expected = both(pair, CHAT, tokenize=False, **kwargs)
    assert text == expected and len(text) > 0
    ids, expected = both(pair, CHAT, **kwargs)
    assert ids == expected
    batch, expected = both(pair, [CHAT, CHAT[:2]], tokenize=False, **kwargs)
    assert batch == expected and isinstance(batch, list) and len(batch) == 2


def test_return_dict_and_arrays_as_transformers(pair):
    ours, expected = both(pair, [CHAT, CHAT[:1]], chat_template=PLAIN, return_dict=True, padding=True,
                          return_tensors="np")
    assert set(ours) == set(expected)
    for key in expected:
        np.testing.assert_array_equal(ours[key], expected[key])
    ours, expected = both(pair, [CHAT[:1]], chat_template=PLAIN, tokenize=False)
    assert ours == expected and isinstance(ours, list)  # a batch of one stays a list


TEXT_ENDINGS = [CHAT, CHAT[:2] + [{"role": "assistant", "content": "I start   "}],  # trailing spaces
                [{"role": "user", "content": "same"}, {"role": "assistant", "content": "same"}]]  # a decoy copy
BLOCKS = [{"role": "user", "content": [{"type": "text", "text": "one"}, {"type": "image"},
                                       {"type": "text", "text": "two"}]}]


@pytest.mark.parametrize("conversation, name", [(c, n) for c in TEXT_ENDINGS for n in ("plain", "trimmed")]
                         + [(BLOCKS, "blocks")])
def test_continue_final_message_as_transformers(pair, conversation, name):
    ours, expected = both(pair, conversation, chat_template=TEMPLATES[name], tokenize=False,
                          continue_final_message=True)
    assert ours == expected


def test_template_errors():
    tokenizer = SETUPS["bert"][0]()
    with pytest.raises(ValueError, match="no chat template"):
        tokenizer.apply_chat_template(CHAT)
    with pytest.raises(ValueError, match="not both|pass one of them"):
        tokenizer.apply_chat_template(CHAT, chat_template=PLAIN, add_generation_prompt=True,
                                      continue_final_message=True)
    with pytest.raises(ValueError, match="return_dict=True needs tokenize=True"):
        tokenizer.apply_chat_template(CHAT, chat_template=PLAIN, tokenize=False, return_dict=True)
    jinja2 = require_module("jinja2")
    with pytest.raises(jinja2.exceptions.TemplateError, match="no system role"):
        tokenizer.apply_chat_template(CHAT, chat_template="{{ raise_exception('no system role') }}")
    with pytest.raises(jinja2.exceptions.SecurityError):  # the sandbox: no reaching into Python
        tokenizer.apply_chat_template(CHAT, chat_template="{{ messages.__class__.__mro__[1].__subclasses__() }}")
    with pytest.raises(TypeError, match="tools"):
        tokenizer.apply_chat_template(CHAT, chat_template=PLAIN, tools=[len])
    tokenizer.chat_template = {"../evil": "x"}
    with pytest.raises(ValueError, match="file name"):
        tokenizer.save_pretrained(FIXTURES.parent / "never-written")


def test_strftime_now():
    text = SETUPS["bert"][0]().apply_chat_template(CHAT, chat_template='{{- strftime_now("%Y-%m-%d") }}',
                                                   tokenize=False)
    assert len(text) == 10 and len(text.split("-")) == 3


def test_named_templates_chosen_as_transformers(pair):
    for tokenizer in pair:
        tokenizer.chat_template = {"default": PLAIN, "tool_use": "tools:{{ tools | length }}", "short": "S"}
    ours, expected = both(pair, CHAT, tokenize=False)
    assert ours == expected == "systemsystem messageuseruser messageassistantassistant message"
    for kwargs in ({"tools": TOOLS}, {"chat_template": "short"}, {"chat_template": "literal {{ 1 + 1 }}"}):
        ours, expected = both(pair, CHAT, tokenize=False, **kwargs)
        assert ours == expected


@pytest.mark.parametrize("template", [PLAIN, {"default": PLAIN, "secondary": "two"}])
@pytest.mark.parametrize("jinja_files", [True, False])
def test_saved_templates_read_both_ways(pair, tmp_path, template, jinja_files):
    ours, theirs = pair
    ours.chat_template = template
    written = ours.save_pretrained(tmp_path / "ours", save_jinja_files=jinja_files)
    assert any(str(p).endswith("chat_template.jinja") for p in written) == jinja_files
    config = json.loads((tmp_path / "ours" / "tokenizer_config.json").read_text())
    assert ("chat_template" in config) != jinja_files
    assert T.AutoTokenizer.from_pretrained(tmp_path / "ours", use_fast=False).chat_template == template
    theirs.chat_template = template
    theirs.save_pretrained(tmp_path / "theirs", save_jinja_files=jinja_files)
    assert type(ours).from_pretrained(tmp_path / "theirs").chat_template == template
    assert type(ours).from_pretrained(tmp_path / "ours").chat_template == template


def test_jinja_file_wins_over_the_config(tmp_path):
    tokenizer = SETUPS["bert"][0]()
    tokenizer.chat_template = "from the config"
    tokenizer.save_pretrained(tmp_path, save_jinja_files=False)
    (tmp_path / "chat_template.jinja").write_text("from the file")
    assert mb.BertTokenizer.from_pretrained(tmp_path).chat_template == "from the file"
    assert T.BertTokenizer.from_pretrained(tmp_path).chat_template == "from the file"


ASSISTANT_TEMPLATE = ("{% for m in messages %}{% if m.role != 'assistant' %}"
                      "{{ '<|' + m.role + '|> ' + m.content + ' ' }}"
                      "{% else %}{{ '<|assistant|> ' }}{% generation %}{{ m.content + ' [SEP]' }}{% endgeneration %}"
                      "{{ ' ' }}{% endif %}{% endfor %}")


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_assistant_tokens_mask_as_transformers_fast_tokenizers(family):
    """transformers computes the mask from its fast tokenizers' offsets; ours from our offsets."""
    ours = SETUPS[family][0]()
    theirs = T.BertTokenizerFast(VOCAB) if family == "bert" else T.RobertaTokenizerFast(
        str(BPE_DIR / "vocab.json"), str(BPE_DIR / "merges.txt"))
    chats = [CHAT + [{"role": "user", "content": "again"}, {"role": "assistant", "content": "second answer"}],
             CHAT[:2]]
    kwargs = dict(chat_template=ASSISTANT_TEMPLATE, return_dict=True, return_assistant_tokens_mask=True)
    got, expected = ours.apply_chat_template(chats, **kwargs), theirs.apply_chat_template(chats, **kwargs)
    assert got["input_ids"] == expected["input_ids"]
    assert got["assistant_masks"] == expected["assistant_masks"] and any(got["assistant_masks"][0])
    got = ours.apply_chat_template(chats[0], **kwargs)
    assert got["assistant_masks"] == expected["assistant_masks"][0]
    padded = ours.apply_chat_template(chats, padding=True, return_tensors="np", **kwargs)
    assert padded["assistant_masks"].shape == padded["input_ids"].shape


def test_over_length_warning_follows_deprecation_warnings(pair, caplog):
    for tokenizer in pair:
        tokenizer.model_max_length = 4
    text = "a long sentence that is certainly longer than four tokens"
    ours, theirs = pair
    with caplog.at_level(logging.WARNING):
        for _ in range(2):
            ours(text)
        assert sum("longer than the specified maximum" in r.message for r in caplog.records) == 1
        ours.deprecation_warnings = {}
        ours(text)
        assert sum("longer than the specified maximum" in r.message for r in caplog.records) == 2
    theirs(text)
    assert set(ours.deprecation_warnings) == set(theirs.deprecation_warnings)


def test_init_kwargs_hold_every_defaulted_argument(pair):
    """transformers' test_tokenizer_slow_store_full_signature, for our signatures."""
    ours, _ = pair
    for name, parameter in inspect.signature(type(ours).__init__).parameters.items():
        if parameter.default is not inspect.Parameter.empty:
            assert name in ours.init_kwargs, name


def test_batch_encoding_to_device(pair):
    ours, _ = pair
    encoding = ours(["one two", "three"], padding=True, return_tensors="np")
    assert encoding.to("cpu") is encoding
    assert isinstance(encoding["input_ids"], np.ndarray)
    listed = ours("one two")
    assert listed.to("cpu")["input_ids"] == ours("one two")["input_ids"]  # lists stay lists
    with pytest.raises(ValueError, match="device"):
        encoding.to("tpu")


def test_transformers_added_tokens_are_taken(pair):
    """add_tokens / add_special_tokens take transformers' own AddedToken, flags and all."""
    ours, theirs = pair
    for tokenizer in pair:
        tokenizer.add_tokens([T.AddedToken("[ABC]", lstrip=True, rstrip=True), T.AddedToken("new_token")])
        tokenizer.add_special_tokens({"additional_special_tokens": [T.AddedToken("<spec>", lstrip=True)]})
    text = "a [ABC]  b new_token c <spec> d"
    assert ours(text)["input_ids"] == theirs(text)["input_ids"]
    assert ours.decode(ours(text)["input_ids"], skip_special_tokens=True) == \
        theirs.decode(theirs(text)["input_ids"], skip_special_tokens=True)


def test_documents_that_are_not_dicts_are_named():
    from minibertgen.tokenizers.chat_template import _documents

    with pytest.raises(TypeError, match=r"documents: an item is str \('x'\)"):
        _documents([{"title": "a", "text": "b"}, "x"])
    with pytest.raises(TypeError, match=r"an item is NoneType"):
        _documents([None])
