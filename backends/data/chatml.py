"""The ChatML template as text (no ML library imported: the app's export step reads it too)."""

# ChatML (OpenAI's chat markup, used by Qwen and SmolLM2). Assistant turns get the tokenizer's EOS
# after <|im_end|> when the two differ, so a model whose vocabulary lacks <|im_end|> still learns
# to emit a real stop token.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' }}"
    "{% if message['role'] == 'assistant' and eos_token and eos_token != '<|im_end|>' %}{{ eos_token }}{% endif %}"
    "{{ '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
