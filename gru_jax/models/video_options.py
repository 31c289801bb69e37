"""The options of :class:`gru_jax.models.VideoPredictor`: their allowed values and the
checks of their combinations (each bad value or combination is one clear error)."""

from __future__ import annotations

from math import inf

from gru_jax.models.video_ops import MATCHING_TEMPERATURE

FORECASTER_INPUTS = ("zeros", "prediction")
FORECASTERS = ("separate", "shared")
OUTPUTS = ("pixels", "advection")
ADVECTION_SOURCES = ("previous", "context", "flow", "splat")
MOTION_INPUTS = ("none", "differences", "matching")
ADVECTION_PRIORS = ("none", "matching")


def check_options(
    *,
    patch_size: int,
    hidden_channels: tuple[int, ...],
    head_hidden_channels: int,
    forecaster_input: str,
    forecaster: str,
    output: str,
    advection_kernel_size: int,
    advection_cell_size: int | None,
    advection_motions: int,
    advection_temperature: float,
    layer_temperature: float,
    layer_fade: bool,
    layer_gate: bool,
    layer_split_steps: int,
    layer_split_weight: float,
    advection_source: str,
    advection_prior: str,
    prior_frames: int,
    prior_temperature: float,
    prior_neighbourhood: bool,
    forecaster_motion: bool,
    motion_input: str,
    motion_temperature: float,
    matching_radius: int,
    motion_channels: int,
) -> int:
    """Raises ``ValueError`` naming the first bad option (see ``VideoPredictor``'s
    arguments); returns the advection cell side in pixels."""
    for name, value, allowed in (
        ("forecaster_input", forecaster_input, FORECASTER_INPUTS),
        ("forecaster", forecaster, FORECASTERS),
        ("output", output, OUTPUTS),
        ("advection_source", advection_source, ADVECTION_SOURCES),
        ("advection_prior", advection_prior, ADVECTION_PRIORS),
        ("motion_input", motion_input, MOTION_INPUTS),
    ):
        if value not in allowed:
            raise ValueError(f"unknown {name} {value!r}: expected one of {', '.join(allowed)}")
    if output == "advection" and forecaster == "shared":
        raise ValueError("output='advection' needs forecaster='separate'")
    if advection_prior == "matching" and (
        output != "advection" or advection_kernel_size != 2 * matching_radius + 1
    ):
        raise ValueError(
            "advection_prior='matching' needs output='advection' and "
            "advection_kernel_size == 2 * matching_radius + 1, got "
            f"output={output!r}, {advection_kernel_size}, {matching_radius}"
        )
    if not (isinstance(prior_frames, int) and prior_frames >= 1):
        raise ValueError(f"prior_frames must be an int >= 1, got {prior_frames!r}")
    if not (isinstance(prior_temperature, (int, float)) and 0 < prior_temperature < inf):
        raise ValueError(
            f"prior_temperature must be a finite number > 0, got {prior_temperature!r}"
        )
    if prior_frames > 1 and not (advection_source == "splat" and advection_prior == "matching"):
        # The other forms match the two frames before each predicted one, its own included.
        raise ValueError(
            f"prior_frames={prior_frames} needs advection_source='splat' and "
            f"advection_prior='matching', got {advection_source!r}, {advection_prior!r}"
        )
    if advection_prior != "matching" and (
        prior_temperature != MATCHING_TEMPERATURE or not prior_neighbourhood
    ):
        raise ValueError(
            f"prior_temperature={prior_temperature} and prior_neighbourhood="
            f"{prior_neighbourhood} set the matching prior: need advection_prior='matching', "
            f"got {advection_prior!r}"
        )
    if advection_motions < 0 or (
        advection_motions
        and (output != "advection" or (advection_prior != "none" and advection_source != "splat"))
    ):
        raise ValueError(
            "advection_motions must be >= 0 and, when > 0, needs output='advection' and "
            "advection_prior='none' (or advection_source='splat'), got "
            f"{advection_motions}, {output!r}, {advection_prior!r}"
        )
    if not (isinstance(advection_temperature, (int, float)) and 0 < advection_temperature < inf):
        raise ValueError(
            f"advection_temperature must be a finite number > 0, got {advection_temperature!r}"
        )
    if advection_temperature != 1 and (
        output != "advection" or advection_source not in ("previous", "context")
    ):
        # 'flow' and 'splat' read each kernel as its mean offset: a temperature would
        # change the motion itself, not how sharply a frame is moved.
        raise ValueError(
            f"advection_temperature={advection_temperature} needs output='advection' and "
            f"advection_source 'previous' or 'context', got {output!r}, {advection_source!r}"
        )
    if not (isinstance(layer_temperature, (int, float)) and 0 < layer_temperature < inf):
        raise ValueError(
            f"layer_temperature must be a finite number > 0, got {layer_temperature!r}"
        )
    if layer_temperature != 1 and not (advection_source == "splat" and advection_motions):
        raise ValueError(
            f"layer_temperature={layer_temperature} needs the layered form "
            "(advection_source='splat' and advection_motions > 0), got "
            f"{advection_source!r}, {advection_motions}"
        )
    if layer_fade and not (advection_source == "splat" and advection_motions):
        raise ValueError(
            "layer_fade=True needs the layered form (advection_source='splat' and "
            f"advection_motions > 0), got {advection_source!r}, {advection_motions}"
        )
    if layer_gate and not (
        advection_source == "splat" and advection_motions and advection_prior == "matching"
    ):
        raise ValueError(
            "layer_gate=True needs the layered form with a prior (advection_source='splat', "
            f"advection_motions > 0, advection_prior='matching'), got {advection_source!r}, "
            f"{advection_motions}, {advection_prior!r}"
        )
    if isinstance(layer_split_steps, bool) or not (
        isinstance(layer_split_steps, int) and layer_split_steps >= 0
    ):
        raise ValueError(f"layer_split_steps must be an int >= 0, got {layer_split_steps!r}")
    if not (isinstance(layer_split_weight, (int, float)) and 0 < layer_split_weight < inf):
        raise ValueError(
            f"layer_split_weight must be a finite number > 0, got {layer_split_weight!r}"
        )
    if layer_split_weight != 1 and not layer_split_steps:
        raise ValueError(
            f"layer_split_weight={layer_split_weight} weighs the split's sorting rounds: "
            "needs layer_split_steps > 0"
        )
    if layer_split_steps and not (
        advection_source == "splat" and advection_motions and advection_prior == "matching"
    ):
        raise ValueError(
            f"layer_split_steps={layer_split_steps} needs the layered form with a prior "
            f"(advection_source='splat', advection_motions > 0, advection_prior='matching'), "
            f"got {advection_source!r}, {advection_motions}, {advection_prior!r}"
        )
    if advection_source == "flow" and (output != "advection" or advection_motions):
        raise ValueError(
            "advection_source='flow' needs output='advection' and advection_motions=0, got "
            f"{output!r}, {advection_motions}"
        )
    if advection_source == "splat" and (output != "advection" or forecaster_motion):
        raise ValueError(
            "advection_source='splat' needs output='advection' and forecaster_motion=False, "
            f"got {output!r}, {forecaster_motion}"
        )
    if forecaster_motion and (
        motion_input != "matching" or output != "advection" or forecaster_input != "prediction"
    ):
        raise ValueError(
            "forecaster_motion=True needs motion_input='matching', output='advection' and "
            f"forecaster_input='prediction', got {motion_input!r}, {output!r}, "
            f"{forecaster_input!r}"
        )
    if not (isinstance(motion_temperature, (int, float)) and 0 < motion_temperature < inf):
        raise ValueError(
            f"motion_temperature must be a finite number > 0, got {motion_temperature!r}"
        )
    if motion_temperature != MATCHING_TEMPERATURE and motion_input != "matching":
        raise ValueError(
            f"motion_temperature={motion_temperature} needs motion_input='matching', "
            f"got {motion_input!r}"
        )
    if motion_input != "none" and forecaster == "shared":
        raise ValueError(f"motion_input={motion_input!r} needs forecaster='separate'")
    if matching_radius < 1 or motion_channels < 1:
        raise ValueError(
            f"matching_radius and motion_channels must be >= 1, got {matching_radius}, "
            f"{motion_channels}"
        )
    cell = patch_size if advection_cell_size is None else advection_cell_size
    if cell < 1 or (patch_size % cell and cell % patch_size):
        raise ValueError(
            f"advection_cell_size must divide or be a multiple of patch_size {patch_size}, "
            f"got {cell}"
        )
    if advection_kernel_size < 1 or advection_kernel_size % 2 == 0:
        raise ValueError(
            f"advection_kernel_size must be a positive odd int, got {advection_kernel_size}"
        )
    if head_hidden_channels < 0:
        raise ValueError(f"head_hidden_channels must be >= 0, got {head_hidden_channels}")
    if patch_size < 1 or not hidden_channels:
        raise ValueError(
            f"need patch_size >= 1 and at least one layer; got {patch_size}, {hidden_channels}"
        )
    return cell
