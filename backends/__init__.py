"""TuneDesk backends: everything below the UI (config, hardware, data, runs, events, training).

This package never imports Qt. The ML frameworks (torch, mlx) are imported only inside the
backend subpackages that need them, so light modules (config, events, runs) stay cheap to import.
"""

__version__ = "0.1.0"
