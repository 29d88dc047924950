"""``tunedesk export RUN_DIR --format merged|gguf|ollama|mlx``: the tuned model for other tools.

- ``source``: what an export starts from (adapter, base model, chat template, system prompt) and
  every check before writing (``plan_export``; no ML library imported, the app uses it for sizes);
- ``template``: the run's chat template seen from outside (end-of-turn tokens, Ollama TEMPLATE);
- ``merged``: base + adapter merged in fp32, streamed into sharded safetensors;
- ``gguf``: llama.cpp's converter and quantiser on the merged model;
- ``ollama``: the GGUF and a Modelfile; ``mlx``: mlx-lm's fuse;
- ``run``: the job (``export_model``) and the CLI (``cli_export_model``), events and atomic output.
"""
