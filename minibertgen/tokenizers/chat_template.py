"""Chat templates: ``tokenizer.apply_chat_template(messages)``, as transformers 4.57 has it.

A chat template is a Jinja text that turns a list of messages (``{"role": ..., "content":
...}``) into one prompt string; ``apply_chat_template`` renders it and, by default, encodes
the string without adding special tokens (the template writes them).  Templates are
rendered in Jinja's immutable sandbox, so a template read from a checkpoint cannot call
into Python beyond what the sandbox allows (loading never executes code from a file).
The environment is transformers': blocks trimmed, ``{% break %}`` / ``{% continue %}``,
``tojson`` without HTML escaping, ``raise_exception(msg)``, ``strftime_now(fmt)``, and a
``{% generation %}...{% endgeneration %}`` block that marks the assistant's text (for
``return_assistant_tokens_mask``).

On disk (transformers' layout): ``chat_template.jinja`` holds the template (the "default"
one), ``additional_chat_templates/<name>.jinja`` the other named ones; with
``save_pretrained(save_jinja_files=False)`` they go into tokenizer_config.json instead
(a string, or a list of ``{"name", "template"}``).  The files win over the config.
"""
from __future__ import annotations

import json
import re
from contextlib import contextmanager
from datetime import datetime
from functools import lru_cache
from pathlib import Path

__all__ = ["CHAT_TEMPLATE_FILE", "CHAT_TEMPLATE_DIR", "ChatTemplateMixin", "read_chat_templates",
           "write_chat_templates"]

CHAT_TEMPLATE_FILE = "chat_template.jinja"
CHAT_TEMPLATE_DIR = "additional_chat_templates"
# Appended to the final message for continue_final_message, then cut off with what follows it.
# It ends in a space, so a template that strips the message shows up as a missing space.
_OPEN_END = "\u00a7CONTINUE-HERE\u00a7 "
_SAFE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")


def _jinja():
    try:
        import jinja2
        from jinja2.sandbox import ImmutableSandboxedEnvironment
    except ImportError:
        raise ImportError("apply_chat_template needs jinja2: pip install jinja2") from None
    return jinja2, ImmutableSandboxedEnvironment


@lru_cache(maxsize=32)
def compile_template(text):
    """A Jinja template object for ``text`` (cached: templates are re-rendered often)."""
    jinja2, Sandbox = _jinja()
    from jinja2.ext import Extension

    class GenerationBlock(Extension):
        """``{% generation %}...{% endgeneration %}``: record where the block's text lands."""

        tags = {"generation"}

        def __init__(self, environment):
            super().__init__(environment)
            environment.extend(track_generation=self.track)
            self.spans = self.blocks = None

        def parse(self, parser):
            line = next(parser.stream).lineno
            body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_mark"), [], [], body).set_lineno(line)

        def _mark(self, caller):
            text = caller()
            if self.spans is not None:
                start = len("".join(self.blocks))
                self.spans.append((start, start + len(text)))
            return text

        @contextmanager
        def track(self, blocks, spans):
            self.blocks, self.spans = blocks, spans
            try:
                yield
            finally:
                self.blocks = self.spans = None

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    environment = Sandbox(trim_blocks=True, lstrip_blocks=True,
                          extensions=[GenerationBlock, "jinja2.ext.loopcontrols"])
    environment.filters["tojson"] = tojson
    environment.globals["raise_exception"] = raise_exception
    environment.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return environment.from_string(text)


def render(template_text, chat, variables, continue_final_message=False, track=False):
    """One conversation -> (text, [(start, end)] of its generation blocks when ``track``)."""
    template = compile_template(template_text)
    if hasattr(chat, "messages"):  # a Conversation-like object
        chat = chat.messages
    chat = [dict(message) for message in chat]
    if continue_final_message:
        final = _mark_final_message(chat)
    spans = []
    if track:
        blocks = []
        with template.environment.track_generation(blocks, spans):
            blocks.extend(template.generate(messages=chat, **variables))
        text = "".join(blocks)
    else:
        text = template.render(messages=chat, **variables)
    if continue_final_message:
        text = _cut_after_final_message(text, final)
    return text, spans


def _mark_final_message(chat):
    """Append the open-end marker to the last message's (last) text; return that text."""
    content = chat[-1].get("content")
    if isinstance(content, (list, tuple)):
        blocks = [dict(block) for block in content]
        for block in reversed(blocks):
            if "text" in block:
                final, block["text"] = block["text"], block["text"] + _OPEN_END
                chat[-1]["content"] = blocks
                return final
        raise ValueError("continue_final_message=True, but the final message has no text block to continue")
    if not isinstance(content, str):
        raise ValueError(f"continue_final_message=True: the final message's content is {type(content).__name__}, "
                         "expected text")
    chat[-1]["content"] = content + _OPEN_END
    return content


