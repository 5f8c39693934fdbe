"""Load a manifest and its workflow preset, merge overrides, validate, resolve paths.

Every error names the file, the field and the fix, so the CLI can print it without a traceback.
"""

from __future__ import annotations

import copy
import difflib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import BaseModel, ValidationError

from wsi_pipeline.config.manifest import RunManifest
from wsi_pipeline.config.workflow import WorkflowPreset
from wsi_pipeline.errors import WSIPipelineError

#: The package-data folder of the presets shipped with the package (``wsi_pipeline/workflows``;
#: the repository's top-level ``workflows/`` is a link to it).
PRESETS_FOLDER = "workflows"


def package_presets() -> Path:
    """The folder of the presets installed with the package, found through ``importlib.resources``.

    It is package data, so it is there whichever way the package was installed (a wheel, a
    plain or an editable ``pip install``), unlike a folder beside the package's source.

    Raises
    ------
    WSIPipelineError
        When the package is imported from a zip archive: a preset then has no file path
        to name in messages and ``run.json``.
    """
    folder = resources.files("wsi_pipeline") / PRESETS_FOLDER
    if not isinstance(folder, Path):
        raise WSIPipelineError(
            f"the packaged workflow presets are not files on disk ({folder})",
            where="wsi_pipeline installation",
            fix="install the package unzipped (pip install), or give the workflow as a path to a preset YAML",
        )
    return folder


@dataclass(frozen=True)
class RunConfig:
    """A validated run: the manifest, its preset (overrides applied) and resolved paths."""

    manifest_path: Path
    manifest: RunManifest
    preset_path: Path
    workflow: WorkflowPreset
    output_dir: Path
    store_path: str  # a local folder or an fsspec URL (file://, s3://, memory://...)
    cohort_table: Path | None
    slide_root: Path | None
    scheduler_address: str | None
    instances: Path | None = None  # an instance table of features (cohort.instances)
    h5_dir: Path | None = None  # a folder of .h5 feature files (cohort.h5_dir; labels in cohort_table)

    @property
    def features_given(self) -> bool:
        """Whether the cohort brings its features (instance table or .h5 files): no tile or extract stage."""
        return self.instances is not None or self.h5_dir is not None

    @property
    def seed(self) -> int:
        """The run's seed."""
        return self.manifest.seed

    def resolved(self) -> dict[str, Any]:
        """Return the full resolved configuration as plain data (for ``run.json``)."""
        return {
            "manifest_path": str(self.manifest_path),
            "manifest": self.manifest.model_dump(mode="json"),
            "preset_path": str(self.preset_path),
            "workflow": self.workflow.model_dump(mode="json"),
            "output_dir": str(self.output_dir),
            "store_path": self.store_path,
            "cohort_table": None if self.cohort_table is None else str(self.cohort_table),
            "instances": None if self.instances is None else str(self.instances),
            "h5_dir": None if self.h5_dir is None else str(self.h5_dir),
            "scheduler_address": self.scheduler_address,
        }


def resolve_store(store: str | None, base: Path, output_dir: Path) -> str:
    """The feature store's location: an fsspec URL as given, a local path made absolute.

    URLs (``s3://bucket/store``, ``file:///shared/store``, ``memory://store``) are kept as they
    are: ``Path.resolve`` would turn ``s3://b`` into ``<cwd>/s3:/b``. Relative paths start from
    the manifest's folder; the default is ``<output>/store``.
    """
    if not store:
        return str(output_dir / "store")
    if "://" in store:
        return store
    return str((base / store).resolve())


def read_yaml(path: Path, what: str) -> dict[str, Any]:
    """Read a YAML mapping with an error that names the file.

    Parameters
    ----------
    path
        The YAML file.
    what
        What the file is ("manifest", "workflow preset"), for messages.

    Returns
    -------
    dict
        The parsed mapping.
    """
    if not path.is_file():
        raise WSIPipelineError(
            f"{what} file not found", where=str(path), fix=f"check the path of the {what}"
        )
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = f" (line {mark.line + 1})" if mark is not None else ""
        raise WSIPipelineError(
            f"not valid YAML{line}: {getattr(error, 'problem', error)}",
            where=str(path),
            fix="fix the YAML syntax (indentation, colons, quotes)",
        ) from None
    if not isinstance(data, dict):
        raise WSIPipelineError(
            f"a {what} must be a mapping of keys to values, got {type(data).__name__}",
            where=str(path),
            fix=f"see data_manifests/demo.yaml for the layout of a {what}",
        )
    return data


