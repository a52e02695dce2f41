"""A served model's configuration: ``REPO/<model>/config.yaml``, parsed and checked.

A model's optional ``REPO/<model>/config.yaml``::

    backend: ort              # any registered backend; default: picked from the file suffix
    device: cpu
    precision: fp32           # fp32 | fp16 | bf16 | int8
    threads: 1                # per instance
    options: {}               # passed to the runtime
    instances: 2              # engine instances behind the batcher
    auto: true                # without threads/instances: probe the layout at load (infercore.layout)
    cores: 4                  # the cores the model is given (default: all this process may use)
    batching:                 # the Batcher's settings; `batching: false` runs each request alone
      max_batch_size: 32
      preferred_batch_sizes: [8, 16]
      max_queue_delay_ms: 2
      quiet_ms: null          # go before the delay once no request arrived for this long
      max_queue_size: 1024
      timeout_ms: null
      pad: false
    version_policy: {latest: 1}     # or: all, or {specific: [1, 3]}
    inputs:                   # overrides: narrow a dynamic shape the model declares
      - {name: x, shape: [-1, 3, 48, 192]}
    outputs: []
    monitoring: {profile: profile.json, sample_rate: 0.1, window: 1000}   # see serve/monitoring.py
    screen: {action: flag, threshold: 3.0}                                  # flag | reject
    signature: {public_key: /etc/infercore/models.pub}   # signed versions only: serve.signatures

A key the config does not know, or a value of the wrong kind, is a ``ValueError`` naming the file
and the key, raised before any model is opened.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..specs import TensorSpec, format_shape
from .monitoring import MonitoringConfig, ScreenConfig
from .signatures import SignatureConfig, no_signature_override
from .tensors import datatype_of, dtype_of

__all__ = [
    "BatchingConfig",
    "ModelConfig",
    "SignatureConfig",
    "TensorOverride",
    "VersionPolicy",
    "apply_overrides",
    "read_config",
]


# -- configuration -------------------------------------------------------------------------------
@dataclass(frozen=True)
class BatchingConfig:
    max_batch_size: int = 32
    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_delay_ms: float = 2.0
    quiet_ms: float | None = None
    max_queue_size: int = 1024
    timeout_ms: float | None = None
    pad: bool = False
    given: frozenset[str] = frozenset()  # the keys the config wrote (the others may be probed)


@dataclass(frozen=True)
class VersionPolicy:
    """Which versions on disk are served: the ``latest`` N, ``all``, or ``specific`` ones."""

    kind: str = "latest"
    versions: tuple[int, ...] = (1,)  # latest: (N,); specific: the versions; all: ()

    def select(self, available: Sequence[int]) -> list[int]:
        ordered = sorted(available)
        if self.kind == "all":
            return ordered
        if self.kind == "latest":
            return ordered[-self.versions[0] :]
        return [v for v in ordered if v in self.versions]

    @classmethod
    def parse(cls, value: Any) -> VersionPolicy:
        if value in (None, "latest"):
            return cls()
        if value == "all" or (isinstance(value, Mapping) and set(value) == {"all"}):
            return cls("all", ())
        if isinstance(value, Mapping) and len(value) == 1:
            ((kind, arg),) = value.items()
            if kind == "latest" and _is_int(arg) and arg >= 1:
                return cls("latest", (int(arg),))
            if (
                kind == "specific"
                and isinstance(arg, list)
                and arg
                and all(_is_int(v) and v >= 0 for v in arg)
            ):
                return cls("specific", tuple(int(v) for v in arg))
        raise ValueError(
            f"version_policy must be 'all', {{latest: N}} (N >= 1) or {{specific: [versions]}}, got {value!r}"
        )


@dataclass(frozen=True)
class TensorOverride:
    name: str
    datatype: str | None = None
    shape: tuple[int | None, ...] | None = None


@dataclass(frozen=True)
class ModelConfig:
    backend: str | None = None
    device: str = "cpu"
    precision: str | None = None
    threads: int | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    instances: int = 1
    auto: bool = True
    cores: int | None = None
    batching: BatchingConfig | None = field(default_factory=BatchingConfig)
    batching_explicit: bool = False
    given: frozenset[str] = frozenset()  # the top-level keys the config wrote
    version_policy: VersionPolicy = field(default_factory=VersionPolicy)
    inputs: tuple[TensorOverride, ...] = ()
    outputs: tuple[TensorOverride, ...] = ()
    monitoring: MonitoringConfig | None = None
    screen: ScreenConfig | None = None
    signature: SignatureConfig | None = None

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any] | None, source: str = "config") -> ModelConfig:
        """Validate a config mapping; unknown keys and wrong types are errors that name the key."""
        raw = dict(raw or {})
        known = {f for f in cls.__dataclass_fields__ if f not in ("batching_explicit", "given")}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(
                f"{source}: unknown key(s) {', '.join(unknown)}; known keys: {', '.join(sorted(known))}"
            )
        kw: dict[str, Any] = {}
        try:
            for key in ("backend", "device", "precision"):
                if raw.get(key) is not None:
                    kw[key] = _typed(raw[key], str, key)
            if raw.get("threads") is not None:
                kw["threads"] = _positive(raw["threads"], "threads")
            if raw.get("options") is not None:
                kw["options"] = dict(_typed(raw["options"], Mapping, "options"))
            if raw.get("instances") is not None:
                kw["instances"] = _positive(raw["instances"], "instances")
            if raw.get("auto") is not None:
                kw["auto"] = _typed(raw["auto"], bool, "auto")
            if raw.get("cores") is not None:
                kw["cores"] = _positive(raw["cores"], "cores")
            if "batching" in raw:
                kw["batching"] = _batching(raw["batching"])
                kw["batching_explicit"] = kw["batching"] is not None
            if "version_policy" in raw:
                kw["version_policy"] = VersionPolicy.parse(raw["version_policy"])
            for key in ("inputs", "outputs"):
                if raw.get(key) is not None:
                    kw[key] = tuple(_override(o, key) for o in _typed(raw[key], list, key))
            if "monitoring" in raw:
                kw["monitoring"] = MonitoringConfig.parse(raw["monitoring"])
            if "screen" in raw:
                kw["screen"] = ScreenConfig.parse(raw["screen"])
            if raw.get("signature") is not None:
                kw["signature"] = SignatureConfig.parse(raw["signature"])
        except ValueError as e:
            raise ValueError(f"{source}: {e}") from None
        return cls(**kw, given=frozenset(k for k, v in raw.items() if v is not None))

    def merged(self, override: Mapping[str, Any], source: str) -> ModelConfig:
        """This config with the keys of ``override`` (a load request's ``config``) replaced."""
        no_signature_override(override, source)
        new = ModelConfig.from_dict(override, source)
        return replace(self, **{k: getattr(new, k) for k in _keys(override)}, given=self.given | new.given)


def _keys(override: Mapping[str, Any]) -> list[str]:
    keys = list(override)
    if "batching" in keys:
        keys.append("batching_explicit")
    return keys


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _typed(value: Any, kind: Any, key: str) -> Any:
    if not isinstance(value, kind):
        raise ValueError(f"{key} must be a {getattr(kind, '__name__', kind)}, got {value!r}")
    return value


def _positive(value: Any, key: str) -> int:
    if not _is_int(value) or value < 1:
        raise ValueError(f"{key} must be a positive int, got {value!r}")
    return int(value)


def _batching(value: Any) -> BatchingConfig | None:
    if value is False or value is None:
        return None
    if value is True:
        return BatchingConfig()
    value = dict(_typed(value, Mapping, "batching"))
    known = set(BatchingConfig.__dataclass_fields__) - {"given"}
    unknown = sorted(set(value) - known)
    if unknown:
        raise ValueError(
            f"batching: unknown key(s) {', '.join(unknown)}; known keys: {', '.join(sorted(known))}"
        )
    kw: dict[str, Any] = {}
    if "max_batch_size" in value:
        if not _is_int(value["max_batch_size"]) or value["max_batch_size"] < 0:
            raise ValueError(f"batching.max_batch_size must be an int >= 0, got {value['max_batch_size']!r}")
        if value["max_batch_size"] == 0:
            return None  # Triton's convention: 0 means no batching
        kw["max_batch_size"] = value["max_batch_size"]
    if "preferred_batch_sizes" in value:
        sizes = _typed(value["preferred_batch_sizes"], list, "batching.preferred_batch_sizes")
        kw["preferred_batch_sizes"] = tuple(_positive(s, "batching.preferred_batch_sizes[]") for s in sizes)
    if "max_queue_size" in value:
        kw["max_queue_size"] = _positive(value["max_queue_size"], "batching.max_queue_size")
    for key in ("max_queue_delay_ms", "quiet_ms", "timeout_ms"):
        if value.get(key) is not None:
            v = value[key]
            if isinstance(v, bool) or not isinstance(v, int | float) or v < 0:
                raise ValueError(f"batching.{key} must be a number >= 0, got {v!r}")
            kw[key] = float(v)
    if "pad" in value:
        kw["pad"] = bool(_typed(value["pad"], bool, "batching.pad"))
    return BatchingConfig(**kw, given=frozenset(k for k, v in value.items() if v is not None))


def _override(raw: Any, key: str) -> TensorOverride:
    raw = _typed(raw, Mapping, f"{key}[]")
    if not isinstance(raw.get("name"), str):
        raise ValueError(f"each of {key} needs a name, got {dict(raw)!r}")
    unknown = sorted(set(raw) - {"name", "datatype", "shape"})
    if unknown:
        raise ValueError(
            f"{key}[{raw['name']!r}]: unknown key(s) {', '.join(unknown)} (known: name, datatype, shape)"
        )
    shape = raw.get("shape")
    if shape is not None:
        if not isinstance(shape, list) or not all(_is_int(d) and d >= -1 for d in shape):
            raise ValueError(
                f"{key}[{raw['name']!r}].shape must be a list of ints (-1: dynamic), got {shape!r}"
            )
        shape = tuple(None if d == -1 else d for d in shape)
    datatype = raw.get("datatype")
    if datatype is not None:
        dtype_of(datatype, raw["name"])
    return TensorOverride(raw["name"], datatype, shape)


def read_config(model_dir: Path, defaults: Mapping[str, Any] | None = None) -> ModelConfig:
    """``model_dir/config.yaml`` (or ``.yml``); ``defaults`` fill the keys it does not set, but
    ``threads`` and ``instances`` only when it sets neither (together they are the engine layout)."""
    path = model_dir / "config.yaml"
    if not path.exists():
        path = model_dir / "config.yml"
    import yaml

    try:
        raw = yaml.safe_load(path.read_text()) if path.exists() else None
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML: {e}") from None
    if raw is not None and not isinstance(raw, Mapping):
        raise ValueError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    given = dict(defaults or {})
    if raw and {"threads", "instances"} & {k for k, v in raw.items() if v is not None}:
        # threads and instances are one layout: a config that sets either keeps the other's default
        given.pop("threads", None)
        given.pop("instances", None)
    return ModelConfig.from_dict({**given, **(raw or {})}, str(path))


def apply_overrides(
    specs: Sequence[TensorSpec], overrides: Sequence[TensorOverride], kind: str
) -> tuple[TensorSpec, ...]:
    """The model's specs narrowed by the config; an override the model contradicts is an error."""
    by_name = {s.name: s for s in specs}
    out = dict(by_name)
    for o in overrides:
        spec = by_name.get(o.name)
        if spec is None:
            raise ValueError(
                f"config {kind} override {o.name!r}: the model has no such {kind[:-1]}; "
                f"it has: {', '.join(by_name)}"
            )
        if o.datatype is not None and o.datatype != datatype_of(spec.dtype):
            raise ValueError(
                f"config {kind} override {o.name!r}: datatype {o.datatype} but the model's is "
                f"{datatype_of(spec.dtype)}"
            )
        if o.shape is not None:
            if len(o.shape) != spec.rank or any(
                d is not None and (m is not None and m != d) for m, d in zip(spec.shape, o.shape, strict=True)
            ):
                raise ValueError(
                    f"config {kind} override {o.name!r}: shape {list(o.shape)} does not fit the "
                    f"model's {format_shape(spec.shape, spec.dim_names)}"
                )
            shape = tuple(m if m is not None else d for m, d in zip(spec.shape, o.shape, strict=True))
            out[o.name] = replace(spec, shape=shape)
    return tuple(out[s.name] for s in specs)
