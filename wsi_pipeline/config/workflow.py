"""The workflow preset: *what* a challenge does (tiling, encoder, model, task, scoring)."""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from wsi_pipeline.config.submission import SubmissionConfig
from wsi_pipeline.errors import WSIPipelineError
from wsi_pipeline.mil.registry import closest, get_aggregator_spec, resolve_params
from wsi_pipeline.mil.tasks.settings import CLASS_TASKS, accepted_settings, task_config

if TYPE_CHECKING:  # the features layer imports torch; the config must load without it
    from wsi_pipeline.features.stain_step import StainSettings


class StrictModel(BaseModel):
    """Base for every configuration model: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


_MAGNIFICATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*[xX]\s*$")


def parse_mpp(value: float | str) -> float:
    """Return µm/px from a number or a magnification alias.

    Parameters
    ----------
    value
        µm/px as a number (``0.5``) or a magnification string (``"20x"``), where, by the
        usual convention of scanners with 10x objectives at 1 µm/px, ``20x`` is 0.5 µm/px.

    Returns
    -------
    float
        The resolution in µm per pixel.
    """
    if isinstance(value, str):
        match = _MAGNIFICATION.match(value)
        if match:
            return 10.0 / float(match.group(1))
        try:
            value = float(value)
        except ValueError:
            raise ValueError(
                f"{value!r} is neither µm/px (e.g. 0.5) nor a magnification (e.g. '20x')"
            ) from None
    mpp = float(value)
    if not 0.01 <= mpp <= 100:
        raise ValueError(f"{mpp} µm/px is outside the plausible range 0.01–100")
    return mpp


class TissueModelConfig(StrictModel):
    """A torch segmentation model (TorchScript file) run on a thumbnail at its own µm/px."""

    path: str = Field(description="TorchScript file (torch.jit.save); relative paths start from the manifest's folder")
    mpp: float = Field(gt=0, description="µm/px of the thumbnail the model expects")
    threshold: float = Field(0.5, gt=0, lt=1, description="tissue probability above which a pixel is tissue")
    tissue_channel: int = Field(
        1, ge=0, description="output channel holding tissue when the model returns 2+ channels (softmax); one channel is read through a sigmoid"
    )
    mean: tuple[float, float, float] = Field((0.0, 0.0, 0.0), description="per-channel mean subtracted from RGB in [0, 1]")
    std: tuple[float, float, float] = Field((1.0, 1.0, 1.0), description="per-channel std dividing RGB in [0, 1]")


class TissueConfig(StrictModel):
    """Tissue segmentation at thumbnail scale."""

    method: str = Field(
        "auto",
        description="a registered tissue method: 'auto' (brightfield or fluorescence, pen and border removal), "
        "'otsu_saturation' (plain Otsu on saturation), 'model' (a torch model file)",
    )
    thumbnail_mpp: float = Field(
        8.0, gt=0, description="coarsest µm/px of the thumbnail the mask is computed on (finer for small images)"
    )
    max_thumbnail_megapixels: float = Field(
        4.0,
        gt=0,
        description="a slide whose thumbnail at thumbnail_mpp would be larger is segmented coarser, which bounds "
        "the memory of segmentation: 4 Mpx keeps 8 µm/px up to ~16 x 16 mm and 15 µm/px for a 37 x 25 mm slide",
    )
    min_object_um2: float = Field(20000.0, ge=0, description="tissue pieces smaller than this are dropped")
    max_hole_um2: float = Field(20000.0, ge=0, description="holes smaller than this are filled")
    remove_pen: bool = Field(True, description="exclude blue, green and black pen ink from tissue")
    model: TissueModelConfig | None = Field(None, description="the segmentation model, for method 'model'")

    @model_validator(mode="after")
    def _model_given_for_model_method(self) -> TissueConfig:
        if self.method == "model" and self.model is None:
            raise ValueError("method 'model' needs a 'model' section with at least 'path' and 'mpp'")
        return self


class TileQCConfig(StrictModel):
    """Per-tile quality thresholds: tiles failing one are dropped and counted by reason."""

    min_tissue: float = Field(
        0.2, ge=0, le=1, description="minimum tissue fraction of a tile (outside the slide counts as glass)"
    )
    max_pen: float = Field(0.1, ge=0, le=1, description="maximum fraction of a tile covered by pen ink")
    min_blur: float | None = Field(
        None,
        ge=0,
        description="drop tiles whose blur score (variance of the Laplacian on tissue, grey levels 0-255) is below "
        "this; null keeps them (the score is stored either way)",
    )
    blur_flag: float = Field(
        50.0, ge=0, description="a tile scoring below this is counted as blurred in the QC table, dropped or not"
    )


class TilingConfig(StrictModel):
    """The tile grid at a physical resolution."""

    mpp: float = Field(0.5, description="target µm/px; '20x' = 0.5, '10x' = 1.0")
    mpp_tolerance: float = Field(
        0.02,
        ge=0,
        lt=0.5,
        description="a pyramid level within this fraction of the target µm/px is read as is, without resampling",
    )
    tile_px: int = Field(256, ge=16, le=4096)
    overlap_px: int = Field(0, ge=0)
    tissue: TissueConfig = TissueConfig()
    qc: TileQCConfig = TileQCConfig()

    @field_validator("mpp", mode="before")
    @classmethod
    def _parse_mpp(cls, value: float | str) -> float:
        return parse_mpp(value)

    @field_validator("overlap_px")
    @classmethod
    def _overlap_below_tile(cls, value: int, info) -> int:
        tile_px = info.data.get("tile_px")
        if tile_px is not None and value >= tile_px:
            raise ValueError(f"overlap_px ({value}) must be smaller than tile_px ({tile_px})")
        return value


class StainNormalisationConfig(StrictModel):
    """Stain normalisation before an encoder's own preprocessing; it changes the encoder's store key."""

    method: Literal["macenko", "reinhard"]
    target: str = Field(
        "default",
        description="'default' (Macenko's published H&E reference; Reinhard has none) or the path of a reference image, "
        "or of a folder of them, whose colours every tile takes",
    )
    source: Literal["tile", "slide"] = Field(
        "tile", description="estimate each tile's stains ('tile'), or each slide's once from a sample of its tiles ('slide')"
    )
    slide_sample_tiles: int = Field(64, ge=1, description="tiles sampled across the slide with source 'slide'")

    def settings(self) -> StainSettings:
        """The hashable settings the encoder is built and keyed with."""
        from wsi_pipeline.features.stain_step import StainSettings

        return StainSettings(self.method, self.target, self.source, self.slide_sample_tiles)


class FeaturesConfig(StrictModel):
    """Which encoder embeds the tiles, how tiles are read, and how inference runs."""

    encoder: str = "demo-resnet18-random"
    weights: str | None = Field(None, description="local weights file; default: the encoder's documented location")
    allow_download: bool = Field(
        False,
        description="fetch missing weights from the encoder's Hugging Face repository (needs network access and, for gated "
        "models, a token); by default weights are only ever read from a local file or an existing Hugging Face cache",
    )
    batch_size: int | Literal["auto"] = Field(
        64, description="tiles per forward pass; 'auto' picks the largest power of two up to 1024 that fits in GPU memory (64 on the CPU)"
    )
    device: str = Field("auto", description="'auto', 'cpu', 'cuda' or 'cuda:N'")
    stain_normalisation: StainNormalisationConfig | None = Field(
        None, description="optional Macenko or Reinhard stain normalisation on the device before the encoder's preprocessing"
    )
    precision: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="autocast dtype of the forward pass: 'auto' is bfloat16 on CUDA and float32 on the CPU"
    )
    compile: bool = Field(False, description="torch.compile the encoder (pays a compile once per worker; worth it for long GPU runs)")
    reader: Literal["auto", "openslide"] = Field(
        "auto",
        description="'auto' reads the compressed JPEG tiles of TIFF/SVS slides directly and decodes them in batches, after "
        "checking their pixels against OpenSlide's on the slide's first tiles (falling back to OpenSlide otherwise); "
        "'openslide' always reads through OpenSlide",
    )
    read_workers: int | None = Field(
        None, ge=1, description="reader threads per extraction task; default: the worker's threads, at least 2"
    )
    jpeg_scaled_decode: bool = Field(
        True,
        description="decode JPEG tiles at 1/2, 1/4 or 1/8 scale in the DCT domain when a tile is shrunk that much "
        "(a 0.5 µm/px tile from a 0.25 µm/px level); false decodes at full size and box-filters",
    )
    jpeg_decoder: Literal["auto", "cpu", "gpu"] = Field(
        "auto",
        description="where raw JPEG tiles are decoded: 'cpu' (libjpeg-turbo threads), 'gpu' (nvImageCodec or nvJPEG; "
        "needs the 'gpu' extra and CUDA), 'auto' (the GPU when the encoder runs on one and a GPU decoder is installed)",
    )

    @property
    def stain(self) -> StainSettings | None:
        """Stain settings for the encoder (``None``: no stain normalisation)."""
        return None if self.stain_normalisation is None else self.stain_normalisation.settings()

    @field_validator("batch_size")
    @classmethod
    def _positive_batch(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 1:
            raise ValueError(f"batch_size must be at least 1 or 'auto', got {value}")
        return value


def _registry_check(check: Callable[..., Any], *args: Any) -> Any:
    """Run a registry check inside a validator: its user error becomes the ValueError pydantic reports."""
    try:
        return check(*args)
    except WSIPipelineError as error:
        raise ValueError(error.what) from None


#: The ``model`` settings ``model.grid`` may vary, and how many combinations it may have.
GRID_SETTINGS = ("lr", "weight_decay", "hidden_dim", "dropout", "max_instances")
MAX_GRID_POINTS = 16


class ModelConfig(StrictModel):
    """MIL aggregators trained and compared, their settings, and how they train.

    Aggregator names and settings are checked here, against the aggregator registry, when the
    workflow is loaded; training takes them as they are (``mil.train.TrainConfig.from_model``).
    """

    aggregators: list[str] = Field(
        ["abmil", "meanpool"], description="registered aggregators to train and compare (see wsi_pipeline.mil.registry)"
    )
    max_epochs: int = Field(50, ge=1)
    patience: int = Field(8, ge=1)
    lr: float = Field(2e-4, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    hidden_dim: int | None = Field(
        None, ge=1, description="hidden size of every listed aggregator that has a hidden_dim setting; null: each one's default"
    )
    dropout: float | None = Field(
        None, ge=0, lt=1, description="dropout of every listed aggregator that has a dropout setting; null: each one's default"
    )
    max_instances: int | None = Field(512, ge=1)
    device: str = Field(
        "auto",
        description="where aggregators train: 'auto' (CUDA when the worker has a GPU, else the CPU), 'cpu', 'cuda' or "
        "'cuda:N' (a GPU worker of the local cluster sees only its own GPU, as 'cuda')",
    )
    min_tissue: float | None = Field(
        None, ge=0, le=1, description="train on tiles whose tissue_fraction is at least this (null: no filter at training)"
    )
    max_pen: float | None = Field(None, ge=0, le=1, description="train on tiles whose pen_fraction is at most this")
    min_blur: float | None = Field(None, ge=0, description="train on tiles whose blur score is at least this (sharper)")
    bags: Literal["patient-early", "patient-late", "slide"] = Field(
        "patient-early",
        description="patient-early: a patient's slides form one bag; patient-late: each slide is a bag and the patient's "
        "prediction is the mean of their slides'; slide: each slide is a bag with its patient's target, predicted and "
        "scored per slide (predictions.csv gains slide_id; bootstrap CIs resample patients). Folds are patient-level "
        "in every mode",
    )
    standardise: bool = Field(
        True,
        description="standardise instance features per feature with the mean and std of each fold's fit patients' "
        "instances (applied to fit, validation and test bags); false: train on the features as stored",
    )
    lr_schedule: Literal["cosine", "constant"] = Field(
        "cosine",
        description="cosine: linear warm-up over warmup_epochs, then a half cosine to 0 at max_epochs (per optimiser step); "
        "constant: lr throughout",
    )
    warmup_epochs: int = Field(0, ge=0, description="epochs of linear learning-rate warm-up (cosine schedule only)")
    sampling: Literal["shuffle", "balanced"] = Field(
        "shuffle",
        description="shuffle: every fit bag once per epoch; balanced: draws with replacement, each class equally often "
        "(classification tasks; set the task's balanced: false, which weights the loss instead)",
    )
    grad_accumulation: int = Field(1, ge=1, description="batches whose gradients make one optimiser step")
    amp: bool = Field(True, description="bfloat16 autocast of training on a CUDA device (ignored on the CPU); predictions stay float32")
    bag_memory_gb: float | None = Field(
        None,
        gt=0,
        description="memory a training worker may hold the run's bags in (read once per run); bags that do not fit are "
        "streamed from their source step by step; null: half the worker's memory limit",
    )
    batch_bags: int | None = Field(
        None,
        ge=1,
        description="bags whose outputs are stacked into one loss and optimiser step; null: 16 for a loss that compares "
        "bags with each other (survival's cox), else 1 (one bag per step)",
    )
    aggregator_params: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="settings of individual aggregators, by name, e.g. {clam-sb: {k_sample: 16, dropout: 0.1}}; "
        "they override hidden_dim and dropout above",
    )
    grid: dict[str, list[Any]] | None = Field(
        None,
        description="optional nested cross-validation: training setting -> values to try, e.g. {lr: [1e-4, 3e-4], "
        f"dropout: [0.1, 0.25]}} (settings: {', '.join(GRID_SETTINGS)}; at most {MAX_GRID_POINTS} combinations); each "
        "outer fold picks the combination with the lowest mean loss over validation.inner_folds inner folds of its own "
        "training patients, then trains it on the fold; null: train with the settings above",
    )

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        # Checked here, not on the worker: a typo would otherwise fail every fold after the
        # whole cohort was tiled and embedded.
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", value):
            raise ValueError("device must be 'auto', 'cpu', 'cuda' or 'cuda:N' (N a GPU index)")
        return value

    @field_validator("aggregators")
    @classmethod
    def _registered_aggregators(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("name at least one aggregator, e.g. [abmil, meanpool]")
        repeated = sorted({name for name in value if value.count(name) > 1})
        if repeated:
            raise ValueError(f"aggregator(s) listed more than once: {', '.join(repeated)}")
        for name in value:
            _registry_check(get_aggregator_spec, name)
        return value

    @field_validator("aggregator_params")
    @classmethod
    def _registered_settings(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        # Each entry's own settings, converted to their types (an int given for a float).
        checked = {}
        for name, params in value.items():
            resolved = _registry_check(resolve_params, name, params)
            checked[name] = {key: resolved[key] for key in params}
        return checked

    @model_validator(mode="after")
    def _settings_of_listed_aggregators(self) -> ModelConfig:
        unlisted = sorted(set(self.aggregator_params) - set(self.aggregators))
        if unlisted:
            raise ValueError(
                f"aggregator_params sets {', '.join(unlisted)}, not in aggregators [{', '.join(self.aggregators)}]; "
                "add it to aggregators or remove its settings"
            )
        for name in self.aggregators:  # hidden_dim/dropout with each one's own settings
            _registry_check(resolve_params, name, self.aggregator_settings(name))
        return self

    @field_validator("grid")
    @classmethod
    def _grid_of_known_settings(cls, value: dict[str, list[Any]] | None) -> dict[str, list[Any]] | None:
        if value is None:
            return None
        checked: dict[str, list[Any]] = {}
        for key, values in value.items():
            if key not in GRID_SETTINGS:
                close = "lr" if str(key).lower().replace("-", "_") == "learning_rate" else closest(key, list(GRID_SETTINGS))
                hint = f"did you mean '{close}'? " if close else ""
                raise ValueError(f"grid: {key!r} is not a setting the grid can vary; {hint}it varies {', '.join(GRID_SETTINGS)}")
            if not values:
                raise ValueError(f"grid: {key} lists no value; give at least one, or remove it")
            # Each value is checked and converted as the plain field of that name is (lr: '1e-3' -> 0.001).
            field = cls.model_fields[key]
            adapter = TypeAdapter(Annotated[field.annotation, *field.metadata])
            converted = []
            for item in values:
                try:
                    converted.append(adapter.validate_python(item))
                except ValidationError as error:
                    raise ValueError(f"grid: {key} value {item!r}: {error.errors()[0]['msg']}") from None
            if len(set(map(repr, converted))) != len(converted):
                raise ValueError(f"grid: {key} lists a value twice: {values!r}")
            checked[key] = converted
        if not checked:
            raise ValueError("grid is empty; give settings to vary, e.g. {lr: [1e-4, 3e-4]}, or remove it")
        n_points = math.prod(len(values) for values in checked.values())
        if n_points > MAX_GRID_POINTS:
            sizes = " x ".join(f"{len(values)} {key}" for key, values in checked.items())
            raise ValueError(
                f"grid has {n_points} combinations ({sizes}); at most {MAX_GRID_POINTS}, since each is trained on every "
                "inner fold of every outer fold: vary fewer settings or fewer values"
            )
        return checked

    @model_validator(mode="after")
    def _grid_fits_the_aggregators(self) -> ModelConfig:
        for key in ("hidden_dim", "dropout"):
            if key not in (self.grid or {}):
                continue
            overridden = sorted(name for name, params in self.aggregator_params.items() if key in params)
            if overridden:
                raise ValueError(
                    f"grid varies {key} but aggregator_params sets {key} for {', '.join(overridden)}, which overrides it "
                    "(the grid would change nothing there); remove one of the two"
                )
        for point in self.grid_points():  # every combination builds every aggregator
            for name in self.aggregators:
                _registry_check(resolve_params, name, self.aggregator_settings(name, point))
        return self

    def grid_points(self) -> list[dict[str, Any]]:
        """The grid's combinations, in grid order (the last setting varies fastest); none without a grid."""
        if not self.grid:
            return []
        keys = list(self.grid)
        return [dict(zip(keys, values)) for values in itertools.product(*(self.grid[key] for key in keys))]

    def tile_filters(self) -> tuple[tuple[str, str, float], ...]:
        """The tile QC filters applied when bags are read: (tiling column, '>=' or '<=', threshold)."""
        filters = (("tissue_fraction", ">=", self.min_tissue), ("pen_fraction", "<=", self.max_pen), ("blur", ">=", self.min_blur))
        return tuple((column, op, float(value)) for column, op, value in filters if value is not None)

    def aggregator_settings(self, name: str, point: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The settings this workflow gives aggregator ``name``, beyond the registry's defaults.

        ``hidden_dim`` and ``dropout`` when set and the aggregator has them, overridden by its
        entry in ``aggregator_params``. ``point``: a grid combination (:meth:`grid_points`),
        whose ``hidden_dim``/``dropout`` replace the section's own.
        """
        accepted = get_aggregator_spec(name).params
        shared = {key: (point or {}).get(key, getattr(self, key)) for key in ("hidden_dim", "dropout")}
        settings = {key: value for key, value in shared.items() if key in accepted and value is not None}
        settings.update(self.aggregator_params.get(name, {}))
        return settings


class _TaskSection(StrictModel):
    """Base of the ``task`` section of each task type.

    The fields name and type each setting; the values are checked once, by the task type's
    settings dataclass (:mod:`wsi_pipeline.mil.tasks.settings`), when the workflow is loaded.
    """

    @model_validator(mode="after")
    def _checked_by_the_task_type(self) -> _TaskSection:
        _registry_check(task_config, self.model_dump())
        return self


class BinaryTaskConfig(_TaskSection):
    """Binary classification: one logit, class-weighted binary cross-entropy; AUC, accuracy, balanced accuracy."""

    type: Literal["binary"] = "binary"
    label_column: str = Field("label", description="cohort column with the label, 0 or 1")
    positive_name: str = Field("positive", description="what label 1 is called in reports")
    negative_name: str = Field("negative", description="what label 0 is called in reports")
    balanced: bool = Field(True, description="weight positives by n_negative / n_positive of each fold's fit patients")


class MulticlassTaskConfig(_TaskSection):
    """Multiclass classification: one logit per class, inverse-frequency weighted cross-entropy."""

    type: Literal["multiclass"]
    label_column: str = Field("label", description="cohort column with each patient's class (text or integers)")
    classes: list[str | int] = Field(
        default_factory=list, description="the classes (sorted; output k is classes[k]); empty: every class of the cohort"
    )
    balanced: bool = Field(True, description="inverse-frequency class weights from each fold's fit patients")


class RegressionTaskConfig(_TaskSection):
    """Regression of a numeric target: MSE or Huber loss on fit-set standardised targets."""

    type: Literal["regression"]
    target_column: str = Field("target", description="cohort column with the numeric target")
    loss: Literal["mse", "huber"] = "mse"
    huber_delta: float = Field(1.0, description="where the Huber loss turns linear, in standard units of the target")
    standardise: bool = Field(True, description="train on targets standardised with each fold's fit patients")
    stratify_bins: int = Field(4, description="folds are stratified on this many quantile bins of the target (1: not stratified)")


class SurvivalTaskConfig(_TaskSection):
    """Survival with right censoring: Cox partial likelihood or a discrete-time (logistic hazard) model."""

    type: Literal["survival"]
    time_column: str = Field("pfs_months", description="cohort column with the follow-up time (>= 0)")
    event_column: str = Field("event", description="cohort column with 1 = event observed, 0 = censored")
    loss: Literal["cox", "discrete"] = "cox"
    n_bins: int = Field(4, description="time bins of the discrete-time model (ignored by cox)")


def _task_type(value: Any) -> str:
    """The ``type`` of a task section (``binary`` when omitted)."""
    if isinstance(value, dict):
        return str(value.get("type", "binary"))
    return str(getattr(value, "type", "binary"))


#: The ``task`` section: one model per task type, chosen by ``type`` (``binary`` when omitted).
TaskConfig = Annotated[
    Annotated[BinaryTaskConfig, Tag("binary")]
    | Annotated[MulticlassTaskConfig, Tag("multiclass")]
    | Annotated[RegressionTaskConfig, Tag("regression")]
    | Annotated[SurvivalTaskConfig, Tag("survival")],
    Discriminator(_task_type),
]


class ValidationConfig(StrictModel):
    """Repeated patient-level cross-validation with an inner validation split for model selection."""

    n_folds: int = Field(5, ge=2)
    n_repeats: int = Field(
        1, ge=1, description="repetitions of the n_folds-fold split, each with its own shuffle; metrics are averaged over repeats"
    )
    val_fraction: float = Field(0.2, gt=0, lt=0.5)
    inner_folds: int = Field(
        3, ge=2, description="inner folds of each outer fold's training patients for nested CV (used only with model.grid)"
    )
    stratify_site: bool = Field(
        False, description="also stratify the outer folds by the cohort table's 'site' column, when it has one"
    )


#: Columns that identify rows or carry the pipeline's own bookkeeping: never a subgroup.
_NOT_SUBGROUPS = frozenset({"patient_id", "slide_id", "slide_path", "mpp", "bag_id", "model", "fold", "repeat", "encoder"})


class ScoringConfig(StrictModel):
    """Metrics and their bootstrap confidence intervals."""

    bootstrap_resamples: int = Field(1000, ge=100)
    ci_level: float = Field(0.95, gt=0.5, lt=1)
    threshold: float = Field(
        0.5, gt=0, lt=1, description="a binary task's decision threshold (accuracy, balanced accuracy, predicted groups)"
    )
    threshold_method: Literal["fixed", "youden", "sensitivity"] = Field(
        "fixed",
        description="fixed: scoring.threshold; youden or sensitivity: chosen per model on the folds' inner validation "
        "predictions (validation_predictions.csv), never on the test predictions; binary tasks only",
    )
    target_sensitivity: float | None = Field(
        None, gt=0, le=1, description="the sensitivity the 'sensitivity' threshold must reach on validation predictions"
    )
    submission: SubmissionConfig | None = Field(
        None, description="the challenge's submission file, written into the run folder by the score stage (none by default)"
    )
    subgroups: list[str] = Field(
        default_factory=list,
        description="cohort-table columns (one value per patient) to break the headline metrics down by; 'site' is used whenever "
        "the cohort table has it",
    )

    time_auc_horizons: list[float] = Field(
        default_factory=list,
        description="times (in the follow-up's unit, e.g. months) at which a survival task's time-dependent AUC is reported",
    )

    @model_validator(mode="after")
    def _sensitivity_target_with_its_method(self) -> ScoringConfig:
        if self.threshold_method == "sensitivity" and self.target_sensitivity is None:
            raise ValueError("scoring.threshold_method: sensitivity needs scoring.target_sensitivity (e.g. 0.9)")
        if self.target_sensitivity is not None and self.threshold_method != "sensitivity":
            raise ValueError(
                "scoring.target_sensitivity is only read with threshold_method: sensitivity; set that, or remove the target"
            )
        return self

    @field_validator("time_auc_horizons")
    @classmethod
    def _positive_horizons(cls, value: list[float]) -> list[float]:
        bad = [v for v in value if not v > 0]
        if bad:
            raise ValueError(f"scoring.time_auc_horizons: {', '.join(map(str, bad))} not > 0; give times after the start of "
                             "follow-up, in its unit (e.g. [12, 24] months)")
        return sorted(set(value))

    @field_validator("subgroups")
    @classmethod
    def _subgroup_columns(cls, value: list[str]) -> list[str]:
        names = [str(name).strip() for name in value]
        if any(not name for name in names):
            raise ValueError("scoring.subgroups holds an empty column name; list the cohort-table columns to break metrics down by")
        reserved = sorted(set(names) & _NOT_SUBGROUPS)
        if reserved:
            raise ValueError(f"scoring.subgroups: {', '.join(reserved)} identif{'ies' if len(reserved) == 1 else 'y'} rows, not "
                             "groups of patients; name columns such as site, sex or stage")
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"scoring.subgroups names {', '.join(repeated)} more than once; list each column once")
        return names


class WorkflowPreset(StrictModel):
    """A challenge's workflow: everything about *what* to compute, nothing about *where*."""

    name: str
    description: str = ""
    modality: str = Field(
        "wsi", description="the image source that reads the cohort's files: 'wsi' (OpenSlide formats) or one a plug-in registers"
    )
    tiling: TilingConfig = TilingConfig()
    features: FeaturesConfig = FeaturesConfig()
    model: ModelConfig = ModelConfig()
    task: TaskConfig = BinaryTaskConfig()
    validation: ValidationConfig = ValidationConfig()
    scoring: ScoringConfig = ScoringConfig()

    @model_validator(mode="after")
    def _aggregators_fit_the_task(self) -> WorkflowPreset:
        needs_classes = [name for name in self.model.aggregators if get_aggregator_spec(name).class_targets]
        if needs_classes and self.task.type not in CLASS_TASKS:
            raise ValueError(
                f"{', '.join(needs_classes)} train(s) an instance clustering loss on class targets; a {self.task.type} "
                f"task has none: remove {', '.join(needs_classes)} from model.aggregators, or use a {' or '.join(CLASS_TASKS)} task"
            )
        return self

    @model_validator(mode="after")
    def _submission_of_a_trained_model(self) -> WorkflowPreset:
        # Checked when the workflow loads: a typo would otherwise surface only after training.
        if self.scoring.submission is not None:
            self.scoring.submission.check(self.model.aggregators, self.task)
        return self

    @model_validator(mode="after")
    def _batch_fits_the_loss(self) -> WorkflowPreset:
        if self.task.type == "survival" and self.task.loss == "cox" and self.model.batch_bags == 1:
            raise ValueError(
                "model.batch_bags is 1 but the survival task's cox loss compares the bags of a step with each other "
                "(one bag gives loss 0); leave batch_bags unset (16) or set it to 8 or more, or use task.loss: discrete"
            )
        return self

    @model_validator(mode="after")
    def _threshold_rule_needs_a_binary_task(self) -> WorkflowPreset:
        if self.scoring.threshold_method != "fixed" and self.task.type != "binary":
            raise ValueError(
                f"scoring.threshold_method: {self.scoring.threshold_method} chooses a binary decision threshold; a "
                f"{self.task.type} task has none: use threshold_method: fixed"
            )
        return self

    @model_validator(mode="after")
    def _one_class_balancing(self) -> WorkflowPreset:
        if self.model.sampling != "balanced":
            return self
        if self.task.type not in CLASS_TASKS:
            raise ValueError(
                f"model.sampling: balanced draws each class equally often; a {self.task.type} task has no classes: "
                "use sampling: shuffle"
            )
        if getattr(self.task, "balanced", False):
            raise ValueError(
                "model.sampling: balanced and task.balanced: true would both correct for class imbalance (rare classes "
                "counted twice): set task.balanced: false to balance by sampling, or sampling: shuffle to weight the loss"
            )
        return self

    def task_settings(self) -> dict[str, Any]:
        """The task's settings: the ``task`` section, with the scoring settings its type takes (a binary task's threshold)."""
        settings = self.task.model_dump()
        accepted = accepted_settings(settings["type"])
        settings.update({key: value for key, value in self.scoring.model_dump().items() if key in accepted})
        return settings
