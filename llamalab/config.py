"""Profiles: one YAML per profile in ``configs/``, loaded into typed objects.

Every default lives here or in the YAML, with a comment saying why; notebooks only pick a profile.
An unknown profile, an unknown section or key, or a value of the wrong type is an error naming the
file and the key.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

import yaml

from . import paths


class ConfigError(ValueError):
    """A bad profile: the message names the file and the key."""


@dataclass
class ModelConfig:
    spec: str = "default"
    dtype: str = "auto"  # auto | float32 | bfloat16 | float16
    quantization: str | None = None  # None | "8bit" | "4bit" (CUDA + bitsandbytes only)
    attn_implementation: str | None = None  # None lets transformers choose (sdpa where available)


@dataclass
class GenerationConfig:
    batch_size: int = 8
    max_new_tokens: int = 64


@dataclass
class ProbesConfig:
    models: list[str] = field(default_factory=lambda: ["default"])
    chat: bool = False
    limit: dict[str, int | None] = field(default_factory=dict)
    # The dtype the probes and the before/after study load their models in; None = model.dtype.
    # bf16 rounding moves greedy answers: the same cpu models scored in fp32 and in bf16 differ by
    # up to 0.23 in a "yes" share (README, "The before/after table in fp32 and in bf16").
    dtype: str | None = None


@dataclass
class BenchConfig:
    new_tokens: int = 64
    prompts: int = 8


@dataclass
class Profile:
    name: str
    path: Path
    model: ModelConfig = field(default_factory=ModelConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    probes: ProbesConfig = field(default_factory=ProbesConfig)
    bench: BenchConfig = field(default_factory=BenchConfig)
    # Training sections are kept as validated dicts and turned into TRL/PEFT config objects by
    # llamalab.train, so that loading a profile does not import TRL.
    extra: dict[str, dict[str, Any]] = field(default_factory=dict)
    overrides: dict[str, Any] = field(default_factory=dict)  # {"section.key": value} set with --set

    def stage_dir(self, stage: str) -> Path:
        return paths.stage_dir(self.name, stage)

    def probe_dtype(self, spec: str | None = None) -> str:
        """The dtype to load ``spec`` (default: the profile's model) in for a probe or the study:
        ``probes.dtype`` where set, else ``model.dtype`` for the profile's model and "auto" for another."""
        if self.probes.dtype:
            return self.probes.dtype
        return self.model.dtype if spec in (None, self.model.spec) else "auto"


_SECTIONS = {
    "model": ModelConfig,
    "generation": GenerationConfig,
    "probes": ProbesConfig,
    "bench": BenchConfig,
}
# Sections owned by later stages; their keys are checked against the TRL/PEFT dataclasses there.
_EXTRA_SECTIONS = ("lora", "sft", "reward", "ppo", "rloo", "data", "rl", "heldout")
# llamalab's own keys of the `data` section (how much of data/train/ a stage uses); their values are
# checked by the stage that reads them
DATA_KEYS = ("sft_train", "sft_eval", "pairs_train", "pairs_eval", "execution_pairs", "execution_samples",
             "policy_pairs", "policy_pairs_from", "fixed_reply_pairs", "ppo_train", "ppo_heldout")


def _check_data_key(key: str, where: str) -> None:
    if key not in DATA_KEYS:
        raise ConfigError(f"{where}: data.{key}: unknown key (known: {', '.join(DATA_KEYS)})")

_EXPONENT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+")
_DTYPES = ("auto", "float32", "bfloat16", "float16")
_QUANT = (None, "8bit", "4bit")


def available_profiles() -> list[str]:
    return sorted(p.stem for p in paths.configs_dir().glob("*.yaml"))


def _check_type(value: Any, hint: Any) -> bool:
    origin = getattr(hint, "__origin__", None)
    if hint is Any:
        return True
    if origin is list:
        (inner,) = hint.__args__
        return isinstance(value, list) and all(_check_type(v, inner) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    args = getattr(hint, "__args__", None)
    if args and origin is None:  # X | None (types.UnionType)
        return any(_check_type(value, a) for a in args)
    if args:  # typing.Union
        return any(_check_type(value, a) for a in args)
    if hint is type(None):
        return value is None
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, hint)


def _build_section(cls: type, raw: Any, where: str) -> Any:
    if raw is None:
        return cls()
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(raw).__name__}")
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key, value in raw.items():
        if key not in names:
            raise ConfigError(f"{where}.{key}: unknown key (known: {', '.join(sorted(names))})")
        if not _check_type(value, hints[key]):
            raise ConfigError(f"{where}.{key}: {value!r} is not of type {hints[key]}")
    return cls(**raw)


