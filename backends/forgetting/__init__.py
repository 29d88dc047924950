"""The forgetting check: how far tuning moved the model from its base on general prompts.

``probes`` (the probe set, text sample and sizes), ``render`` (probes rendered as chat does),
``score`` (drift score and verdict), ``check`` (inputs and the run-folder record), ``torch_check``
(the PyTorch computation), ``hook`` (at eval steps and the end of training), ``job`` (the
``tunedesk forgetting`` command). Only ``torch_check`` and ``job`` import ML libraries.
"""