def deep_merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Return ``base`` with ``overrides`` applied recursively (mappings merge, other values replace)."""
    merged = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation allows (through Optional, unions and Annotated)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    for arg in getattr(annotation, "__args__", ()) or ():
        found += _models_in(arg)
    origin = getattr(annotation, "__origin__", None)
    if origin is not None and not found:
        found += _models_in(origin)
    return found


def _model_at(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """Walk ``loc`` through nested pydantic models; return the model that owns the last key.

    A discriminated union (the task section) puts its tag in the location after the field,
    e.g. ``task.survival.n_bin``: the tag picks the union's model whose ``type`` it is.
    """
    current: Any = model
    parts = list(loc)
    while parts:
        key = parts.pop(0)
        field = getattr(current, "model_fields", {}).get(key) if isinstance(key, str) else None
        if field is None:
            return None
        candidates = _models_in(field.annotation)
        if len(candidates) > 1 and parts:
            tagged = [c for c in candidates if "type" in c.model_fields and parts[0] in get_args(c.model_fields["type"].annotation)]
            if tagged:
                parts.pop(0)
                candidates = tagged
        current = candidates[0] if candidates else None
        if current is None:
            return None
    return current


def _describe(error: dict[str, Any], model: type[BaseModel], prefix: str) -> str:
    loc = tuple(error["loc"])
    field = prefix + ".".join(str(part) for part in loc)
    if error["type"] == "extra_forbidden":
        owner = _model_at(model, loc[:-1])
        allowed = sorted(owner.model_fields) if owner is not None else []
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        hint = f"Did you mean '{close[0]}'? " if close else ""
        return f"field '{field}': unknown key. {hint}Allowed keys here: {', '.join(allowed)}"
    if error["type"] == "missing":
        return f"field '{field}': required but missing"
    value = error.get("input")
    shown = "" if isinstance(value, dict) else f" (got {value!r})"
    return f"field '{field}': {error['msg']}{shown}"


def validate_model(
    model: type[BaseModel], data: dict[str, Any], path: Path, what: str, prefix: str = ""
) -> Any:
    """Validate ``data`` against ``model``, turning pydantic's errors into one clear message."""
    try:
        return model.model_validate(data)
    except ValidationError as error:
        lines = [_describe(e, model, prefix) for e in error.errors()]
        raise WSIPipelineError(
            f"invalid {what}:\n  " + "\n  ".join(lines),
            where=str(path),
            fix=f"correct the field(s) named above in {path.name}",
        ) from None


def find_preset(reference: str, manifest_dir: Path) -> Path:
    """Resolve the manifest's ``workflow`` value to a preset file.

    A value with a ``.yaml``/``.yml`` suffix or a slash is a path (relative to the manifest's
    folder); a bare name is looked up in ``workflows/`` beside the manifest's folder, then in
    the presets shipped inside the package (:func:`package_presets`).
    """
    if reference.endswith((".yaml", ".yml")) or "/" in reference:
        path = (manifest_dir / reference).resolve()
        if not path.is_file():
            raise WSIPipelineError(
                f"workflow preset file not found: {path}",
                where="field 'workflow'",
                fix="give a preset name from workflows/ or an existing YAML path",
            )
        return path
    folders = [manifest_dir.parent / "workflows", manifest_dir / "workflows", package_presets()]
    for folder in folders:
        candidate = folder / f"{reference}.yaml"
        if candidate.is_file():
            return candidate.resolve()
    known = sorted({p.stem for f in folders if f.is_dir() for p in f.glob("*.yaml")})
    raise WSIPipelineError(
        f"no workflow preset named '{reference}'",
        where="field 'workflow'",
        fix=f"use one of: {', '.join(known) or '(none found)'}, or a path to a preset YAML",
    )