def load_profile(name_or_path: str | Path | None = None) -> Profile:
    """Load ``configs/<name>.yaml`` (or a YAML path). ``None`` reads ``LLAMALAB_PROFILE`` (default cpu).

    ``LLAMALAB_MODEL`` overrides ``model.spec`` (point every notebook at other weights).
    """
    if name_or_path is None:
        name_or_path = os.environ.get("LLAMALAB_PROFILE", "cpu")
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml"):
        path = p
    else:
        path = paths.configs_dir() / f"{name_or_path}.yaml"
        if not path.is_file():
            raise ConfigError(
                f"unknown profile {str(name_or_path)!r}: no {path} (available: {', '.join(available_profiles())})"
            )
    if not path.is_file():
        raise ConfigError(f"{path}: profile file not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    kwargs: dict[str, Any] = {}
    extra: dict[str, dict[str, Any]] = {}
    for key, value in raw.items():
        if key in _SECTIONS:
            kwargs[key] = _build_section(_SECTIONS[key], value, f"{path}: {key}")
        elif key in _EXTRA_SECTIONS:
            if not isinstance(value, dict):
                raise ConfigError(f"{path}: {key}: expected a mapping")
            if key == "data":
                for k in value:
                    _check_data_key(k, str(path))
            extra[key] = value
        else:
            known = sorted([*_SECTIONS, *_EXTRA_SECTIONS])
            raise ConfigError(f"{path}: {key}: unknown section (known: {', '.join(known)})")
    prof = Profile(name=path.stem, path=path, extra=extra, **kwargs)
    _check_profile(prof, str(path))
    override = os.environ.get("LLAMALAB_MODEL")
    if override:
        old = prof.model.spec
        prof.model.spec = override
        prof.probes.models = [override if m == old else m for m in prof.probes.models]
    return prof


def _check_profile(prof: Profile, where: str) -> None:
    model = prof.model
    if model.dtype not in _DTYPES:
        raise ConfigError(f"{where}: model.dtype: {model.dtype!r} is not one of {list(_DTYPES)}")
    if prof.probes.dtype not in (None, *_DTYPES):
        raise ConfigError(f"{where}: probes.dtype: {prof.probes.dtype!r} is not null or one of {list(_DTYPES)}")
    if model.quantization not in _QUANT:
        raise ConfigError(f"{where}: model.quantization: {model.quantization!r} is not one of {list(_QUANT)}")


def apply_overrides(profile: Profile, items: list[str] | None) -> Profile:
    """A copy of ``profile`` with ``section.key=value`` settings changed (``--set`` on the command line).

    The value is read as YAML (``64``, ``5e-4``, ``null``, ``[sql, joke]``). Typed sections
    (model, generation, probes, bench) are checked here; the training sections' keys are checked
    against the TRL/PEFT dataclasses when the stage starts, and those errors name the ``--set``.
    """
    if not items:
        return profile
    typed = {name: dataclasses.asdict(getattr(profile, name)) for name in _SECTIONS}
    extra = {name: dict(values) for name, values in profile.extra.items()}
    done: dict[str, Any] = {}
    for item in items:
        where = f"--set {item}"
        name, sep, text = item.partition("=")
        section, dot, key = name.strip().partition(".")
        if not sep or not dot or not section or not key:
            raise ConfigError(f"{where}: expected section.key=value, e.g. rloo.max_steps=60")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{where}: the value is not valid YAML: {exc}") from None
        if isinstance(value, str) and _EXPONENT.fullmatch(value):
            value = float(value)  # YAML 1.1 reads 1e-4 (no dot) as a string
        if section in _SECTIONS:
            typed[section][key] = value
            _build_section(_SECTIONS[section], {key: value}, f"--set {section}")
        elif section in _EXTRA_SECTIONS:
            if section == "data":
                _check_data_key(key, where)
            extra.setdefault(section, {})[key] = value
        else:
            known = sorted([*_SECTIONS, *_EXTRA_SECTIONS])
            raise ConfigError(f"{where}: unknown section {section!r} (known: {', '.join(known)})")
        done[f"{section}.{key}"] = value
    out = dataclasses.replace(profile, extra=extra, overrides={**profile.overrides, **done},
                              **{name: _SECTIONS[name](**typed[name]) for name in _SECTIONS})
    _check_profile(out, "--set")
    return out
