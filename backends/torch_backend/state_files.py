"""The PyTorch engine's files: a checkpoint's adapter, optimizer, loss-scaler and torch RNG state,
restored exactly, and the final adapter in peft's format. A mixin of
``backends.torch_backend.engine.TorchEngine``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from backends.errors import UserInputError


class StateFiles:
    """Checkpoint and adapter files of ``TorchEngine``."""

    # --- state -----------------------------------------------------------------------------
    def gather_state(self) -> None:
        """Every process, before rank 0 saves (FSDP only: the whole adapter and optimizer state
        are gathered from the shards, ``backends.torch_backend.fsdp.gather``)."""
        if self._fsdp:
            from backends.torch_backend import fsdp

            self._gathered = fsdp.gather(self._forward, self.model, self.optimizer)

    def _save_adapter_files(self, folder: Path) -> None:
        if self._fsdp:
            assert self._gathered is not None, "gather_state() first"
            self.model.save_pretrained(folder, state_dict=self._gathered["weights"])
        else:
            self.model.save_pretrained(folder)

    def save_state(self, folder: Path) -> None:
        """Write the adapter (peft format, loadable as is), ``optimizer.pt``, ``rng_torch.pt``
        (CPU and CUDA/MPS generators) and, with fp16, ``scaler.pt`` into ``folder``."""
        assert self.model is not None and self.optimizer is not None
        folder = Path(folder)
        self._save_adapter_files(folder)
        optimizer = self._gathered["optimizer"] if self._fsdp else self.optimizer.state_dict()
        torch.save(optimizer, folder / "optimizer.pt")
        rng: dict[str, Any] = {"cpu": torch.get_rng_state()}
        if self.device == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state_all()
        elif self.device == "mps":
            rng["mps"] = torch.mps.get_rng_state()
        torch.save(rng, folder / "rng_torch.pt")
        if self.scaler is not None:
            torch.save(self.scaler.state_dict(), folder / "scaler.pt")

    def load_state(self, folder: Path) -> None:
        """Restore what ``save_state`` wrote. Raises UserInputError for a checkpoint that does not
        fit this model and LoRA config."""
        assert self.model is not None and self.optimizer is not None
        folder = Path(folder)
        if self._fsdp:
            self._load_sharded(folder)
        else:
            self._load_whole(folder)
        rng = torch.load(folder / "rng_torch.pt", weights_only=True)
        torch.set_rng_state(rng["cpu"])
        if "cuda" in rng and self.device == "cuda":
            torch.cuda.set_rng_state_all(rng["cuda"])
        if "mps" in rng and self.device == "mps":
            torch.mps.set_rng_state(rng["mps"])
        if self.scaler is not None and (folder / "scaler.pt").is_file():
            self.scaler.load_state_dict(torch.load(folder / "scaler.pt", weights_only=True))

    def _load_sharded(self, folder: Path) -> None:
        """FSDP: each process takes its shards of the checkpoint's adapter and optimizer state."""
        from safetensors.torch import load_file

        from backends.torch_backend import fsdp

        saved = load_file(folder / "adapter_model.safetensors")
        names = [n for n, p in self.model.named_parameters() if p.requires_grad]
        missing = [n for n in names if n.replace(".default.", ".") not in saved]
        if missing:
            raise UserInputError(f"checkpoint lacks adapter weights {missing[:3]}", file=folder)
        weights = {f"model.{n}": saved[n.replace(".default.", ".")] for n in names}
        optim = torch.load(folder / "optimizer.pt", map_location="cpu", weights_only=True)
        fsdp.load(self._forward, self.optimizer, weights, optim)

    def _load_whole(self, folder: Path) -> None:
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        weights = load_file(folder / "adapter_model.safetensors", device=self.device)
        result = set_peft_model_state_dict(self.model, weights)
        unexpected = getattr(result, "unexpected_keys", None) or []
        if unexpected:
            raise UserInputError(
                f"checkpoint does not fit this model/LoRA config (unexpected keys {unexpected[:3]})",
                file=folder,
            )
        state = torch.load(folder / "optimizer.pt", map_location=self.device, weights_only=True)
        self.optimizer.load_state_dict(state)

    def rng_state(self) -> dict[str, list[int]]:
        """This process's torch RNG states as lists of bytes (JSON-able; a checkpoint's
        ``rank-<R>.json`` on several processes): the CPU generator and the current CUDA one."""
        rng = {"cpu": torch.get_rng_state().tolist()}
        if self.device == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state().tolist()
        return rng

    def set_rng_state(self, state: dict[str, list[int]]) -> None:
        """Restore what ``rng_state`` returned."""
        torch.set_rng_state(torch.tensor(state["cpu"], dtype=torch.uint8))
        if "cuda" in state and self.device == "cuda":
            torch.cuda.set_rng_state(torch.tensor(state["cuda"], dtype=torch.uint8))

    def save_adapter(self, folder: Path) -> None:
        """The final adapter in peft format: ``adapter_config.json`` + ``adapter_model.safetensors``
        (loads with ``peft.PeftModel.from_pretrained(base, folder)``)."""
        assert self.model is not None
        self._save_adapter_files(Path(folder))