def with_absolute_paths(workflow: WorkflowPreset, base: Path) -> WorkflowPreset:
    """Resolve the workflow's relative file paths from the manifest's folder, so workers find them anywhere.

    The tissue model (``tiling.tissue.model.path``), the encoder's checkpoint
    (``features.weights``) and the stain reference (``features.stain_normalisation.target``,
    unless ``default``) are read on the workers, whose working folder is not the client's on a
    cluster; like every other path of a manifest, a relative one starts from the manifest's folder.
    """

    def absolute(path: str) -> str:
        expanded = Path(path).expanduser()
        return str(expanded if expanded.is_absolute() else (base / expanded).resolve())

    tissue = workflow.tiling.tissue
    if tissue.model is not None:
        model = tissue.model.model_copy(update={"path": absolute(tissue.model.path)})
        tiling = workflow.tiling.model_copy(update={"tissue": tissue.model_copy(update={"model": model})})
        workflow = workflow.model_copy(update={"tiling": tiling})
    features = workflow.features
    updates: dict[str, Any] = {}
    if features.weights is not None:
        updates["weights"] = absolute(features.weights)
    stain = features.stain_normalisation
    if stain is not None and stain.target != "default":
        updates["stain_normalisation"] = stain.model_copy(update={"target": absolute(stain.target)})
    if updates:
        workflow = workflow.model_copy(update={"features": features.model_copy(update=updates)})
    return workflow


def load_run_config(
    manifest_path: str | Path,
    *,
    output: str | Path | None = None,
    scheduler: str | None = None,
) -> RunConfig:
    """Load, merge and validate a run manifest and its workflow preset.

    Parameters
    ----------
    manifest_path
        The run manifest (YAML).
    output
        Overrides the manifest's ``output`` (the CLI's ``--output``).
    scheduler
        Overrides the manifest's ``cluster.address`` (the CLI's ``--scheduler``).

    Returns
    -------
    RunConfig
        The validated configuration with absolute paths.

    Raises
    ------
    WSIPipelineError
        On a missing file, invalid YAML, an unknown or invalid field, or a missing cohort table.
    """
    manifest_path = Path(manifest_path).resolve()
    raw = read_yaml(manifest_path, "manifest")
    manifest: RunManifest = validate_model(RunManifest, raw, manifest_path, "manifest")
    base = manifest_path.parent

    preset_path = find_preset(manifest.workflow, base)
    preset_raw = read_yaml(preset_path, "workflow preset")
    merged = deep_merge(preset_raw, manifest.overrides)
    # Only errors from the overrides are the manifest's; the rest belong to the preset file.
    try:
        workflow = WorkflowPreset.model_validate(merged)
    except ValidationError:
        validate_model(WorkflowPreset, preset_raw, preset_path, "workflow preset")
        workflow = validate_model(
            WorkflowPreset, merged, manifest_path, "manifest overrides", prefix="overrides."
        )

    workflow = with_absolute_paths(workflow, base)
    output_dir = Path(output).resolve() if output is not None else (base / manifest.output).resolve()
    store_path = resolve_store(manifest.store, base, output_dir)

    cohort_table = slide_root = None
    if manifest.cohort.table is not None:
        cohort_table = (base / manifest.cohort.table).resolve()
        if not cohort_table.is_file():
            raise WSIPipelineError(
                f"cohort table not found: {cohort_table}",
                where=f"{manifest_path}: field 'cohort.table'",
                fix="point cohort.table at an existing CSV (relative paths start from the manifest's folder)",
            )
        root = manifest.cohort.slide_root
        slide_root = None if manifest.cohort.h5_dir is not None else (base / root).resolve() if root else cohort_table.parent
        if slide_root is not None and not slide_root.is_dir():
            raise WSIPipelineError(
                f"slide folder not found: {slide_root}",
                where=f"{manifest_path}: field 'cohort.slide_root'",
                fix="point cohort.slide_root at the folder holding the slides",
            )

    instances = h5_dir = None
    if manifest.cohort.instances is not None:
        instances = (base / manifest.cohort.instances).resolve()
        if not instances.is_file():
            raise WSIPipelineError(
                f"instance table not found: {instances}",
                where=f"{manifest_path}: field 'cohort.instances'",
                fix="point cohort.instances at an existing CSV or Parquet file (relative paths start from the manifest's folder)",
            )
    if manifest.cohort.h5_dir is not None:
        h5_dir = (base / manifest.cohort.h5_dir).resolve()
        if not h5_dir.is_dir():
            raise WSIPipelineError(
                f"folder of .h5 files not found: {h5_dir}",
                where=f"{manifest_path}: field 'cohort.h5_dir'",
                fix="point cohort.h5_dir at the folder of CLAM/TRIDENT feature files (relative paths start from the manifest's folder)",
            )

    return RunConfig(
        manifest_path=manifest_path,
        manifest=manifest,
        preset_path=preset_path,
        workflow=workflow,
        output_dir=output_dir,
        store_path=store_path,
        cohort_table=cohort_table,
        slide_root=slide_root,
        scheduler_address=scheduler or manifest.cluster.address,
        instances=instances,
        h5_dir=h5_dir,
    )
