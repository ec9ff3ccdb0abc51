"""Chat templates for ``chat_template:``: ``auto`` (the template most input models
carry), a name below, or a literal Jinja string. Written here for this project."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from mergestudio.errors import RecipeError

NAMED_TEMPLATES: dict[str, str] = {
    "chatml": (
        "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}"
        "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    ),
    "llama3": (
        "{{ bos_token }}{% for message in messages %}<|start_header_id|>{{ message['role'] }}"
        "<|end_header_id|>\n\n{{ message['content'] | trim }}<|eot_id|>{% endfor %}"
        "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
    ),
    "alpaca": (
        "{% for message in messages %}{% if message['role'] == 'user' %}### Instruction:\n"
        "{{ message['content'] }}\n\n{% elif message['role'] == 'assistant' %}### Response:\n"
        "{{ message['content'] }}{{ eos_token }}\n\n{% else %}{{ message['content'] }}\n\n{% endif %}"
        "{% endfor %}{% if add_generation_prompt %}### Response:\n{% endif %}"
    ),
    "mistral": (
        "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}[INST] "
        "{{ message['content'] }} [/INST]{% else %}{{ message['content'] }}{{ eos_token }}{% endif %}"
        "{% endfor %}"
    ),
    "zephyr": (
        "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}{{ eos_token }}\n"
        "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
    ),
}


def resolve_chat_template(
    choice: str | None, model_templates: Sequence[tuple[str, str | None]]
) -> str | None:
    """The Jinja text for ``choice``; ``model_templates`` is (model, its template) in
    recipe order, base first. Raises RecipeError for an unknown name or an ``auto`` with
    nothing to pick from, or a literal that is not valid Jinja."""
    if choice is None:
        return None
    if choice == "auto":
        found = [t for _, t in model_templates if t]
        if not found:
            raise RecipeError("chat_template: auto found no chat template in any of the models")
        counts = Counter(found)
        return max(found, key=lambda t: counts[t])  # ties: the earliest model's
    if choice in NAMED_TEMPLATES:
        return NAMED_TEMPLATES[choice]
    if "{{" in choice or "{%" in choice:
        _check_jinja(choice)
        return choice
    names = ", ".join(["auto", *NAMED_TEMPLATES])
    raise RecipeError(f"chat_template: unknown template {choice!r}; use one of {names}, or a Jinja string")


def _check_jinja(text: str) -> None:
    import jinja2

    try:
        jinja2.Environment().parse(text)
    except jinja2.TemplateSyntaxError as error:
        raise RecipeError(f"chat_template: invalid Jinja (line {error.lineno}): {error.message}") from None