def _cut_after_final_message(text, final):
    if final.strip() not in text or _OPEN_END.strip() not in text:
        raise ValueError("continue_final_message=True, but the chat template dropped (part of) the final message, "
                         "so the prompt cannot end inside it: check the template and the final message")
    at = text.rindex(_OPEN_END.strip())
    if text[at:at + len(_OPEN_END)] == _OPEN_END:
        return text[:at]
    return text[:at].rstrip()  # the template trimmed the message: drop the spacing it left before the end


class ChatTemplateMixin:
    """apply_chat_template / get_chat_template for PreTrainedTokenizer."""

    chat_template = None  # a template text, or {name: text}

    def _set_chat_template(self, value):
        if isinstance(value, (list, tuple)):  # tokenizer_config.json's form of several templates
            value = {item["name"]: item["template"] for item in value}
        if value is not None and not isinstance(value, (str, dict)):
            raise TypeError(f"chat_template: expected a Jinja template text or a dict name -> text, "
                            f"got {type(value).__name__}")
        self.chat_template = value

    def get_chat_template(self, chat_template=None, tools=None):
        """The template text to use: ``chat_template`` itself, one of the tokenizer's named
        templates ("tool_use" when tools are given, else "default"), or its only template."""
        own = self.chat_template
        if isinstance(own, dict):
            if chat_template is not None and chat_template in own:
                return own[chat_template]
            if chat_template is None:
                name = "tool_use" if tools is not None and "tool_use" in own else "default"
                if name not in own:
                    raise ValueError(f"this tokenizer has several chat templates ({', '.join(sorted(own))}) and "
                                     "none is named 'default': pass chat_template=<name or template text>")
                return own[name]
            return chat_template
        if chat_template is None:
            if own is None:
                raise ValueError("no chat template: tokenizer.chat_template is not set and no chat_template= was "
                                 "passed; set tokenizer.chat_template = '<Jinja template>' or pass one")
            return own
        return chat_template

    def apply_chat_template(self, conversation, tools=None, documents=None, chat_template=None,
                            add_generation_prompt=False, continue_final_message=False, tokenize=True,
                            padding=False, truncation=False, max_length=None, return_tensors=None,
                            return_dict=False, return_assistant_tokens_mask=False, tokenizer_kwargs=None, **kwargs):
        """Render a conversation (or a list of them) with a chat template.

        conversation: a list of ``{"role", "content"}`` dicts, or a list of such lists (a
        batch: the result is then a list).  tools / documents: JSON-schema dicts and
        ``{"title", "text"}`` dicts the template may show.  add_generation_prompt: let the
        template open an assistant turn; continue_final_message: end the prompt inside the
        last message instead, so the model continues it.  Extra keyword arguments reach
        the template as variables (the special tokens, e.g. ``bos_token``, always do).

        Returns the text (tokenize=False), else the ids of the text encoded without added
        special tokens (padding / truncation / max_length / return_tensors as for
        ``__call__``, ``tokenizer_kwargs`` passed on), or with return_dict=True the whole
        BatchEncoding; return_assistant_tokens_mask=True adds ``assistant_masks`` (1 on the
        tokens inside ``{% generation %}`` blocks).
        """
        if return_dict and not tokenize:
            raise ValueError("return_dict=True needs tokenize=True: without tokenizing there is no encoding to return")
        if return_assistant_tokens_mask and not return_dict:
            raise ValueError("return_assistant_tokens_mask=True needs return_dict=True")
        if continue_final_message and add_generation_prompt:
            raise ValueError("continue_final_message=True continues the last message; add_generation_prompt=True "
                             "starts a new assistant message: pass one of them")
        if continue_final_message and return_assistant_tokens_mask:
            raise ValueError("continue_final_message=True cannot be combined with return_assistant_tokens_mask=True")
        template = self.get_chat_template(chat_template, tools)
        batched = isinstance(conversation, (list, tuple)) and len(conversation) > 0 and (
            isinstance(conversation[0], (list, tuple)) or hasattr(conversation[0], "messages"))
        chats = conversation if batched else [conversation]
        variables = {**self.special_tokens_map, **kwargs, "tools": _tool_schemas(tools),
                     "documents": _documents(documents), "add_generation_prompt": add_generation_prompt}
        rendered = [render(template, chat, variables, continue_final_message, return_assistant_tokens_mask)
                    for chat in chats]
        texts = [text for text, _ in rendered]
        if not tokenize:
            return texts if batched else texts[0]
        out = self(texts if batched else texts[0], padding=padding, truncation=truncation, max_length=max_length,
                   add_special_tokens=False, return_tensors=return_tensors, **(tokenizer_kwargs or {}))
        if not return_dict:
            return out["input_ids"]
        if return_assistant_tokens_mask:
            out["assistant_masks"] = self._assistant_masks(texts, [spans for _, spans in rendered], out, batched,
                                                           return_tensors)
        return out

    def _assistant_masks(self, texts, spans, out, batched, return_tensors):
        """1 on every token whose characters fall in a generation block (needs offsets)."""
        if not getattr(self, "_supports_offsets", False):
            raise NotImplementedError(f"return_assistant_tokens_mask=True needs token offsets, which "
                                      f"{type(self).__name__} does not provide (transformers needs a fast tokenizer)")
        rows = out["input_ids"] if batched or return_tensors else [out["input_ids"]]
        masks = []
        for i, text in enumerate(texts):
            ids = [int(t) for t in rows[i]]
            offsets = self._offsets_of(text, len(ids))
            mask = [0] * len(ids)
            for start, end in spans[i]:
                for j, (a, b) in enumerate(offsets):
                    if b > a and a < end and b > start:
                        mask[j] = 1
            masks.append(mask)
        if return_tensors:
            import numpy as np

            from ..backend import tensor_module

            return tensor_module(return_tensors).asarray(np.asarray(masks, dtype=np.int64))
        return masks if batched else masks[0]

    def _offsets_of(self, text, length):
        """Character spans of the tokens of ``text`` encoded without special tokens, padded
        with empty spans to ``length`` (padding tokens)."""
        offsets = self(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        offsets = [tuple(span) for span in offsets][:length]
        pad = [(0, 0)] * (length - len(offsets))
        return pad + offsets if self.padding_side == "left" else offsets + pad


def _tool_schemas(tools):
    if tools is None:
        return None
    for tool in tools:
        if not isinstance(tool, dict):
            raise TypeError(f"tools: expected JSON-schema dicts, got {type(tool).__name__} (minibertgen does not "
                            "build schemas from Python functions; write the schema dict)")
    return list(tools)


def _documents(documents):
    bad = [d for d in documents if not isinstance(d, dict)] if documents is not None else []
    if bad:
        bad = bad[0]
        raise TypeError(f"documents: an item is {type(bad).__name__} ({bad!r:.60}): expected a list of dicts "
                        "with 'title' and 'text' keys")
    return documents


def read_chat_templates(directory, prefix=""):
    """The templates saved next to a tokenizer: a text, {name: text}, or None."""
    directory = Path(directory)
    found = {}
    main = directory / (prefix + CHAT_TEMPLATE_FILE)
    if main.is_file():
        found["default"] = main.read_text(encoding="utf-8")
    extra = directory / (prefix + CHAT_TEMPLATE_DIR)
    if extra.is_dir():
        for path in sorted(extra.glob("*.jinja")):
            found[path.name[:-len(".jinja")]] = path.read_text(encoding="utf-8")
    if not found:
        return None
    return found["default"] if list(found) == ["default"] else found


def write_chat_templates(template, directory, prefix, config, save_jinja_files):
    """Save ``template`` as transformers 4.57 does; updates ``config`` (tokenizer_config.json's
    dict) and returns the paths written."""
    config.pop("chat_template", None)
    if template is None:
        return []
    directory = Path(directory)
    if not save_jinja_files:
        config["chat_template"] = template if isinstance(template, str) else \
            [{"name": name, "template": text} for name, text in template.items()]
        return []
    named = {"default": template} if isinstance(template, str) else template
    for name in named:
        if not isinstance(name, str) or not _SAFE_NAME.fullmatch(name):
            raise ValueError(f"chat template name {name!r}: expected letters, digits, '_', '-' or '.' (not first): "
                             "it becomes a file name")
    written = []
    for name, text in named.items():
        if name == "default":
            path = directory / (prefix + CHAT_TEMPLATE_FILE)
        else:
            (directory / (prefix + CHAT_TEMPLATE_DIR)).mkdir(exist_ok=True)
            path = directory / (prefix + CHAT_TEMPLATE_DIR) / f"{name}.jinja"
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
